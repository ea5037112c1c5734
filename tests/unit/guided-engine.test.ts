// The engine's side of guided decoding, with scripted guides over the fake model: masks reach the
// step batch for exactly the sampling sequences, sampled tokens reach the guide, a complete output
// ends with 'stop', and every guide is disposed exactly once however its request ends.
import { describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.ts';
import type { NativeModel, StepBatch, StepResult } from '../../src/native/addon-types.ts';
import type { EngineEvent, GuideStatus, SamplingParams, TokenGuide } from '../../src/engine/types.ts';
import { FakeModel, VOCAB } from './engine-fake-model.ts';
import { collect } from '../helpers/engine-events.ts';

const EOS = 96;
const WORDS = Math.ceil(VOCAB / 32);

/** The fake model, with the allowed mask applied as the native sampler does (a masked draw moves to the next allowed id). */
class MaskingModel implements NativeModel {
  readonly batches: StepBatch[] = [];
  constructor(readonly inner: FakeModel) {}
  get kvBlocks() { return this.inner.kvBlocks; }
  get blockSize() { return this.inner.blockSize; }
  get kvBytesPerToken() { return this.inner.kvBytesPerToken; }
  get weightBytes() { return this.inner.weightBytes; }
  get weightsLocked() { return this.inner.weightsLocked; }
  get lockError() { return this.inner.lockError; }
  get codedWeights() { return this.inner.codedWeights; }
  get backendName() { return this.inner.backendName; }
  get deviceMemory() { return this.inner.deviceMemory; }
  get weightDeviceBytes() { return this.inner.weightDeviceBytes; }
  get maxNumBatchedTokens() { return this.inner.maxNumBatchedTokens; }
  close() { this.inner.close(); }
  async step(b: StepBatch): Promise<StepResult> {
    this.batches.push(b);
    const r = await this.inner.step(b);
    if (b.allowedMask && b.hasMask) {
      for (let s = 0; s < b.sample.length; s++) {
        if (!b.hasMask[s] || !b.sample[s]) continue;
        const row = b.allowedMask.subarray(s * WORDS, (s + 1) * WORDS);
        for (let k = 0; k < VOCAB; k++) {
          const id = (r.tokens[s] + k) % VOCAB;
          if ((row[id >>> 5] >>> (id & 31)) & 1) {
            r.tokens[s] = id;
            break;
          }
        }
      }
    }
    return r;
  }
}

/** Forces the output to `script`, then allows only EOS. Counts what the engine does with it. */
class ScriptedGuide implements TokenGuide {
  accepted: number[] = [];
  disposed = 0;
  nexts = 0;
  failNext: string | null = null;
  rejectAll = false;
  constructor(readonly script: number[], readonly freeFirst = 0) {}
  async next(row: Uint32Array): Promise<GuideStatus> {
    this.nexts++;
    if (this.disposed) throw new Error('next after dispose');
    if (this.failNext) throw new Error(this.failNext);
    expect(row.length).toBe(WORDS);
    if (this.accepted.length < this.freeFirst) return 'free';
    const i = this.accepted.length - this.freeFirst;
    const allow = i < this.script.length ? this.script[i] : EOS;
    row.fill(0);
    row[allow >>> 5] |= 1 << (allow & 31);
    return i < this.script.length ? 'masked' : 'complete';
  }
  accept(token: number): boolean {
    if (this.disposed) throw new Error('accept after dispose');
    this.accepted.push(token);
    return !this.rejectAll;
  }
  dispose(): void {
    this.disposed++;
  }
}

const params = (o: Partial<SamplingParams> = {}): SamplingParams => ({
  maxTokens: 16,
  temperature: 1,
  topP: 1,
  topK: 0,
  seed: 3,
  stopTokenIds: [],
  ignoreEos: false,
  logprobs: null,
  promptLogprobs: null,
  ...o,
});

function setup() {
  const model = new MaskingModel(new FakeModel(64, 4));
  const engine = createEngine({ model, maxModelLen: 128, eosTokenIds: [EOS], vocabSize: VOCAB, maxNumSeqs: 4, maxNumBatchedTokens: 8 });
  return { model, engine };
}

describe('engine with a guide', () => {
  it('samples exactly what the guide allows, masks only sampling rows, and ends with stop when complete', async () => {
    const { model, engine } = setup();
    const guide = new ScriptedGuide([5, 17, 40, 95]);
    // A 20-token prompt in chunks of 8: the first two steps do not sample and get no mask.
    const guided = collect(engine.generate({ promptTokens: Array.from({ length: 20 }, (_, i) => i + 1), params: params(), guide }));
    const free = collect(engine.generate({ promptTokens: [3, 4, 5], params: params({ maxTokens: 6, ignoreEos: true }) }));
    const [g, f] = await Promise.all([guided, free]);
    expect(g.tokens).toEqual([5, 17, 40, 95]);
    expect(g.finish).toMatchObject({ reason: 'stop', stopToken: EOS, completionTokens: 5 });
    expect(guide.accepted).toEqual([5, 17, 40, 95]);
    expect(guide.disposed).toBe(1);
    expect(f.tokens).toHaveLength(6);
    const masked = model.batches.filter((b) => b.hasMask);
    expect(masked.length).toBe(5);
    for (const b of masked) {
      expect(b.allowedMask!.length).toBe(b.sample.length * WORDS);
      expect(b.hasMask!.reduce((a, x) => a + x, 0)).toBe(1);
      const s = b.hasMask!.indexOf(1);
      expect(b.sample[s]).toBe(1);
      const row = b.allowedMask!.subarray(s * WORDS, (s + 1) * WORDS);
      expect(row.reduce((a, w) => a + w.toString(2).replace(/0/g, '').length, 0)).toBe(1);
    }
    await engine.close();
  });

  it('a complete output with logprobs asked: the EOS that ends it comes with its logprob (every counted token covered)', async () => {
    const { engine } = setup();
    const guide = new ScriptedGuide([5, 17, 40]);
    const r = await collect(engine.generate({ promptTokens: [1, 2, 3], params: params({ logprobs: 1 }), guide }));
    expect(r.events.filter((e) => e.type === 'token')).toHaveLength(3);
    expect(r.finish).toMatchObject({ reason: 'stop', stopToken: EOS, completionTokens: 4, stopLogprob: { token: EOS } });
    await engine.close();
  });

  it("leaves 'free' steps unmasked (reasoning before the grammar)", async () => {
    const { model, engine } = setup();
    const guide = new ScriptedGuide([7, 8], 3);
    const r = await collect(engine.generate({ promptTokens: [1, 2], params: params({ maxTokens: 10 }), guide }));
    expect(r.tokens.slice(3)).toEqual([7, 8]);
    expect(r.finish.reason).toBe('stop');
    expect(model.batches.slice(0, 3).every((b) => b.hasMask === undefined)).toBe(true);
    expect(guide.disposed).toBe(1);
    await engine.close();
  });

  it("max_tokens: a cut output ends with 'length', one complete at the cut with 'stop'", async () => {
    const { engine } = setup();
    const cut = new ScriptedGuide([1, 2, 3, 4, 5]);
    const r1 = await collect(engine.generate({ promptTokens: [9], params: params({ maxTokens: 3 }), guide: cut }));
    expect(r1.tokens).toEqual([1, 2, 3]);
    expect(r1.finish).toMatchObject({ reason: 'length', completionTokens: 3 });
    const exact = new ScriptedGuide([1, 2, 3]);
    const r2 = await collect(engine.generate({ promptTokens: [9], params: params({ maxTokens: 3 }), guide: exact }));
    expect(r2.tokens).toEqual([1, 2, 3]);
    expect(r2.finish).toMatchObject({ reason: 'stop', completionTokens: 3 });
    expect([cut.disposed, exact.disposed]).toEqual([1, 1]);
    await engine.close();
  });

  it('ends a complete output with stop even under ignore_eos', async () => {
    const { engine } = setup();
    const guide = new ScriptedGuide([11]);
    const r = await collect(engine.generate({ promptTokens: [9], params: params({ ignoreEos: true }), guide }));
    expect(r.tokens).toEqual([11]);
    expect(r.finish).toMatchObject({ reason: 'stop' });
    await engine.close();
  });

  it('fails only the request whose guide throws or rejects, and disposes it', async () => {
    const { engine } = setup();
    const throwing = new ScriptedGuide([1, 2, 3]);
    throwing.failNext = 'matcher exploded';
    const rejecting = new ScriptedGuide([1, 2, 3]);
    rejecting.rejectAll = true;
    const ok = new ScriptedGuide([4, 5]);
    const results = await Promise.allSettled([
      collect(engine.generate({ promptTokens: [1], params: params(), guide: throwing })),
      collect(engine.generate({ promptTokens: [2], params: params(), guide: rejecting })),
      collect(engine.generate({ promptTokens: [3], params: params(), guide: ok })),
    ]);
    expect(results[0]).toMatchObject({ status: 'rejected', reason: { message: expect.stringContaining('guided decoding failed: matcher exploded') } });
    expect(results[1]).toMatchObject({ status: 'rejected', reason: { message: expect.stringContaining('grammar rejects token 1') } });
    expect(results[2]).toMatchObject({ status: 'fulfilled', value: { tokens: [4, 5] } });
    expect([throwing.disposed, rejecting.disposed, ok.disposed]).toEqual([1, 1, 1]);
    await engine.close();
  });

  it('disposes the guide of a refused, a pre-aborted, an aborted and a closed-out request', async () => {
    const { model, engine } = setup();
    const refused = new ScriptedGuide([1]);
    await expect(collect(engine.generate({ promptTokens: [], params: params(), guide: refused }))).rejects.toThrow();
    const pre = new ScriptedGuide([1]);
    const ctl = new AbortController();
    ctl.abort();
    expect((await collect(engine.generate({ promptTokens: [1], params: params(), guide: pre, signal: ctl.signal }))).finish.reason).toBe('abort');
    const mid = new ScriptedGuide(Array.from({ length: 50 }, (_, i) => i % 90), 0);
    const ctl2 = new AbortController();
    model.inner.onStep = (_b, i) => {
      if (i === 3) ctl2.abort();
    };
    const r = await collect(engine.generate({ promptTokens: [1], params: params({ maxTokens: 50 }), guide: mid, signal: ctl2.signal }));
    expect(r.finish.reason).toBe('abort');
    model.inner.onStep = null;
    const open = new ScriptedGuide(Array.from({ length: 100 }, (_, i) => i % 90));
    const pending = collect(engine.generate({ promptTokens: [1], params: params({ maxTokens: 100 }), guide: open }));
    await new Promise((r) => setTimeout(r, 5));
    await engine.close();
    expect((await pending).finish.reason).toBe('abort');
    expect([refused.disposed, pre.disposed, mid.disposed, open.disposed]).toEqual([1, 1, 1, 1]);
  });
});
