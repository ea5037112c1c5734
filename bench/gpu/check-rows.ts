// Each GPU check as one call that loads what it needs, runs, closes, and returns its table row(s) and figures:
// the command line (gpu-check.ts) and the vitest file (tests/gpu/cuda-engine.test.ts) run the same code.
import { loadModelConfig } from '../../src/model/config.ts';
import type { Addon } from '../../src/native/addon-types.ts';
import type { PositionTop } from '../../tests/helpers/native-steps.ts';
import {
  backendName, batchInvariance, batchInvarianceKvBlocks, checkTokens, compareTops, COMPARISON_LIMIT, describeComparison, hfTeacherForced,
  LONG_PROMPT_GENERATED, longPrompt, longPromptKvBlocks, loadOn, teacherForced, type BackendSpec, type BatchInvariance, type CheckShape, type HfJob,
  type LongPrompt, type Row, type TopComparison,
} from './checks.ts';

const log = (msg: string) => console.log(`[gpu-check ${new Date().toISOString().slice(11, 19)}] ${msg}`);
const short = (e: unknown) => (e instanceof Error ? e.message : String(e)).split('\n')[0]!.slice(0, 160);

export interface ShapeRun {
  shape: CheckShape;
  dir: string;
  tokens: number[];
  /** Per backend label: the top-N at every position; absent when it failed to load or run. */
  tops: Map<string, PositionTop[]>;
  names: Map<string, string>;
  comparison?: TopComparison;
}

/** Teacher-forced top-5 over `positions` tokens on backends a and b; the row compares them. */
export async function compareBackends(addon: Addon, a: BackendSpec, b: BackendSpec, shape: CheckShape, dir: string, positions: number): Promise<{ row: Row; run: ShapeRun }> {
  const cfg = loadModelConfig(dir);
  const tokens = checkTokens(positions);
  const run: ShapeRun = { shape, dir, tokens, tops: new Map(), names: new Map() };
  const check = `logprobs ${shape.name}: ${a.label} vs ${b.label}`;
  try {
    for (const spec of [a, b]) {
      const t0 = performance.now();
      const model = await loadOn(addon, spec, cfg, { kvBlocks: Math.ceil(positions / 16) + 4, maxNumBatchedTokens: Math.max(256, positions) });
      try {
        const loaded = performance.now();
        run.tops.set(spec.label, await teacherForced(model, tokens));
        run.names.set(spec.label, backendName(model, spec));
        log(`${shape.name} on ${backendName(model, spec)}: loaded in ${((loaded - t0) / 1000).toFixed(1)} s, ${positions} positions in ${((performance.now() - loaded) / 1000).toFixed(2)} s`);
      } finally {
        model.close();
      }
    }
  } catch (e) {
    log(`${check}: ${String(e instanceof Error ? e.stack : e)}`);
    return { row: { check, figure: `error: ${short(e)}`, limit: COMPARISON_LIMIT, status: 'FAIL' }, run };
  }
  const c = compareTops(run.tops.get(a.label)!, run.tops.get(b.label)!);
  run.comparison = c;
  log(`${check}: ${describeComparison(c)} over ${c.shared} shared logprobs${c.worstPosition >= 0 ? ` (worst at position ${c.worstPosition})` : ''}`);
  return { row: { check, figure: describeComparison(c), limit: COMPARISON_LIMIT, status: c.pass ? 'pass' : 'FAIL' }, run };
}

/** Every run's backends against transformers on the same weights and tokens; skip rows when it cannot run. */
export async function compareWithTransformers(runs: ShapeRun[], python: string): Promise<Row[]> {
  const jobs: HfJob[] = runs.map((r) => ({ name: r.shape.name, dir: r.dir, tokens: r.tokens }));
  const t0 = performance.now();
  const hf = await hfTeacherForced(jobs, python);
  if (!hf.ok) {
    log(`transformers comparison skipped: ${hf.skip}`);
    return [{ check: 'logprobs vs transformers', figure: `not run: ${hf.skip}`, limit: COMPARISON_LIMIT, status: 'skip' }];
  }
  log(`transformers (${hf.info}): ${jobs.length} checkpoints in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  const rows: Row[] = [];
  for (const r of runs) {
    const ref = hf.tops.get(r.shape.name);
    for (const [label, tops] of r.tops) {
      const check = `logprobs ${r.shape.name}: ${label} vs transformers`;
      if (!ref) {
        rows.push({ check, figure: `transformers failed: ${hf.errors.get(r.shape.name) ?? '?'}`.slice(0, 160), limit: COMPARISON_LIMIT, status: 'FAIL' });
        continue;
      }
      const c = compareTops(tops, ref);
      log(`${check}: ${describeComparison(c)} over ${c.shared} shared logprobs${c.worstPosition >= 0 ? ` (worst at position ${c.worstPosition})` : ''}`);
      rows.push({ check, figure: describeComparison(c), limit: COMPARISON_LIMIT, status: c.pass ? 'pass' : 'FAIL' });
    }
  }
  return rows;
}

/** `requests` concurrent greedy requests against the same one at a time, through the engine on `spec`. */
export async function checkBatchInvariance(addon: Addon, spec: BackendSpec, shape: CheckShape, dir: string, requests: number, maxTokens = 16): Promise<{ row: Row; result?: BatchInvariance }> {
  const check = `${requests} concurrent = one at a time (${spec.label}, ${shape.name})`;
  const limit = 'same greedy tokens';
  try {
    const cfg = loadModelConfig(dir);
    const model = await loadOn(addon, spec, cfg, { kvBlocks: batchInvarianceKvBlocks(requests, maxTokens), maxNumBatchedTokens: 256 });
    try {
      const r = await batchInvariance(model, cfg, requests, maxTokens);
      const figure = `${r.differing}/${r.requests} differ, max Δ logprob ${r.maxLogprobDiff.toExponential(1)}`;
      log(`${check}: ${figure}; one at a time ${(r.aloneMs / 1000).toFixed(1)} s, together ${(r.concurrentMs / 1000).toFixed(1)} s`);
      return { row: { check, figure, limit, status: r.pass ? 'pass' : 'FAIL' }, result: r };
    } finally {
      model.close();
    }
  } catch (e) {
    log(`${check}: ${String(e instanceof Error ? e.stack : e)}`);
    return { row: { check, figure: `error: ${short(e)}`, limit, status: 'FAIL' } };
  }
}

/** A `tokens`-token prompt served through the engine on `spec`. */
export async function checkLongPrompt(addon: Addon, spec: BackendSpec, shape: CheckShape, dir: string, tokens: number): Promise<{ row: Row; result?: LongPrompt }> {
  const check = `${Math.round(tokens / 1024)}K-token prompt served (${spec.label}, ${shape.name})`;
  const limit = `${LONG_PROMPT_GENERATED} greedy tokens after it`;
  try {
    const cfg = loadModelConfig(dir);
    const model = await loadOn(addon, spec, cfg, { kvBlocks: longPromptKvBlocks(tokens), maxNumBatchedTokens: 2048 });
    try {
      const r = await longPrompt(model, cfg, tokens);
      const figure = `prefill ${(r.prefillMs / 1000).toFixed(1)} s (${Math.round((tokens * 1000) / r.prefillMs)} tok/s), ` +
        `${r.generated.length} tokens, ${r.decodeMsPerToken.toFixed(0)} ms each`;
      log(`${check}: ${figure}; finish ${r.finishReason}; greedy = top-1: ${r.consistent}`);
      return { row: { check, figure: r.pass ? figure : `${figure}; finish ${r.finishReason}, greedy = top-1 ${r.consistent}`, limit, status: r.pass ? 'pass' : 'FAIL' }, result: r };
    } finally {
      model.close();
    }
  } catch (e) {
    log(`${check}: ${String(e instanceof Error ? e.stack : e)}`);
    return { row: { check, figure: `error: ${short(e)}`, limit, status: 'FAIL' } };
  }
}
