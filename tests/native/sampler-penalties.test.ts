// The penalties as the native sampler applies them (native/core/sampler.cpp apply_processing, vLLM semantics),
// checked for exact values through the addon: repetition divides a positive logit by p and multiplies a
// negative one by p, once per distinct token of prompt ∪ output; then frequency subtracts f × count and presence
// subtracts pr once, for generated tokens only.
//
// Logprobs stay raw, so the processed logits are read off the draw instead: with only tokens lo < hi allowed (a
// mask) at temperature T, the sampler returns lo exactly when u < sigmoid((l'_lo − l'_hi) / T), so bisecting u
// for the switch gives the processed gap l'_lo − l'_hi. The raw gap is the difference of the raw logprobs, and
// logit_bias (added before the penalties) puts both logits on a chosen side of 0.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModelConfig } from '../../src/model/config.ts';
import type { NativeModel, StepBatch } from '../../src/native/addon-types.ts';
import { loadAddon } from '../../src/native/load-addon.ts';
import { testModel } from '../helpers/model-fixtures.ts';
import { buildBatch, randomTokens } from '../helpers/native-steps.ts';

const OPTS = { layers: 1, hidden: 64, heads: 2, kvHeads: 1, headDim: 32, experts: 4, topK: 2, moeIntermediate: 32, seed: 3 };
const T = 2;
/** Moves both logits far from 0 (raw logits of the test model are a few units): the sign is then the bias's. */
const SHIFT = 100;

let model: NativeModel;
let base: StepBatch;
let mask: Uint32Array;
let lo = -1;
let hi = -1;
/** Raw l_lo − l_hi. */
let rawGap = 0;

const i32 = (...v: number[]) => Int32Array.from(v);
const f32 = (...v: number[]) => Float32Array.from(v);
const bias = (value: number): Partial<StepBatch> => ({ biasStart: i32(0, 2), biasIds: i32(lo, hi), biasValues: f32(value, value) });
const prompt = (...ids: number[]): Partial<StepBatch> => ({ promptTokenStart: i32(0, ids.length), promptTokenIds: i32(...ids) });
const outputs = (counts: [number, number][]): Partial<StepBatch> => ({
  outputTokenStart: i32(0, counts.length),
  outputTokenIds: i32(...counts.map(([id]) => id)),
  outputTokenCounts: i32(...counts.map(([, n]) => n)),
});

/** l'_lo − l'_hi after the processing in `extra`: the uniform at which the draw switches from lo to hi. */
async function processedGap(...extra: Partial<StepBatch>[]): Promise<number> {
  let below = 0; // draws lo
  let above = 1; // draws hi
  for (;;) {
    const mid = Math.fround((below + above) / 2);
    if (mid <= below || mid >= above) break;
    const r = await model.step(Object.assign({}, base, ...extra, { uniform: f32(mid) }));
    const tok = r.tokens[0]!;
    expect([lo, hi], `u = ${mid}`).toContain(tok);
    if (tok === lo) below = mid;
    else above = mid;
  }
  const u = (below + above) / 2;
  return T * Math.log(u / (1 - u));
}

beforeAll(async () => {
  const cfg = loadModelConfig(await testModel(OPTS));
  model = await loadAddon().loadModel({ files: cfg.files, config: cfg.native, threads: 2, kvBlocks: 4, blockSize: 16 });
  const plain = buildBatch([{ tokens: randomTokens(6, 41, cfg.native.vocabSize), start: 0, blocks: [0], sample: true, numLogprobs: 20 }]);
  const res = await model.step(plain);
  const top = Array.from(res.topIds, (id, k) => ({ id, lp: res.topLogprobs[k]! }));
  // Two of the top tokens whose raw gap is clearly nonzero but small enough to bisect precisely even when doubled.
  search: for (let a = 0; a < top.length; a++) {
    for (let b = a + 1; b < top.length; b++) {
      if (Math.abs(top[a]!.lp - top[b]!.lp) < 0.5 || Math.abs(top[a]!.lp - top[b]!.lp) > 1.5) continue;
      const [x, y] = top[a]!.id < top[b]!.id ? [top[a]!, top[b]!] : [top[b]!, top[a]!];
      [lo, hi, rawGap] = [x.id, y.id, x.lp - y.lp];
      break search;
    }
  }
  expect(lo, 'a pair of top tokens with a raw gap in [0.5, 1.5]').toBeGreaterThanOrEqual(0);
  mask = new Uint32Array(Math.ceil(cfg.native.vocabSize / 32));
  for (const id of [lo, hi]) mask[id >> 5]! |= 1 << (id & 31);
  base = { ...plain, numLogprobs: i32(-1), temperature: f32(T), allowedMask: mask, hasMask: Uint8Array.from([1]) };
});

afterAll(() => model?.close());

describe('native sampler penalties, exact values', () => {
  it('the measurement itself: with no penalty the processed gap is the raw gap, whatever the bias', async () => {
    expect(await processedGap()).toBeCloseTo(rawGap, 3);
    expect(await processedGap(bias(SHIFT))).toBeCloseTo(rawGap, 3);
    expect(await processedGap(bias(-SHIFT))).toBeCloseTo(rawGap, 3);
  });

  it('repetition divides positive logits by p (l/p) and multiplies negative ones by p (l·p)', async () => {
    const rep = (p: number): Partial<StepBatch> => ({ repetitionPenalty: f32(p) });
    // (l_lo + 100)/p − (l_hi + 100)/p = raw gap / p; (l − 100)·p likewise gives raw gap · p.
    expect(await processedGap(bias(SHIFT), rep(2), prompt(lo, hi))).toBeCloseTo(rawGap / 2, 3);
    expect(await processedGap(bias(-SHIFT), rep(2), prompt(lo, hi))).toBeCloseTo(rawGap * 2, 3);
    expect(await processedGap(bias(-SHIFT), rep(1.25), prompt(hi, lo))).toBeCloseTo(rawGap * 1.25, 3);
    // Once per distinct token: lo both in the prompt and generated (twice) is penalised once, like hi.
    expect(await processedGap(bias(-SHIFT), rep(2), prompt(lo, hi, lo), outputs([[lo, 2]]))).toBeCloseTo(rawGap * 2, 3);
  });

  it('repetition hits a token of the prompt or the output and no other', async () => {
    // Only lo listed, both logits near −100: l'_lo = 2(l_lo − 100) against an untouched l_hi − 100 gives a gap of about
    // −100 (exactly raw gap + l_lo − 100; l_lo alone is unknown), the same whether lo is in the prompt or the output.
    const viaPrompt = await processedGap(bias(-SHIFT), { repetitionPenalty: f32(2) }, prompt(lo));
    const viaOutput = await processedGap(bias(-SHIFT), { repetitionPenalty: f32(2) }, outputs([[lo, 1]]));
    expect(viaOutput).toBeCloseTo(viaPrompt, 3);
    expect(viaPrompt).toBeLessThan(rawGap - 50);
  });

  it('presence subtracts pr once and frequency f × count, from generated tokens only', async () => {
    const pen = (presence: number, frequency: number): Partial<StepBatch> => ({ presencePenalty: f32(presence), frequencyPenalty: f32(frequency) });
    expect(await processedGap(pen(0.5, 0), outputs([[lo, 3]]))).toBeCloseTo(rawGap - 0.5, 3);
    expect(await processedGap(pen(0, 0.25), outputs([[lo, 3]]))).toBeCloseTo(rawGap - 0.75, 3);
    expect(await processedGap(pen(0.5, 0.25), outputs([[lo, 3]]))).toBeCloseTo(rawGap - 1.25, 3);
    // Negative values reward; hi generated lowers hi instead (the gap grows).
    expect(await processedGap(pen(-0.5, -0.25), outputs([[lo, 2]]))).toBeCloseTo(rawGap + 1, 3);
    expect(await processedGap(pen(0.5, 0.25), outputs([[hi, 2]]))).toBeCloseTo(rawGap + 1, 3);
    // The prompt is not the output: prompt tokens take no presence or frequency penalty.
    expect(await processedGap(pen(0.5, 0.25), prompt(lo))).toBeCloseTo(rawGap, 3);
  });

  it('repetition comes before presence and frequency', async () => {
    // Both penalised by repetition at l − 100 < 0, lo also generated twice:
    // 2(l_lo − 100) − (0.25·2 + 0.5) − 2(l_hi − 100) = 2·raw gap − 1 (the other order would give 2·raw gap − 2).
    const extra = { repetitionPenalty: f32(2), presencePenalty: f32(0.5), frequencyPenalty: f32(0.25) };
    expect(await processedGap(bias(-SHIFT), extra, prompt(hi), outputs([[lo, 2]]))).toBeCloseTo(rawGap * 2 - 1, 3);
  });
});
