// The addon's step() on a generated model: every SIMD kernel set agrees with the portable one, sampling follows
// the distribution it reports, and malformed batches are refused without harming the model.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModelConfig, type ModelConfig } from '../../src/model/config.ts';
import { makeModel } from '../../src/model/make-model.ts';
import type { NativeModel } from '../../src/native/addon-types.ts';
import { loadAddon } from '../../src/native/load-addon.ts';
import { buildBatch, promptTops, randomTokens, runStep } from '../helpers/native-steps.ts';

let dir: string;
let cfg: ModelConfig;

// kvCacheDtype: the kernel-set comparison keeps K and V in f32, so that it sees the kernels' summation order alone:
// in bf16 a k or v that two sets sum one f32 ulp apart can round one bf16 ulp apart (2^-8 to 2^-7 relative).
async function load(simd?: string, kvCacheDtype?: 'bf16' | 'f32'): Promise<NativeModel> {
  const prev = process.env.MOESERVE_SIMD;
  if (simd) process.env.MOESERVE_SIMD = simd;
  try {
    return await loadAddon().loadModel({ files: cfg.files, config: cfg.native, threads: 2, kvBlocks: 32, blockSize: 16, kvCacheDtype });
  } finally {
    if (prev === undefined) delete process.env.MOESERVE_SIMD;
    else process.env.MOESERVE_SIMD = prev;
  }
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moeserve-step-'));
  // Odd widths (72, 20, 44) exercise every SIMD tail path, and row counts that are not multiples of 8 (k and v
  // 20, experts 44) the GEMM's row tails; bf16 weights the widening and the GEMM paths.
  await makeModel(dir, { layers: 2, hidden: 72, heads: 4, kvHeads: 1, headDim: 20, experts: 8, topK: 3, moeIntermediate: 44, vocab: 151936, seed: 5 });
  cfg = loadModelConfig(dir);
});

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('kernel sets', () => {
  const levels = (loadAddon().backends().find((b) => b.name === 'cpu')?.simd ?? 'scalar');
  const sets = ['scalar', 'avx2', 'avx512', 'avx512bf16'].filter(
    (s) => s === 'scalar' || (s === 'avx2' ? levels !== 'scalar' : s === 'avx512' ? levels.startsWith('avx512') : levels === s),
  );

  it.each(sets)('%s matches the scalar reference on prefill (T >= 4) and decode (T = 1)', async (simd) => {
    const tokens = randomTokens(40, 9);
    const results = [];
    for (const s of ['scalar', simd]) {
      const m = await load(s, 'f32');
      const pre = await runStep(m, [{ tokens: tokens.slice(0, 39), start: 0, blocks: [3, 1, 7], promptLogprobs: 5 }]);
      const dec = await runStep(m, [{ tokens: tokens.slice(39), start: 39, blocks: [3, 1, 7], promptLogprobs: 5 }]);
      results.push([...promptTops(pre.batch, pre.res, 0), ...promptTops(dec.batch, dec.res, 0)]);
      m.close();
    }
    const [ref, got] = results;
    // avx512bf16 carries activations as bf16 hi + lo (about 2^-17 relative, not f32's 2^-24) into its GEMM.
    const tolerance = simd === 'avx512bf16' ? 5e-4 : 1e-4;
    let differs = false;
    got!.forEach((p, i) => {
      expect(p.ids[0]).toBe(ref![i]!.ids[0]);
      p.logprobs.forEach((lp, j) => {
        if (p.ids[j] !== ref![i]!.ids[j]) return;
        expect(Math.abs(lp - ref![i]!.logprobs[j]!)).toBeLessThan(tolerance);
        differs ||= lp !== ref![i]!.logprobs[j];
      });
    });
    // Another summation order shows in the last bits: proof that MOESERVE_SIMD really switched the kernels.
    expect(differs).toBe(simd !== 'scalar');
  });
});

describe('sampling and errors', () => {
  let model: NativeModel;
  beforeAll(async () => {
    model = await load();
  });
  afterAll(() => model.close());

  it('draws follow the distribution: evenly spaced uniforms reproduce the top probabilities', async () => {
    const prompt = randomTokens(8, 21);
    const base = { tokens: prompt, start: 0, blocks: [0], sample: true, temperature: 1, numLogprobs: 20 };
    const first = await runStep(model, [{ ...base, uniform: 0.5 }]);
    const top = Array.from(first.res.topIds);
    const probs = Array.from(first.res.topLogprobs, Math.exp);
    const N = 200;
    const counts = new Map<number, number>();
    for (let i = 0; i < N; i++) {
      const { res } = await runStep(model, [{ ...base, uniform: (i + 0.5) / N }]);
      counts.set(res.tokens[0]!, (counts.get(res.tokens[0]!) ?? 0) + 1);
    }
    top.slice(0, 3).forEach((tok, i) => expect(Math.abs((counts.get(tok) ?? 0) / N - probs[i]!)).toBeLessThanOrEqual(1.5 / N));
    // The same uniform gives the same token; top-k 1 and a tiny top-p collapse to the argmax.
    const again = await runStep(model, [{ ...base, uniform: 0.5 }]);
    expect(again.res.tokens[0]).toBe(first.res.tokens[0]);
    for (const extra of [{ topK: 1, uniform: 0.99 }, { topP: 1e-6, uniform: 0.99 }]) {
      const { res } = await runStep(model, [{ ...base, ...extra }]);
      expect(res.tokens[0]).toBe(top[0]);
    }
    expect(first.res.logprobs[0]).toBeCloseTo(probs.length ? Math.log(probs[top.indexOf(first.res.tokens[0]!)]!) : 0, 4);
  });

  it('top_p draws only from the nucleus, in proportion to the renormalised probabilities', async () => {
    const base = { tokens: randomTokens(8, 23), start: 0, blocks: [4], sample: true, temperature: 1, numLogprobs: 20, topP: 0.8 };
    const first = await runStep(model, [{ ...base, uniform: 0.5 }]);
    const probs = Array.from(first.res.topLogprobs, Math.exp);
    let mass = 0;
    let k = 0;
    while (k < probs.length && mass < 0.8 - 1e-6) mass += probs[k++]!;
    expect(mass, 'nucleus within the reported top-20').toBeGreaterThanOrEqual(0.8 - 1e-6);
    const nucleus = Array.from(first.res.topIds).slice(0, k);
    const N = 200;
    const counts = new Map<number, number>();
    for (let i = 0; i < N; i++) {
      const { res } = await runStep(model, [{ ...base, uniform: (i + 0.5) / N }]);
      counts.set(res.tokens[0]!, (counts.get(res.tokens[0]!) ?? 0) + 1);
    }
    for (const tok of counts.keys()) expect(nucleus).toContain(tok);
    nucleus.forEach((tok, i) => expect(Math.abs((counts.get(tok) ?? 0) / N - probs[i]! / mass)).toBeLessThanOrEqual(1.5 / N));
  });

  it('logits processing: logit_bias, allowed mask, penalties and min_p shape the draw, logprobs stay raw', async () => {
    const prompt = randomTokens(6, 31);
    const base = buildBatch([{ tokens: prompt, start: 0, blocks: [2], sample: true, numLogprobs: 5 }]);
    const plain = await model.step(base);
    const [best, second] = [plain.topIds[0]!, plain.topIds[1]!];
    const raw = new Map(Array.from(plain.topIds, (id, i) => [id, plain.topLogprobs[i]!]));
    const words = Math.ceil(cfg.native.vocabSize / 32);
    const one = (v: number) => Int32Array.from([0, v]);
    const cases: [string, Partial<typeof base>, (tok: number) => void][] = [
      ['logit_bias', { biasStart: one(1), biasIds: Int32Array.from([77]), biasValues: Float32Array.from([1000]) }, (t) => expect(t).toBe(77)],
      ['mask', (() => {
        const mask = new Uint32Array(words);
        for (const id of [second, 4242]) mask[id >> 5]! |= 1 << (id & 31);
        return { allowedMask: mask, hasMask: Uint8Array.from([1]) };
      })(), (t) => expect(t).toBe(second)],
      ['presence', { presencePenalty: Float32Array.from([1000]), outputTokenStart: one(1), outputTokenIds: Int32Array.from([best]), outputTokenCounts: Int32Array.from([1]) }, (t) => expect(t).toBe(second)],
      ['frequency', { frequencyPenalty: Float32Array.from([400]), outputTokenStart: one(1), outputTokenIds: Int32Array.from([best]), outputTokenCounts: Int32Array.from([3]) }, (t) => expect(t).toBe(second)],
      ['repetition', { repetitionPenalty: Float32Array.from([1e9]), promptTokenStart: one(1), promptTokenIds: Int32Array.from([best]) }, (t) => expect(t).not.toBe(best)],
      ['min_p 1 at temperature 1', { minP: Float32Array.from([1]), temperature: Float32Array.from([1]), uniform: Float32Array.from([0.999]) }, (t) => expect(t).toBe(best)],
    ];
    for (const [name, extra, check] of cases) {
      const res = await model.step({ ...base, ...extra });
      check(res.tokens[0]!);
      // The reported logprob is the raw model's, not the processed one.
      if (raw.has(res.tokens[0]!)) expect(res.logprobs[0], name).toBeCloseTo(raw.get(res.tokens[0]!)!, 5);
      expect(Array.from(res.topIds), name).toEqual(Array.from(plain.topIds));
    }
    await expect(model.step({ ...base, biasStart: Int32Array.from([0, 2]), biasIds: Int32Array.from([1]), biasValues: Float32Array.from([1]) })).rejects.toThrow('bias offsets');
    await expect(model.step({ ...base, allowedMask: new Uint32Array(3), hasMask: Uint8Array.from([1]) })).rejects.toThrow('allowedMask');
  });

  it('refuses malformed batches with a clear message and keeps working', async () => {
    const good = { tokens: [1, 2, 3], start: 0, blocks: [0], sample: true };
    const cases: [string, ReturnType<typeof buildBatch>][] = [
      ['outside the vocabulary', buildBatch([{ ...good, tokens: [1, 999999, 3] }])],
      ['outside the KV pool', buildBatch([{ ...good, blocks: [32] }])],
      ['does not cover its positions', buildBatch([{ ...good, start: 20 }])],
      ['consecutive', { ...buildBatch([good]), positions: Int32Array.from([0, 2, 3]) }],
      ['seqStart', { ...buildBatch([good]), seqStart: Int32Array.from([0, 2]) }],
      ['typed array', { ...buildBatch([good]), tokens: [1, 2, 3] as unknown as Int32Array }],
    ];
    for (const [msg, batch] of cases) await expect(model.step(batch)).rejects.toThrow(msg);
    const { res } = await runStep(model, [good]);
    expect(res.tokens[0]).toBeGreaterThanOrEqual(0);
  });

  it('refuses a second step while one is in flight, and steps after close', async () => {
    const batch = buildBatch([{ tokens: [5, 6], start: 0, blocks: [1], sample: true }]);
    const first = model.step(batch);
    await expect(model.step(batch)).rejects.toThrow('already in flight');
    await first;
    const m2 = await load();
    m2.close();
    await expect(m2.step(batch)).rejects.toThrow('closed');
  });
});
