// The bf16 arithmetic (the server's default, --dtype bfloat16: matmul activations rounded to bf16, bf16 KV cache,
// q rounded to bf16 for the scores) against llama.cpp running the same bf16 weights its own bf16 way (a BF16 GGUF,
// norms and router F32; BF16 KV cache with flash attention, which rounds q to bf16 for its dot with K).
//
// The exact mode is held to 0.02 nats against llama.cpp's F32 GGUF (llama-parity.test.ts). Two bf16 computations
// cannot be held to that on these generated models: their logits have a std of 10, and where a value sits near
// a bf16 rounding boundary, f32-level differences upstream (summation order) round it the other way, so that two
// engines rounding at the same places still differ by a few 1e-2 nats at some positions (measured on 150-token
// prompts: mean |Δ| 3e-3 to 1.4e-2, max 0.06 to 0.15; exact against the same reference: mean 2.4e-2 to 5e-2).
// So this checks what the mode claims: llama.cpp's bf16 results, closer than the exact mode gets to them.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LlamaModel } from 'node-llama-cpp';
import { convertToGguf } from '../../src/gguf/convert.ts';
import { loadModelConfig, type ModelConfig } from '../../src/model/config.ts';
import { makeModel, type MakeModelOptions } from '../../src/model/make-model.ts';
import { loadAddon } from '../../src/native/load-addon.ts';
import { llamaTeacherForced, loadReferenceModel, type TopLogprob } from '../helpers/llama-reference.ts';
import { promptTops, randomTokens, runStep, type PositionTop } from '../helpers/native-steps.ts';

const TOP = 5;
const BLOCK = 16;
const MEAN_TOLERANCE = 0.02;
const TOP1_AGREEMENT = 0.98;

const simd = loadAddon().backends().find((b) => b.name === 'cpu')?.simd;
const SHAPES: { name: string; opts: MakeModelOptions }[] = [
  {
    name: 'head_dim 24, GQA 4/2, top-2 of 8, one dense layer',
    opts: { layers: 3, hidden: 64, heads: 4, kvHeads: 2, headDim: 24, experts: 8, topK: 2, mlpOnlyLayers: [1], dtype: 'bf16', seed: 11 },
  },
  {
    name: 'coded at load: every matrix 256 wide',
    opts: { layers: 2, hidden: 256, heads: 8, kvHeads: 2, headDim: 32, experts: 8, topK: 2, moeIntermediate: 256, dtype: 'bf16', seed: 15 },
  },
  {
    name: 'yarn rope scaling ×4',
    opts: {
      layers: 2, hidden: 64, heads: 4, kvHeads: 2, headDim: 32, experts: 8, topK: 2, seed: 14, ropeTheta: 10000, dtype: 'bf16',
      ropeScaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 64 },
    },
  },
];

interface Agreement {
  mean: number;
  max: number;
  top1: number;
}

function agreement(ours: PositionTop[], ref: TopLogprob[][]): Agreement {
  expect(ours.length).toBe(ref.length);
  let sum = 0, n = 0, max = 0, same = 0;
  ours.forEach((o, i) => {
    const r = ref[i]!;
    if (o.ids[0] === r[0]!.token || r[0]!.logprob - r[1]!.logprob < 1e-3) same++;
    for (const t of r) {
      const k = o.ids.indexOf(t.token);
      if (k < 0) continue;
      const d = Math.abs(o.logprobs[k]! - t.logprob);
      sum += d;
      n++;
      max = Math.max(max, d);
    }
  });
  return { mean: sum / n, max, top1: same / ours.length };
}

// The bf16 mode is the avx512bf16 kernels' (elsewhere the arithmetic stays f32 whatever --dtype says).
describe.runIf(simd === 'avx512bf16').each(SHAPES)('bf16 arithmetic against llama.cpp\'s: $name', ({ opts }) => {
  let dir: string;
  let cfg: ModelConfig;
  let ref: LlamaModel;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moeserve-parity-bf16-'));
    await makeModel(dir, opts);
    await convertToGguf(dir, path.join(dir, 'model.gguf'), { weightType: 'bf16' });
    cfg = loadModelConfig(dir);
    ref = await loadReferenceModel(path.join(dir, 'model.gguf'));
  });

  afterAll(async () => {
    await ref?.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('one prompt: within 0.02 nats on average, top-1 the same at 98% of positions, closer than the exact mode', async () => {
    const tokens = randomTokens(150, 1);
    const blocks = [9, 3, 40, 0, 17, 22, 5, 31, 12, 60];
    const want = await llamaTeacherForced(ref, tokens, TOP, { kvCache: 'BF16' });
    const run = async (precision: 'bf16' | 'f32') => {
      const model = await loadAddon().loadModel({
        files: cfg.files, config: cfg.native, threads: 2, kvBlocks: 64, blockSize: BLOCK, activations: precision, kvCacheDtype: precision,
      });
      try {
        const { batch, res } = await runStep(model, [{ tokens, start: 0, blocks, promptLogprobs: TOP }]);
        return agreement(promptTops(batch, res, 0), want.top);
      } finally {
        model.close();
      }
    };
    const bf16 = await run('bf16');
    const exact = await run('f32');
    const show = (a: Agreement) => `mean |Δ| ${a.mean.toExponential(2)}, max ${a.max.toExponential(2)}, top-1 ${(100 * a.top1).toFixed(1)}%`;
    console.log(`parity bf16 ${JSON.stringify(opts)}: bf16 mode ${show(bf16)}; exact mode ${show(exact)}`);
    expect(bf16.mean).toBeLessThanOrEqual(MEAN_TOLERANCE);
    expect(bf16.top1).toBeGreaterThanOrEqual(TOP1_AGREEMENT);
    expect(bf16.mean).toBeLessThan(exact.mean);
  });
});
