// The CUDA backend end to end (issue 12), where this machine has a usable GPU: the checks of bench/gpu/check.sh
// (bench/gpu/checks.ts, check-rows.ts) under vitest. Teacher-forced top-5 logprobs of generated checkpoints against
// the CPU backend and against transformers (where python3 has torch and transformers), 32 concurrent greedy
// requests against the same one at a time, a 32K-token prompt served. Without a usable CUDA backend every test
// here is skipped, with the addon's reason in the title: never failed, never run on something else instead.
import { describe, expect, it } from 'vitest';
import { checkBatchInvariance, checkLongPrompt, compareBackends, compareWithTransformers, type ShapeRun } from '../../bench/gpu/check-rows.ts';
import { cudaStatus, parseBackend, SHAPES, shapeByName, type CudaStatus } from '../../bench/gpu/checks.ts';
import type { Addon } from '../../src/native/addon-types.ts';
import { loadAddon } from '../../src/native/load-addon.ts';
import { testModel } from '../helpers/model-fixtures.ts';

// A missing addon fails the native tests; here it only means that there is no CUDA backend to test.
let addon: Addon | null = null;
let cuda: CudaStatus;
try {
  addon = loadAddon();
  cuda = cudaStatus(addon);
} catch (e) {
  cuda = { compiled: false, available: false, detail: `no addon: ${(e as Error).message}` };
}
const CUDA = parseBackend('cuda');
const CPU = parseBackend('cpu');
const SLOW_MS = 15 * 60_000;
const runs: ShapeRun[] = [];

describe.skipIf(!cuda.available)(`CUDA backend end to end${cuda.available ? ` on ${cuda.detail}` : ` (skipped: ${cuda.detail})`}`, () => {
  describe.each(SHAPES)('teacher-forced top-5 logprobs, $name ($what)', (shape) => {
    it('agree with the CPU backend: top-1 on ≥ 99% of positions, every shared logprob within 0.05 nats', async () => {
      const { row, run } = await compareBackends(addon!, CUDA, CPU, shape, await testModel(shape.opts), 200);
      runs.push(run);
      expect(row.status, `${row.check}: ${row.figure}`).toBe('pass');
    }, SLOW_MS);
  });

  it('agree with transformers on the same weights (skipped where python3 lacks torch or transformers)', async (ctx) => {
    const rows = await compareWithTransformers(runs, process.env.MOESERVE_PYTHON || 'python3');
    if (rows.length === 1 && rows[0]!.status === 'skip') ctx.skip(`transformers comparison ${rows[0]!.figure}`);
    for (const row of rows) expect(row.status, `${row.check}: ${row.figure}`).toBe('pass');
  }, SLOW_MS);

  it('32 concurrent greedy requests give the tokens they give one at a time', async () => {
    const shape = shapeByName('slice');
    const { row } = await checkBatchInvariance(addon!, CUDA, shape, await testModel(shape.opts), 32);
    expect(row.status, `${row.check}: ${row.figure}`).toBe('pass');
  }, SLOW_MS);

  it('serves a 32K-token prompt through the engine (chunked prefill, paged KV), then greedy tokens', async () => {
    const shape = shapeByName('slice');
    const { row } = await checkLongPrompt(addon!, CUDA, shape, await testModel(shape.opts), 32768);
    expect(row.status, `${row.check}: ${row.figure}`).toBe('pass');
  }, SLOW_MS);
});
