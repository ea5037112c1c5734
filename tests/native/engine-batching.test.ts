// Continuous batching with the real addon on a generated checkpoint: many concurrent requests of
// mixed prompt lengths (chunked prefill, a KV pool small enough to force preemption, prefix caching
// on and off) give exactly the tokens and logprobs, bit for bit, that the same requests give one at a time: the
// CPU kernels sum a token's dot products in one order whatever else is in the step (batch-invariance.test.ts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine, type EngineOptions, type LlmEngineHandle } from '../../src/engine/engine.ts';
import type { EngineEvent, SamplingParams, TokenLogprob } from '../../src/engine/types.ts';
import { loadModelConfig, type ModelConfig } from '../../src/model/config.ts';
import { makeModel } from '../../src/model/make-model.ts';
import type { NativeModel } from '../../src/native/addon-types.ts';
import { loadAddon } from '../../src/native/load-addon.ts';
import { randomTokens } from '../helpers/native-steps.ts';

const VOCAB = 2048;
const BLOCK = 16;
const MAX_MODEL_LEN = 2560;

interface Req {
  prompt: number[];
  params: SamplingParams;
}

interface Out {
  tokens: number[];
  logprobs: (TokenLogprob | null)[];
  prompt: (TokenLogprob | null)[] | null;
  finish: EngineEvent & { type: 'finish' };
}

let dir = '';
let cfg: ModelConfig;
const models: NativeModel[] = [];

async function load(kvBlocks: number): Promise<NativeModel> {
  const m = await loadAddon().loadModel({ files: cfg.files, config: cfg.native, threads: 2, kvBlocks, blockSize: BLOCK });
  models.push(m);
  return m;
}

function engineOn(model: NativeModel, o: Partial<EngineOptions> = {}): LlmEngineHandle {
  return createEngine({ model, maxModelLen: MAX_MODEL_LEN, eosTokenIds: cfg.eosTokenIds, vocabSize: VOCAB, ownsModel: false, ...o });
}

async function run(engine: LlmEngineHandle, r: Req): Promise<Out> {
  const out: Out = { tokens: [], logprobs: [], prompt: null, finish: null as never };
  for await (const e of engine.generate({ promptTokens: r.prompt, params: r.params })) {
    if (e.type === 'token') {
      out.tokens.push(e.token);
      out.logprobs.push(e.logprob);
    } else if (e.type === 'prompt_logprobs') out.prompt = e.entries;
    else out.finish = e;
  }
  return out;
}

function params(o: Partial<SamplingParams>): SamplingParams {
  return { maxTokens: 8, temperature: 0, topP: 1, topK: 0, stopTokenIds: [], ignoreEos: true, logprobs: null, promptLogprobs: null, ...o };
}

/** 32 requests: prompts of 1 to 2000 tokens, some sharing a long prefix, some sampled with a seed. */
function requests(): Req[] {
  const lens = [1, 2000, 3, 16, 17, 700, 31, 32, 33, 5, 250, 64, 1, 129, 9, 1200, 48, 2, 400, 15, 90, 7, 333, 20, 1000, 11, 160, 4, 65, 600, 8, 24];
  const shared = randomTokens(300, 999, VOCAB);
  return lens.map((len, i) => {
    const own = randomTokens(len, 10 + i, VOCAB);
    // Some long requests continue a common 300-token prefix (agents sharing a system prompt).
    const prompt = i % 2 === 1 && len > 300 ? [...shared, ...own.slice(300)] : own;
    return {
      prompt,
      params: params({
        maxTokens: 3 + ((i * 7) % 14),
        temperature: i % 8 === 3 ? 0.8 : 0,
        seed: 500 + i,
        logprobs: i % 3 === 0 ? 5 : i % 3 === 1 ? 0 : null,
        promptLogprobs: i % 5 === 2 ? 3 : null,
      }),
    };
  });
}

/** Bit for bit: the token, its logprob, and each top id with its logprob (the kernels are batch-invariant). */
function expectSame(a: TokenLogprob | null, b: TokenLogprob | null, what: string): void {
  expect(a, what).toEqual(b);
}

/** A greedy token is the top-1 id of its own logprobs (argmax and top-N break ties alike, to the lower id). */
function expectGreedyConsistent(out: Out, what: string): void {
  out.logprobs.forEach((lp, k) => {
    if (lp && lp.top.length > 0) expect(lp.top[0].token, `${what} token ${k}`).toBe(out.tokens[k]);
  });
}

function compare(got: Out[], want: Out[], requests: Req[]): void {
  got.forEach((g, i) => {
    const w = want[i];
    expect(g.tokens, `request ${i} tokens`).toEqual(w.tokens);
    if (requests[i].params.temperature === 0) expectGreedyConsistent(g, `request ${i}`);
    expect(g.finish, `request ${i} finish`).toEqual(w.finish);
    g.logprobs.forEach((lp, k) => expectSame(lp, w.logprobs[k], `request ${i} token ${k}`));
    if (w.prompt === null) expect(g.prompt).toBeNull();
    else {
      expect(g.prompt).toHaveLength(w.prompt.length);
      g.prompt!.forEach((lp, k) => expectSame(lp, w.prompt![k], `request ${i} prompt position ${k}`));
    }
  });
}

let reqs: Req[] = [];
let alone: Out[] = [];

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moeserve-engine-'));
  await makeModel(dir, {
    layers: 2, hidden: 64, heads: 4, kvHeads: 2, headDim: 16, experts: 8, topK: 2, moeIntermediate: 32,
    intermediate: 96, mlpOnlyLayers: [1], vocab: VOCAB, dtype: 'bf16', seed: 21,
  });
  cfg = loadModelConfig(dir);
  reqs = requests();
  // The reference: each request alone, on a fresh engine with a roomy pool and no prefix cache.
  const model = await load(Math.ceil(MAX_MODEL_LEN / BLOCK) + 8);
  const engine = engineOn(model, { enablePrefixCaching: false });
  alone = [];
  for (const r of reqs) alone.push(await run(engine, r));
  await engine.close();
  expect(engine.stats().numPreemptions).toBe(0);
});

afterAll(() => {
  for (const m of models) m.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('engine batching with the real addon', () => {
  it('the reference itself is sane: lengths and finish reasons', () => {
    alone.forEach((o, i) => {
      expect(o.tokens).toHaveLength(reqs[i].params.maxTokens);
      expect(o.finish).toMatchObject({ reason: 'length', promptTokens: reqs[i].prompt.length });
    });
  });

  for (const caching of [false, true]) {
    it(`32 concurrent requests match one-at-a-time (chunked prefill, prefix caching ${caching ? 'on' : 'off'})`, async () => {
      const model = await load(600);
      const engine = engineOn(model, { enablePrefixCaching: caching, maxNumSeqs: 32, maxNumBatchedTokens: 256 });
      const got = await Promise.all(reqs.map((r) => run(engine, r)));
      compare(got, alone, reqs);
      const st = engine.stats();
      expect(st.kvBlocksUsed).toBe(0);
      expect(st.running + st.waiting).toBe(0);
      // Requests 5, 15 and 29 share request 1's 300-token prefix: at least one reuses its 18 full blocks.
      if (caching) expect(st.prefixCacheHits).toBeGreaterThanOrEqual(Math.floor(300 / BLOCK) * BLOCK);
      else expect(st.kvBlocksCached).toBe(0);
      await engine.close();
    });
  }

  it('a second conversation turn reuses the first turn\'s KV and matches a cold run', async () => {
    const model = await load(400);
    const cached = engineOn(model, { enablePrefixCaching: true });
    const turn1 = reqs[15];
    const first = await run(cached, turn1);
    expect(first.tokens).toEqual(alone[15].tokens);
    const turn2: Req = {
      prompt: [...turn1.prompt, ...first.tokens, ...randomTokens(50, 77, VOCAB)],
      params: params({ maxTokens: 12, logprobs: 5 }),
    };
    const before = cached.stats().prefixCacheHits;
    const warm = await run(cached, turn2);
    const hits = cached.stats().prefixCacheHits - before;
    expect(hits).toBeGreaterThanOrEqual(Math.floor(turn1.prompt.length / BLOCK) * BLOCK);
    await cached.close();
    const cold = engineOn(model, { enablePrefixCaching: false });
    compare([warm], [await run(cold, turn2)], [turn2]);
    await cold.close();
  });

  it('a KV pool small enough to force preemption still gives the same results and frees everything', async () => {
    // 170 blocks hold 2720 tokens: the longest request fits alone, the whole set is ~8000 tokens.
    const model = await load(170);
    const engine = engineOn(model, { enablePrefixCaching: false, maxNumSeqs: 32, maxNumBatchedTokens: 512 });
    const got = await Promise.all(reqs.map((r) => run(engine, r)));
    compare(got, alone, reqs);
    const st = engine.stats();
    expect(st.numPreemptions).toBeGreaterThan(0);
    expect(st.kvBlocksUsed).toBe(0);
    await engine.close();
  });
});
