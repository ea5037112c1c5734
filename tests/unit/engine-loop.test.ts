import { describe, expect, it } from 'vitest';
import { createEngine, type EngineOptions } from '../../src/engine/engine.ts';
import { MAX_EVENT_BACKLOG } from '../../src/engine/sequence.ts';
import { Xoshiro128 } from '../../src/engine/rng.ts';
import { RequestError, type EngineEvent, type SamplingParams } from '../../src/engine/types.ts';
import { FakeModel, VOCAB, logSoftmax, logitsOf, reference, topN } from './engine-fake-model.ts';
import { collect } from '../helpers/engine-events.ts';

const params = (o: Partial<SamplingParams> = {}): SamplingParams => ({
  maxTokens: 8,
  temperature: 0,
  topP: 1,
  topK: 0,
  stopTokenIds: [],
  ignoreEos: true,
  logprobs: null,
  promptLogprobs: null,
  ...o,
});

function promptOf(len: number, seed: number): number[] {
  const g = new Xoshiro128(seed);
  return Array.from({ length: len }, () => g.nextU32() % VOCAB);
}

function setup(o: Partial<EngineOptions> & { kvBlocks?: number; blockSize?: number } = {}) {
  const model = new FakeModel(o.kvBlocks ?? 64, o.blockSize ?? 4);
  const engine = createEngine({ model, maxModelLen: 128, eosTokenIds: [], vocabSize: VOCAB, ...o });
  return { model, engine };
}

const until = async (cond: () => boolean) => {
  for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setTimeout(r, 1));
  expect(cond()).toBe(true);
};

describe('engine with a fake model', () => {
  it('generates greedily one request exactly as the unbatched reference', async () => {
    const { model, engine } = setup();
    const prompt = promptOf(10, 1);
    const r = await collect(engine.generate({ promptTokens: prompt, params: params({ maxTokens: 12, seed: 5 }) }));
    const ref = reference(prompt, { maxTokens: 12, temperature: 0, seed: 5, stop: [] });
    expect(r.tokens).toEqual(ref.tokens);
    expect(r.finish).toEqual({ type: 'finish', reason: 'length', promptTokens: 10, completionTokens: 12 });
    expect(model.violations).toEqual([]);
    expect(engine.stats()).toMatchObject({ running: 0, waiting: 0, kvBlocksUsed: 0, kvBlocksTotal: 64, promptTokens: 10, generationTokens: 12 });
    await engine.close();
    expect(model.closed).toBe(true);
  });

  it('serves concurrent requests, chunked and preempted, each exactly as alone (greedy and seeded)', async () => {
    // 40 blocks × 4 = 160 tokens of KV for 14 requests of up to 150: preemption is certain.
    const { model, engine } = setup({ kvBlocks: 40, blockSize: 4, maxModelLen: 160, maxNumSeqs: 6, maxNumBatchedTokens: 24 });
    const reqs = Array.from({ length: 14 }, (_, i) => {
      const len = [1, 3, 17, 64, 5, 130, 9, 33, 2, 70, 4, 12, 100, 7][i];
      const sampled = i % 3 === 1;
      return {
        prompt: promptOf(len, 100 + i),
        p: params({ maxTokens: 4 + (i % 5) * 3, temperature: sampled ? 0.8 : 0, seed: 1000 + i, logprobs: i % 2 }),
      };
    });
    const results = await Promise.all(reqs.map((q) => collect(engine.generate({ promptTokens: q.prompt, params: q.p }))));
    expect(model.violations).toEqual([]);
    results.forEach((r, i) => {
      const { prompt, p } = reqs[i];
      const ref = reference(prompt, { maxTokens: p.maxTokens, temperature: p.temperature, seed: p.seed!, stop: [] });
      expect(r.tokens, `request ${i}`).toEqual(ref.tokens);
      expect(r.finish).toMatchObject({ reason: 'length', promptTokens: prompt.length, completionTokens: p.maxTokens });
      // Logprobs of the sampled tokens as the model computed them on the full context.
      const ctx = [...prompt];
      for (const e of r.events) {
        if (e.type !== 'token') continue;
        const lsm = logSoftmax(logitsOf(ctx));
        expect(e.logprob!.logprob).toBeCloseTo(lsm[e.token], 5);
        expect(e.logprob!.top.map((t) => t.token)).toEqual(topN(lsm, p.logprobs!));
        ctx.push(e.token);
      }
    });
    const st = engine.stats();
    expect(st.numPreemptions).toBeGreaterThan(0);
    expect(st.kvBlocksUsed).toBe(0);
    expect(st.running + st.waiting).toBe(0);
    // Chunked prefill happened: some step ran a prompt chunk that did not sample.
    expect(model.batches.some((b) => b.sample.some((x) => x === 0))).toBe(true);
    for (const b of model.batches) {
      expect(b.tokens.length).toBeLessThanOrEqual(24);
      expect(b.sample.length).toBeLessThanOrEqual(6);
    }
    // Continuous batching: many steps mixed several sequences.
    expect(model.batches.filter((b) => b.sample.length >= 3).length).toBeGreaterThan(5);
    await engine.close();
  });

  it('gives the same seeded sample whatever else is batched', async () => {
    const { engine } = setup();
    const p = params({ maxTokens: 10, temperature: 1.2, seed: 77 });
    const prompt = promptOf(6, 9);
    const alone = await collect(engine.generate({ promptTokens: prompt, params: p }));
    const others = [3, 40, 11].map((n, i) =>
      collect(engine.generate({ promptTokens: promptOf(n, i), params: params({ temperature: 1, seed: i }) })),
    );
    const together = await collect(engine.generate({ promptTokens: prompt, params: p }));
    await Promise.all(others);
    expect(together.tokens).toEqual(alone.tokens);
    const other = await collect(engine.generate({ promptTokens: prompt, params: { ...p, seed: 78 } }));
    expect(other.tokens).not.toEqual(alone.tokens);
  });

  it('stops on a stop token or EOS without emitting it; ignoreEos overrides EOS only', async () => {
    const prompt = promptOf(8, 3);
    const ref = reference(prompt, { maxTokens: 20, temperature: 0, seed: 0, stop: [] });
    const k = ref.tokens.findIndex((t, i) => i >= 2 && ref.tokens.indexOf(t) === i);
    const stopTok = ref.tokens[k];
    const { engine } = setup({ eosTokenIds: [stopTok] });
    const viaStop = await collect(engine.generate({ promptTokens: prompt, params: params({ maxTokens: 20, stopTokenIds: [stopTok] }) }));
    expect(viaStop.tokens).toEqual(ref.tokens.slice(0, k));
    // The stop token counts as generated (as vLLM's usage does).
    expect(viaStop.finish).toEqual({ type: 'finish', reason: 'stop', promptTokens: 8, completionTokens: k + 1, stopToken: stopTok });
    const viaEos = await collect(engine.generate({ promptTokens: prompt, params: params({ maxTokens: 20, ignoreEos: false }) }));
    expect(viaEos.finish).toMatchObject({ reason: 'stop', stopToken: stopTok });
    const ignored = await collect(engine.generate({ promptTokens: prompt, params: params({ maxTokens: 20, ignoreEos: true }) }));
    expect(ignored.tokens).toEqual(ref.tokens);
    expect(ignored.finish.reason).toBe('length');
  });

  it("reports the stop token's logprob with the finish when logprobs are asked (it is counted, so it is covered)", async () => {
    const prompt = promptOf(8, 3);
    const ref = reference(prompt, { maxTokens: 20, temperature: 0, seed: 0, stop: [] });
    const k = ref.tokens.findIndex((t, i) => i >= 2 && ref.tokens.indexOf(t) === i);
    const stopTok = ref.tokens[k];
    const { engine } = setup({ eosTokenIds: [stopTok] });
    for (const p of [params({ maxTokens: 20, stopTokenIds: [stopTok], logprobs: 2 }), params({ maxTokens: 20, ignoreEos: false, logprobs: 0 })]) {
      const r = await collect(engine.generate({ promptTokens: prompt, params: p }));
      const tokenEvents = r.events.filter((e) => e.type === 'token');
      expect(tokenEvents).toHaveLength(k);
      if (r.finish.type !== 'finish') throw new Error('unreachable');
      expect(r.finish.completionTokens).toBe(k + 1);
      const lsm = logSoftmax(logitsOf([...prompt, ...ref.tokens.slice(0, k)]));
      expect(r.finish.stopLogprob!.token).toBe(stopTok);
      expect(r.finish.stopLogprob!.logprob).toBeCloseTo(lsm[stopTok], 5);
      expect(r.finish.stopLogprob!.top.map((t) => t.token)).toEqual(topN(lsm, p.logprobs!));
    }
    await engine.close();
  });

  it('reports prompt logprobs once, before tokens, across prefill chunks', async () => {
    const { model, engine } = setup({ maxNumBatchedTokens: 8, maxNumSeqs: 4, enablePrefixCaching: true });
    const prompt = promptOf(30, 4);
    // Warm the prefix cache with the same prompt: prompt logprobs must still compute every position.
    await collect(engine.generate({ promptTokens: prompt, params: params({ maxTokens: 1 }) }));
    const r = await collect(engine.generate({ promptTokens: prompt, params: params({ maxTokens: 2, promptLogprobs: 3, logprobs: 0 }) }));
    expect(r.events.map((e) => e.type)).toEqual(['prompt_logprobs', 'token', 'token', 'finish']);
    const pl = r.events[0];
    if (pl.type !== 'prompt_logprobs') throw new Error('unreachable');
    expect(pl.entries).toHaveLength(30);
    expect(pl.entries[0]).toBeNull();
    for (let p = 1; p < 30; p++) {
      const lsm = logSoftmax(logitsOf(prompt, p));
      const e = pl.entries[p]!;
      expect(e.token).toBe(prompt[p]);
      expect(e.logprob).toBeCloseTo(lsm[prompt[p]], 5);
      expect(e.top.map((t) => t.token)).toEqual(topN(lsm, 3));
    }
    const tok = r.events[1];
    expect(tok.type === 'token' && tok.logprob!.top).toEqual([]);
    expect(model.violations).toEqual([]);
  });

  it('reuses cached prefix blocks and still produces the reference output', async () => {
    const { model, engine } = setup({ enablePrefixCaching: true, blockSize: 4 });
    const turn1 = promptOf(37, 8);
    const r1 = await collect(engine.generate({ promptTokens: turn1, params: params({ maxTokens: 6 }) }));
    const turn2 = [...turn1, ...r1.tokens, ...promptOf(9, 9)];
    const before = engine.stats().prefixCacheHits;
    const r2 = await collect(engine.generate({ promptTokens: turn2, params: params({ maxTokens: 6 }) }));
    expect(r2.tokens).toEqual(reference(turn2, { maxTokens: 6, temperature: 0, seed: 0, stop: [] }).tokens);
    // Turn 1's prompt and output were computed up to 42 positions: 10 full blocks.
    expect(engine.stats().prefixCacheHits - before).toBe(40);
    expect(engine.stats().kvBlocksUsed).toBe(0);
    expect(engine.stats().kvBlocksCached).toBeGreaterThan(0);
    expect(model.violations).toEqual([]);
  });

  it('reuses no cached block whose own tokens match under another prefix (its KV depends on the prefix)', async () => {
    const { model, engine } = setup({ enablePrefixCaching: true, blockSize: 4 });
    const [a, a2, b, c] = [21, 22, 23, 24].map((seed) => promptOf(4, seed));
    // [A, B] and [A', C] are cached; [A', B, …] may reuse A' but not B, whose KV was computed after A.
    for (const prompt of [[...a, ...b, 1], [...a2, ...c, 2]]) await collect(engine.generate({ promptTokens: prompt, params: params({ maxTokens: 2 }) }));
    const before = engine.stats().prefixCacheHits;
    const prompt = [...a2, ...b, 3];
    const r = await collect(engine.generate({ promptTokens: prompt, params: params({ maxTokens: 6 }) }));
    expect(r.tokens).toEqual(reference(prompt, { maxTokens: 6, temperature: 0, seed: 0, stop: [] }).tokens);
    expect(engine.stats().prefixCacheHits - before).toBe(4);
    expect(model.violations).toEqual([]);
  });

  it('aborts within one step and frees the blocks (signal and early break)', async () => {
    const { model, engine } = setup();
    const ac = new AbortController();
    let abortedAt = -1;
    const events: EngineEvent[] = [];
    const long = params({ maxTokens: 100 });
    for await (const e of engine.generate({ promptTokens: promptOf(5, 1), params: long, signal: ac.signal })) {
      events.push(e);
      if (events.length === 3) {
        ac.abort();
        abortedAt = model.batches.length;
      }
    }
    expect(events.at(-1)).toEqual({ type: 'finish', reason: 'abort', promptTokens: 5, completionTokens: 3 });
    expect(model.batches.length - abortedAt).toBeLessThanOrEqual(1);
    expect(engine.stats().kvBlocksUsed).toBe(0);

    let n = 0;
    for await (const e of engine.generate({ promptTokens: promptOf(5, 2), params: long })) if (e.type === 'token' && ++n === 2) break;
    await until(() => engine.stats().running === 0);
    expect(engine.stats().kvBlocksUsed).toBe(0);

    const pre = new AbortController();
    pre.abort();
    const r = await collect(engine.generate({ promptTokens: [1], params: long, signal: pre.signal }));
    expect(r.finish).toMatchObject({ reason: 'abort', completionTokens: 0 });
  });

  it('aborts a request whose step is in flight without emitting its token', async () => {
    const { model, engine } = setup();
    const ac = new AbortController();
    model.onStep = (_b, i) => {
      if (i === 2) ac.abort();
    };
    const r = await collect(engine.generate({ promptTokens: promptOf(3, 3), params: params({ maxTokens: 50 }), signal: ac.signal }));
    expect(r.tokens).toHaveLength(2);
    expect(r.finish).toMatchObject({ reason: 'abort', completionTokens: 2 });
    expect(engine.stats().kvBlocksUsed).toBe(0);
  });

  it('fails the requests of a step that throws and keeps serving', async () => {
    const { model, engine } = setup();
    const a = collect(engine.generate({ promptTokens: promptOf(4, 1), params: params({ maxTokens: 30 }) }));
    const b = collect(engine.generate({ promptTokens: promptOf(9, 2), params: params({ maxTokens: 30 }) }));
    model.onStep = (_b, i) => {
      if (i === 3) model.failNext = 'native boom';
    };
    await expect(a).rejects.toThrow(/generation failed: native boom/);
    await expect(b).rejects.toThrow(/generation failed: native boom/);
    expect(engine.stats()).toMatchObject({ running: 0, waiting: 0, kvBlocksUsed: 0 });
    const prompt = promptOf(6, 3);
    const ok = await collect(engine.generate({ promptTokens: prompt, params: params({ maxTokens: 4 }) }));
    expect(ok.tokens).toEqual(reference(prompt, { maxTokens: 4, temperature: 0, seed: 0, stop: [] }).tokens);
  });

  it('wakes from idle for requests arriving later', async () => {
    const { engine } = setup();
    await collect(engine.generate({ promptTokens: [1, 2], params: params({ maxTokens: 2 }) }));
    await new Promise((r) => setTimeout(r, 20));
    const r = await collect(engine.generate({ promptTokens: [3], params: params({ maxTokens: 3 }) }));
    expect(r.tokens).toHaveLength(3);
  });

  it('rejects unservable requests before any event, naming the parameter', async () => {
    const { engine } = setup({ maxModelLen: 64 });
    const bad: [{ promptTokens?: number[]; params?: Partial<SamplingParams> }, string, RegExp][] = [
      [{ promptTokens: [] }, 'prompt', /at least one token/],
      [{ promptTokens: [1, VOCAB] }, 'prompt', /prompt token\[1\] = 97 is not a token id in \[0, 97\)/],
      [{ promptTokens: [1, -1] }, 'prompt', /not a token id/],
      [{ promptTokens: [1.5] }, 'prompt', /not a token id/],
      [{ params: { maxTokens: 0 } }, 'max_tokens', /at least 1/],
      [{ params: { maxTokens: 60 }, promptTokens: promptOf(10, 1) }, 'max_tokens', /maximum context length is 64 tokens.*requested 70 tokens \(10 in the prompt, 60 in the completion\)/],
      [{ params: { maxTokens: 1 }, promptTokens: promptOf(64, 1) }, 'prompt', /64 tokens.*65 tokens/],
      [{ params: { logprobs: 21 } }, 'logprobs', /between 0 and 20/],
      [{ params: { logprobs: -1 } }, 'logprobs', /between 0 and 20/],
      [{ params: { promptLogprobs: 30 } }, 'prompt_logprobs', /between 0 and 20/],
      [{ params: { temperature: -1 } }, 'temperature', />= 0/],
      [{ params: { topP: 0 } }, 'top_p', /\(0, 1\]/],
      [{ params: { topK: -1 } }, 'top_k', />= 0/],
      [{ params: { seed: 0.5 } }, 'seed', /integer/],
      [{ params: { stopTokenIds: [1000] } }, 'stop_token_ids', /stop token\[0\] = 1000/],
    ];
    for (const [req, param, msg] of bad) {
      const it = engine.generate({ promptTokens: req.promptTokens ?? [1, 2], params: params(req.params) });
      const err = await collect(it).catch((e: unknown) => e);
      expect(err, param).toBeInstanceOf(RequestError);
      expect((err as RequestError).param).toBe(param);
      expect((err as RequestError).message).toMatch(msg);
    }
    expect(engine.stats()).toMatchObject({ running: 0, waiting: 0 });
  });

  it('refuses a max model length the KV pool cannot hold, and bad limits', () => {
    const model = new FakeModel(4, 16);
    expect(() => createEngine({ model, maxModelLen: 65, eosTokenIds: [], vocabSize: VOCAB })).toThrow(
      /maxModelLen 65 needs 5 KV blocks of 16 tokens but the pool has 4 \(64 tokens\)/,
    );
    expect(() => createEngine({ model, maxModelLen: 64, eosTokenIds: [], vocabSize: VOCAB, maxNumSeqs: 10, maxNumBatchedTokens: 5 })).toThrow(
      /maxNumBatchedTokens/,
    );
    // A step budget larger than the workspace the model was loaded for: refused naming both sizes and the fix.
    const sized = new FakeModel(64, 16, 512);
    expect(() => createEngine({ model: sized, maxModelLen: 64, eosTokenIds: [], vocabSize: VOCAB, maxNumBatchedTokens: 513 })).toThrow(
      /max-num-batched-tokens 513 is more than the model was loaded for: its workspace holds 512 tokens per step.*maxNumBatchedTokens >= 513 or lower max-num-batched-tokens/,
    );
    expect(() => createEngine({ model: sized, maxModelLen: 64, eosTokenIds: [], vocabSize: VOCAB, maxNumBatchedTokens: 512 }).close()).not.toThrow();
  });

  it('close() ends pending requests with abort and rejects new ones', async () => {
    const { model, engine } = setup();
    const pending = collect(engine.generate({ promptTokens: [1, 2, 3], params: params({ maxTokens: 100 }) }));
    await until(() => model.batches.length >= 2);
    await engine.close();
    const r = await pending;
    expect(r.finish.reason).toBe('abort');
    expect(model.violations).toEqual([]);
    expect(model.closed).toBe(true);
    await expect(collect(engine.generate({ promptTokens: [1], params: params() }))).rejects.toThrow(/closed/);
  });

  it('pauses a request whose consumer falls MAX_EVENT_BACKLOG events behind, lets others run, and resumes it exactly', async () => {
    // Two slots: the slow consumer's request holds one until someone else needs it.
    const { model, engine } = setup({ maxNumSeqs: 2, maxModelLen: 400, kvBlocks: 128 });
    const prompt = promptOf(6, 77);
    const p = params({ maxTokens: 200, seed: 3 });
    const slow = engine.generate({ promptTokens: prompt, params: p })[Symbol.asyncIterator]();
    // Not consumed: the engine must stop at the backlog bound, not run to 200 tokens.
    await until(() => engine.stats().generationTokens >= MAX_EVENT_BACKLOG);
    await new Promise((r) => setTimeout(r, 50));
    expect(engine.stats().generationTokens).toBe(MAX_EVENT_BACKLOG);
    expect(engine.stats().running).toBe(1);
    // Others are served meanwhile, past the paused one (which gives up its slot and KV only when needed).
    const others = await Promise.all([1, 2, 3].map((i) => collect(engine.generate({ promptTokens: promptOf(5, i), params: params({ maxTokens: 5 }) }))));
    for (const o of others) expect(o.finish).toMatchObject({ reason: 'length', completionTokens: 5 });
    // Reading again resumes it (recomputed if it was preempted) and it ends as if never paused.
    const tokens: number[] = [];
    for (let next = await slow.next(); !next.done; next = await slow.next()) if (next.value.type === 'token') tokens.push(next.value.token);
    expect(tokens).toEqual(reference(prompt, { maxTokens: 200, temperature: 0, seed: 3, stop: [] }).tokens);
    expect(model.violations).toEqual([]);
    expect(engine.stats()).toMatchObject({ running: 0, waiting: 0, kvBlocksUsed: 0 });
    await engine.close();
  });

  it('frees the blocks of a paused request that is aborted, running or preempted', async () => {
    const { model, engine } = setup({ maxNumSeqs: 1, maxModelLen: 400, kvBlocks: 128 });
    const controller = new AbortController();
    const stuck = engine.generate({ promptTokens: promptOf(6, 9), params: params({ maxTokens: 200 }), signal: controller.signal });
    await until(() => engine.stats().generationTokens >= MAX_EVENT_BACKLOG);
    // A newcomer needs the only slot: the paused one is preempted (its KV freed) and waits.
    const other = collect(engine.generate({ promptTokens: promptOf(4, 10), params: params({ maxTokens: 3 }) }));
    expect((await other).finish).toMatchObject({ completionTokens: 3 });
    expect(engine.stats()).toMatchObject({ running: 0, waiting: 1, kvBlocksUsed: 0 });
    controller.abort();
    await until(() => engine.stats().waiting === 0);
    const events = await collect(stuck);
    expect(events.finish).toMatchObject({ reason: 'abort' });
    expect(model.violations).toEqual([]);
    expect(engine.stats()).toMatchObject({ running: 0, waiting: 0, kvBlocksUsed: 0 });
    await engine.close();
  });
});
