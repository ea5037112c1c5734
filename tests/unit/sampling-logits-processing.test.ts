// The engine's logits-processing fields of StepBatch (min_p, penalties with their CSR token lists,
// logit_bias, min_tokens): what each step carries, read off the batches the engine really sends
// (to the deterministic fake model, which records them).
import { describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.ts';
import type { StepBatch } from '../../src/native/addon-types.ts';
import type { EngineEvent, SamplingParams } from '../../src/engine/types.ts';
import { FakeModel, VOCAB, reference } from './engine-fake-model.ts';

const base: SamplingParams = { maxTokens: 10, temperature: 0, topP: 1, topK: 0, seed: 1, stopTokenIds: [], ignoreEos: true, logprobs: null, promptLogprobs: null };
const EOS = 5;

async function collect(events: AsyncIterable<EngineEvent>): Promise<{ tokens: number[]; finish: EngineEvent }> {
  const tokens: number[] = [];
  let finish: EngineEvent | undefined;
  for await (const e of events) {
    if (e.type === 'token') tokens.push(e.token);
    if (e.type === 'finish') finish = e;
  }
  return { tokens, finish: finish! };
}

function csr(start: Int32Array | undefined, s: number, ...arrays: (Int32Array | Float32Array | undefined)[]): number[][] {
  if (!start) return arrays.map(() => []);
  return arrays.map((a) => Array.from(a!.subarray(start[s], start[s + 1])));
}

/** The last position sequence s feeds in this step. */
function sampledAt(b: StepBatch, s: number): number {
  return b.positions[b.seqStart[s + 1] - 1];
}

const optional = [
  'minP', 'presencePenalty', 'frequencyPenalty', 'repetitionPenalty', 'outputTokenStart', 'outputTokenIds', 'outputTokenCounts',
  'promptTokenStart', 'promptTokenIds', 'biasStart', 'biasIds', 'biasValues',
] as const;

describe('logits processing in the engine\'s step batches', () => {
  it('plain requests carry none of the optional fields', async () => {
    const model = new FakeModel(64, 4);
    const engine = createEngine({ model, maxModelLen: 64, eosTokenIds: [EOS], vocabSize: VOCAB });
    await Promise.all([1, 2, 3].map((k) => collect(engine.generate({ promptTokens: [k, k + 1, k + 2], params: { ...base, temperature: 0.7, topP: 0.9, topK: 5 } }))));
    expect(model.batches.length).toBeGreaterThan(5);
    for (const b of model.batches) for (const key of optional) expect(b[key], key).toBeUndefined();
    await engine.close();
  });

  it('penalised requests get their distinct output counts, distinct prompt ids, bias and min_tokens ban each step; others in the batch get empty rows', async () => {
    const model = new FakeModel(64, 4);
    const engine = createEngine({ model, maxModelLen: 64, eosTokenIds: [EOS], vocabSize: VOCAB, maxNumSeqs: 4, maxNumBatchedTokens: 6 });
    const prompt = [11, 12, 11, 13, 12, 11, 14, 15, 11];
    // The fake model ignores the processing fields: pick a seed whose output repeats a token, so counts > 1 show up.
    const seed = [...Array(100).keys()].find((k) => {
      const out = reference(prompt, { maxTokens: 12, temperature: 1, seed: k, stop: [9, EOS] }).tokens;
      return new Set(out).size < out.length - 1;
    })!;
    const penalised: SamplingParams = {
      ...base, temperature: 1, seed, maxTokens: 12, stopTokenIds: [9], ignoreEos: false,
      minP: 0.05, presencePenalty: 0.5, frequencyPenalty: -0.25, repetitionPenalty: 1.3, logitBias: { 7: 3, 40: -100 }, minTokens: 4,
    };
    const [pen, plain] = await Promise.all([
      collect(engine.generate({ promptTokens: prompt, params: penalised })),
      collect(engine.generate({ promptTokens: [1, 2, 3], params: { ...base, maxTokens: 12 } })),
    ]);
    expect(plain.tokens.length).toBe(12);
    let checkedSteps = 0;
    let sawRepeat = false;
    // The penalised sequence is the one whose first block holds position 0 = token 11 (no preemption here).
    const first = model.batches[0];
    const penRow = [...first.sample.keys()].find((s) => first.positions[first.seqStart[s]] === 0 && first.tokens[first.seqStart[s]] === 11)!;
    const penBlock = first.blockTables[penRow * first.blockTableWidth];
    for (const b of model.batches) {
      for (let s = 0; s < b.sample.length; s++) {
        const isPen = b.blockTables[s * b.blockTableWidth] === penBlock;
        const [outIds, outCounts] = csr(b.outputTokenStart, s, b.outputTokenIds, b.outputTokenCounts);
        const [promptIds] = csr(b.promptTokenStart, s, b.promptTokenIds);
        const [biasIds, biasValues] = csr(b.biasStart, s, b.biasIds, b.biasValues);
        if (!b.sample[s] || !isPen) {
          // Not sampling, or the plain request: neutral values and empty rows.
          expect([outIds.length, promptIds.length, biasIds.length]).toEqual([0, 0, 0]);
          if (b.presencePenalty) expect(b.presencePenalty[s]).toBe(0);
          if (b.repetitionPenalty) expect(b.repetitionPenalty[s]).toBe(1);
          if (b.minP) expect(b.minP[s]).toBe(0);
          continue;
        }
        checkedSteps++;
        expect(b.minP![s]).toBeCloseTo(0.05, 6);
        expect(b.presencePenalty![s]).toBe(0.5);
        expect(b.frequencyPenalty![s]).toBe(-0.25);
        expect(b.repetitionPenalty![s]).toBeCloseTo(1.3, 6);
        const generated = pen.tokens.slice(0, sampledAt(b, s) + 1 - prompt.length);
        const counts = new Map<number, number>();
        for (const t of generated) counts.set(t, (counts.get(t) ?? 0) + 1);
        sawRepeat ||= [...counts.values()].some((n) => n > 1);
        expect(new Map(outIds.map((id, i) => [id, outCounts[i]]))).toEqual(counts);
        expect(outIds.length).toBe(counts.size);
        expect([...promptIds].sort((x, y) => x - y)).toEqual([11, 12, 13, 14, 15]);
        const expectedBias: [number, number][] = [[7, 3], [40, -100]];
        if (generated.length < 4) expectedBias.push([9, -Infinity], [EOS, -Infinity]);
        expect(biasIds.map((id, i) => [id, biasValues[i]])).toEqual(expectedBias);
      }
    }
    expect(checkedSteps).toBe(Math.min(pen.tokens.length + 1, 12));
    expect(sawRepeat).toBe(true);
    await engine.close();
  });

  it('only the fields a sampled sequence uses are sent', async () => {
    const model = new FakeModel(64, 4);
    const engine = createEngine({ model, maxModelLen: 64, eosTokenIds: [EOS], vocabSize: VOCAB });
    await collect(engine.generate({ promptTokens: [1, 2, 3], params: { ...base, maxTokens: 3, presencePenalty: 1 } }));
    const last = model.batches.at(-1)!;
    expect(last.presencePenalty).toEqual(Float32Array.from([1]));
    expect(last.outputTokenStart).toEqual(Int32Array.from([0, 2]));
    for (const key of ['minP', 'frequencyPenalty', 'repetitionPenalty', 'promptTokenStart', 'biasStart'] as const) expect(last[key], key).toBeUndefined();
    await engine.close();
  });

  it('refuses out-of-range processing parameters by their OpenAI names', async () => {
    const model = new FakeModel(64, 4);
    const engine = createEngine({ model, maxModelLen: 64, eosTokenIds: [EOS], vocabSize: VOCAB });
    const bad: [Partial<SamplingParams>, string][] = [
      [{ minP: 1.5 }, 'min_p'],
      [{ presencePenalty: 3 }, 'presence_penalty'],
      [{ frequencyPenalty: Number.NaN }, 'frequency_penalty'],
      [{ repetitionPenalty: 0 }, 'repetition_penalty'],
      [{ repetitionPenalty: 1e39 }, 'repetition_penalty'],
      [{ logitBias: { [VOCAB]: 1 } }, 'logit_bias'],
      [{ logitBias: { 3: Number.POSITIVE_INFINITY } }, 'logit_bias'],
      [{ minTokens: 11 }, 'min_tokens'],
      [{ temperature: 1e39 }, 'temperature'],
      [{ topK: 2 ** 31 }, 'top_k'],
    ];
    for (const [extra, param] of bad) {
      await expect(collect(engine.generate({ promptTokens: [1], params: { ...base, ...extra } }))).rejects.toMatchObject({ name: 'RequestError', param });
    }
    expect(model.batches).toHaveLength(0);
    await engine.close();
  });
});
