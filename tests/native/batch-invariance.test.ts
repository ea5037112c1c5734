// Batch invariance (issue 11): a token's logits must not depend on what else is in its step. Here: 16 greedy
// requests run at once and one at a time through the engine, and one prompt's logprobs computed in one step,
// in chunks of many sizes, beside other sequences, and on other thread counts, on every kernel set this CPU has:
// all bit for bit the same; on avx512bf16 also in the server's default arithmetic (--dtype bfloat16: bf16
// activations and a bf16 KV cache).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.ts';
import type { SamplingParams } from '../../src/engine/types.ts';
import { loadModelConfig, type ModelConfig } from '../../src/model/config.ts';
import { makeModel } from '../../src/model/make-model.ts';
import type { NativeModel } from '../../src/native/addon-types.ts';
import { loadAddon } from '../../src/native/load-addon.ts';
import { randomTokens, runStep, type SeqSlice } from '../helpers/native-steps.ts';

const BLOCK = 16;
const VOCAB = 4096;

let dir = '';
let cfg: ModelConfig;
const models: NativeModel[] = [];

type Precision = 'f32' | 'bf16';

async function load(simd: string | undefined, kvBlocks: number, codeWeights = true, threads = 2, precision: Precision = 'f32'): Promise<NativeModel> {
  const prev = process.env.MOESERVE_SIMD;
  if (simd) process.env.MOESERVE_SIMD = simd;
  try {
    const m = await loadAddon().loadModel({
      files: cfg.files, config: cfg.native, threads, kvBlocks, blockSize: BLOCK, codeWeights, activations: precision, kvCacheDtype: precision,
    });
    models.push(m);
    return m;
  } finally {
    if (prev === undefined) delete process.env.MOESERVE_SIMD;
    else process.env.MOESERVE_SIMD = prev;
  }
}

const levels = loadAddon().backends().find((b) => b.name === 'cpu')?.simd ?? 'scalar';
const sets = ['scalar', 'avx2', 'avx512', 'avx512bf16'].filter(
  (s) => s === 'scalar' || (s === 'avx2' ? levels !== 'scalar' : s === 'avx512' ? levels.startsWith('avx512') : levels === s),
);

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moeserve-invariance-'));
  // Widths that are multiples of 128 (hidden 256: coded at load on avx512bf16) and not (moe_intermediate 45: odd,
  // uncoded, the SIMD tails and row tails); 16 experts top-4, so an expert's token count in a step ranges over
  // the few-token row dots and the GEMM.
  await makeModel(dir, {
    layers: 2, hidden: 256, heads: 4, kvHeads: 2, headDim: 64, experts: 16, topK: 4, moeIntermediate: 45,
    intermediate: 160, mlpOnlyLayers: [1], vocab: VOCAB, dtype: 'bf16', seed: 33,
  });
  cfg = loadModelConfig(dir);
});

afterAll(() => {
  for (const m of models) m.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** One prompt's target logprobs and top-5 at every position, fed in chunks of the given sizes, each step also
 *  carrying `others` single-token sequences (their own blocks) as a decode batch would. */
async function promptLogprobs(m: NativeModel, prompt: number[], chunks: number[], others: number): Promise<Float32Array> {
  const blocks = Array.from({ length: Math.ceil(prompt.length / BLOCK) }, (_, i) => i);
  const out: number[] = [];
  let at = 0;
  let step = 0;
  for (let c = 0; at < prompt.length; c++, step++) {
    const n = Math.min(chunks[c % chunks.length]!, prompt.length - at);
    const own: SeqSlice = { tokens: prompt.slice(at, at + n), start: at, blocks, promptLogprobs: 5, targets: prompt.slice(at + 1, at + n + 1) };
    const noise: SeqSlice[] = Array.from({ length: others }, (_, i) => ({
      tokens: randomTokens(1 + (i % 3), 7000 + 31 * step + i, VOCAB), start: 0, blocks: [blocks.length + i], sample: true,
    }));
    // The prompt's slice sits among the others (not always first), as the scheduler would place it.
    const seqs = [...noise.slice(0, others >> 1), own, ...noise.slice(others >> 1)];
    const { batch, res } = await runStep(m, seqs);
    const idx = others >> 1;
    for (let t = batch.seqStart[idx]!; t < batch.seqStart[idx + 1]!; t++) {
      if (t - batch.seqStart[idx]! + at + 1 < prompt.length) out.push(res.targetLogprobs[t]!);
      for (let j = 0; j < 5; j++) out.push(res.promptTopIds[t * res.promptTopWidth + j]!, res.promptTopLogprobs[t * res.promptTopWidth + j]!);
    }
    at += n;
  }
  return Float32Array.from(out);
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

// avx512bf16 also with its weights as stored (the server's --no-weight-coding), and with bf16 activations and KV.
const variants = sets.flatMap((s) =>
  s === 'avx512bf16' ? [[s, true, 'f32'], [s, false, 'f32'], [s, true, 'bf16'], [s, false, 'bf16']] : [[s, true, 'f32']],
) as [string, boolean, Precision][];

describe.each(variants)('batch invariance, kernel set %s (weight coding %s, %s arithmetic)', (simd, coding, precision) => {
  it('one prompt: logprobs whatever the chunking and the other sequences in the step', async () => {
    const m = await load(simd, 64, coding, 2, precision);
    // Coded, the model has escapes (weights kept beside the codes, added after the row dots): they too must be
    // added alike by every path.
    if (simd === 'avx512bf16') expect(m.codedWeights.matrices > 0 && m.codedWeights.escapes > 0).toBe(coding);
    const prompt = randomTokens(150, 42, VOCAB);
    const ref = await promptLogprobs(m, prompt, [prompt.length], 0);
    const schedules: [number[], number][] = [[[1], 0], [[2, 3], 1], [[5], 4], [[7, 16, 1], 2], [[33, 4], 9], [[64], 15], [[150], 7]];
    const report: string[] = [];
    let worst = 0;
    for (const [chunks, others] of schedules) {
      const got = await promptLogprobs(m, prompt, chunks, others);
      const d = maxDiff(got, ref);
      worst = Math.max(worst, d);
      report.push(`chunks ${chunks.join('/')} + ${others} others: max |Δ| ${d.toExponential(2)}`);
    }
    console.log(`[${simd} ${precision}] ${report.join('; ')}`);
    expect(worst, report.join('\n')).toBe(0);
  });

  it('the same bits on 1, 2 and 3 threads (row ranges split differently)', async () => {
    const prompt = randomTokens(90, 43, VOCAB);
    const runs = [];
    for (const threads of [2, 1, 3]) runs.push(await promptLogprobs(await load(simd, 64, coding, threads, precision), prompt, [7, 16, 1], 2));
    expect(maxDiff(runs[1]!, runs[0]!)).toBe(0);
    expect(maxDiff(runs[2]!, runs[0]!)).toBe(0);
  });

  it('16 greedy completions at once match the same 16 one at a time, bit for bit', async () => {
    const params = (): SamplingParams => ({ maxTokens: 24, temperature: 0, topP: 1, topK: 0, stopTokenIds: [], ignoreEos: true, logprobs: 1, promptLogprobs: null });
    const prompts = Array.from({ length: 16 }, (_, i) => randomTokens([3, 40, 17, 1, 90, 8, 33, 5, 64, 2, 12, 100, 7, 25, 50, 4][i]!, 300 + i, VOCAB));
    const runAll = async (concurrent: boolean) => {
      const m = await load(simd, 256, coding, 2, precision);
      const engine = createEngine({ model: m, maxModelLen: 512, eosTokenIds: cfg.eosTokenIds, vocabSize: VOCAB, ownsModel: false, maxNumSeqs: 16, maxNumBatchedTokens: 64, enablePrefixCaching: false });
      const one = async (p: number[]) => {
        const toks: number[] = [];
        const lps: number[] = [];
        for await (const e of engine.generate({ promptTokens: p, params: params() })) {
          if (e.type === 'token') {
            toks.push(e.token);
            lps.push(e.logprob!.logprob);
          }
        }
        return { toks, lps };
      };
      const outs = concurrent ? await Promise.all(prompts.map(one)) : [];
      if (!concurrent) for (const p of prompts) outs.push(await one(p));
      await engine.close();
      return outs;
    };
    const alone = await runAll(false);
    const batched = await runAll(true);
    let differing = 0;
    let worst = 0;
    alone.forEach((a, i) => {
      const b = batched[i]!;
      if (a.toks.join() !== b.toks.join()) differing++;
      // Logprobs compared up to the first differing token (after it the contexts differ).
      for (let k = 0; k < a.toks.length; k++) {
        worst = Math.max(worst, Math.abs(a.lps[k]! - b.lps[k]!));
        if (a.toks[k] !== b.toks[k]) break;
      }
    });
    console.log(`[${simd}] 16 greedy completions: ${differing} differ; max |Δ logprob| ${worst.toExponential(2)}`);
    expect(differing).toBe(0);
    expect(worst).toBe(0);
  });
});
