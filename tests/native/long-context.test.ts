// A 32K-token prompt served through the real engine (chunked prefill under the default token budget,
// paged KV over 2048+ blocks) on a generated model, then greedy decoding with top-5 logprobs; llama.cpp,
// teacher-forced on the same weights (F32 GGUF) over prompt + generated tokens, must agree at those last
// positions: the same top-1 (= our greedy token) and logprobs within 0.02 nats. That is the exact mode (f32
// activations and KV cache, as the reference). Then the server's default bf16 arithmetic (bf16 activations and
// KV cache) against llama.cpp's own on the same weights (BF16 GGUF, BF16 KV cache): the same top-1, and within
// BF16_MEAN_TOLERANCE on average (llama-parity-bf16.test.ts says why two bf16 computations are not held to 0.02
// nats; here, with attention sharpened over 32K keys, measured: mean 2.7e-2, max 0.11; the exact mode against the same reference: mean 3.5e-2, max 0.13).
//
// Sharper attention: make-model's q_norm/k_norm weights (≈1) give attention scores of std ≈1, so over
// 32K keys the softmax is nearly flat and any single block of the prompt moves the last logprobs by
// ~0.01 nats — under the tolerance, so a wrong block table or RoPE angle far back would pass unseen.
// Scaling both norms by QK_SHARPEN (exact in bf16) gives scores of std ≈QK_SHARPEN², so a few keys
// anywhere in the 32K dominate each query and the result hinges on the KV of distant positions.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine, DEFAULT_MAX_NUM_BATCHED_TOKENS, type LlmEngineHandle } from '../../src/engine/engine.ts';
import type { EngineEvent, TokenLogprob } from '../../src/engine/types.ts';
import { convertToGguf } from '../../src/gguf/convert.ts';
import { readCheckpointTensors, readTensorF32 } from '../../src/gguf/safetensors-reader.ts';
import { loadModelConfig, type ModelConfig } from '../../src/model/config.ts';
import type { MakeModelOptions } from '../../src/model/make-model.ts';
import { encodeF32 } from '../../src/model/safetensors-writer.ts';
import type { NativeModel } from '../../src/native/addon-types.ts';
import { loadAddon } from '../../src/native/load-addon.ts';
import { llamaTeacherForced } from '../helpers/llama-reference.ts';
import { copyModelDir, removeTempDir, testModel } from '../helpers/model-fixtures.ts';
import { randomTokens } from '../helpers/native-steps.ts';

const PROMPT_TOKENS = 32768;
const GENERATED = 4;
const TOP = 5;
const TOLERANCE = 0.02;
const BLOCK = 16;
const QK_SHARPEN = 2;
const BF16_MEAN_TOLERANCE = 0.04;
const MAX_MODEL_LEN = PROMPT_TOKENS + 64;
const OPTS: MakeModelOptions = {
  layers: 2, hidden: 64, heads: 4, kvHeads: 2, headDim: 16, experts: 8, topK: 2, moeIntermediate: 32,
  dtype: 'bf16', seed: 32, maxPositionEmbeddings: 40960,
};
// On 2 cores: ~40 s for our prefill and ~75 s for llama.cpp's, ~2.5 min for the file (see bench/README.md).
const SLOW_TEST_MS = 20 * 60_000;

/** Multiplies every q_norm/k_norm weight in place (a power of two, so bf16 stays exact). */
function sharpenAttention(dir: string, factor: number): void {
  let n = 0;
  for (const [name, t] of readCheckpointTensors(dir)) {
    if (!/\.self_attn\.[qk]_norm\.weight$/.test(name)) continue;
    const scaled = readTensorF32(t).map((x) => x * factor);
    const fd = fs.openSync(t.file, 'r+');
    try {
      fs.writeSync(fd, encodeF32(scaled, t.dtype), 0, t.byteLength, t.offset);
    } finally {
      fs.closeSync(fd);
    }
    n++;
  }
  if (n !== 2 * OPTS.layers!) throw new Error(`expected ${2 * OPTS.layers!} q/k norm tensors, found ${n}`);
}

interface Served {
  tokens: number[];
  logprobs: TokenLogprob[];
  finish: EngineEvent & { type: 'finish' };
  prefillMs: number;
  totalMs: number;
}

let dir = '';
let cfg: ModelConfig;
let model: NativeModel | undefined;
let engine: LlmEngineHandle | undefined;
const prompt = randomTokens(PROMPT_TOKENS, 7);
let served: Served | undefined;

beforeAll(async () => {
  dir = copyModelDir(await testModel(OPTS), 'long-context');
  sharpenAttention(dir, QK_SHARPEN);
  await convertToGguf(dir, path.join(dir, 'model.gguf'), { weightType: 'f32' });
  cfg = loadModelConfig(dir);
  expect(cfg.maxPositionEmbeddings).toBeGreaterThanOrEqual(MAX_MODEL_LEN);
  model = await loadAddon().loadModel({
    files: cfg.files, config: cfg.native, threads: 2, kvBlocks: Math.ceil(MAX_MODEL_LEN / BLOCK), blockSize: BLOCK, kvCacheDtype: 'f32',
    activations: 'f32',
  });
  // The default token budget: the prompt goes in PROMPT_TOKENS / 2048 chunks.
  engine = createEngine({ model, maxModelLen: MAX_MODEL_LEN, eosTokenIds: cfg.eosTokenIds, vocabSize: cfg.native.vocabSize });
});

afterAll(async () => {
  await engine?.close();
  if (dir) removeTempDir(dir);
});

describe('the llama.cpp reference for long prompts', () => {
  it('gives the same last positions in 1024-token batches as the whole sequence in one batch', async () => {
    const tokens = randomTokens(2500, 8);
    const gguf = path.join(dir, 'model.gguf');
    const whole = await llamaTeacherForced(gguf, tokens, TOP, { batchSize: tokens.length, lastPositions: 3 });
    const split = await llamaTeacherForced(gguf, tokens, TOP, { lastPositions: 3 });
    expect(split.start).toBe(tokens.length - 3);
    expect(split.top).toHaveLength(3);
    split.top.forEach((got, k) => {
      const want = whole.top[k]!;
      expect(got.map((t) => t.token)).toEqual(want.map((t) => t.token));
      got.forEach((t, j) => expect(Math.abs(t.logprob - want[j]!.logprob)).toBeLessThan(1e-3));
    });
  }, SLOW_TEST_MS);
});

/** The prompt then GENERATED greedy tokens with top-TOP logprobs, timed. */
async function serveGreedy(eng: LlmEngineHandle): Promise<Served> {
  const t0 = performance.now();
  let prefillMs = 0;
  const tokens: number[] = [];
  const logprobs: TokenLogprob[] = [];
  let finish: Served['finish'] | undefined;
  const params = {
    maxTokens: GENERATED, temperature: 0, topP: 1, topK: 0, stopTokenIds: [], ignoreEos: true, logprobs: TOP, promptLogprobs: null,
  };
  for await (const e of eng.generate({ promptTokens: prompt, params })) {
    if (e.type === 'token') {
      if (tokens.length === 0) prefillMs = performance.now() - t0;
      tokens.push(e.token);
      expect(e.logprob).not.toBeNull();
      logprobs.push(e.logprob!);
    } else if (e.type === 'finish') finish = e;
  }
  return { tokens, logprobs, finish: finish!, prefillMs, totalMs: performance.now() - t0 };
}

describe(`a ${PROMPT_TOKENS}-token prompt`, () => {
  it('is served by the engine in chunked prefill steps, then decoded greedily', async () => {
    served = await serveGreedy(engine!);
    const { tokens, logprobs, finish, prefillMs, totalMs } = served;
    console.log(
      `long context: ${PROMPT_TOKENS}-token prefill ${(prefillMs / 1000).toFixed(1)} s ` +
        `(${((PROMPT_TOKENS * 1000) / prefillMs).toFixed(0)} tok/s), ${GENERATED - 1} decode steps ` +
        `${((totalMs - prefillMs) / (GENERATED - 1)).toFixed(0)} ms each, KV ${((model!.kvBytesPerToken * PROMPT_TOKENS) / 2 ** 20).toFixed(1)} MiB`,
    );
    expect(finish).toEqual({ type: 'finish', reason: 'length', promptTokens: PROMPT_TOKENS, completionTokens: GENERATED });
    expect(tokens).toHaveLength(GENERATED);
    for (const lp of logprobs) {
      expect(lp.top).toHaveLength(TOP);
      expect(lp.top[0]!.token).toBe(lp.token);
    }
    const st = engine!.stats();
    // One sequence under a 2048-token budget: one step per chunk, then one per further token.
    expect(st.steps).toBe(Math.ceil(PROMPT_TOKENS / DEFAULT_MAX_NUM_BATCHED_TOKENS) + GENERATED - 1);
    expect(st.kvBlocksUsed).toBe(0);
    expect(st.running + st.waiting).toBe(0);
  }, SLOW_TEST_MS);

  it('matches llama.cpp at its last positions (top-1 and top-5 logprobs within 0.02 nats)', async () => {
    expect(served, 'the engine run above must have succeeded').toBeDefined();
    const { tokens, logprobs } = served!;
    const t0 = performance.now();
    // Position PROMPT_TOKENS - 1 + k predicts generated token k.
    const ref = await llamaTeacherForced(path.join(dir, 'model.gguf'), [...prompt, ...tokens.slice(0, -1)], TOP, { lastPositions: GENERATED });
    console.log(`long context: llama.cpp teacher-forced ${PROMPT_TOKENS + GENERATED - 1} tokens in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    expect(ref.start).toBe(PROMPT_TOKENS - 1);
    expect(ref.top).toHaveLength(GENERATED);
    let maxDiff = 0;
    ref.top.forEach((want, k) => {
      const got = logprobs[k]!;
      const at = `generated token ${k}`;
      expect(got.token, `${at}: top-1`).toBe(want[0]!.token);
      const floor = got.top[TOP - 1]!.logprob;
      for (const w of want) {
        const mine = got.top.find((t) => t.token === w.token);
        // A reference token may fall out of our top-5 only at the edge, within tolerance.
        if (!mine) {
          expect(w.logprob, `${at}: token ${w.token} missing from our top-${TOP}`).toBeLessThan(floor + TOLERANCE);
          continue;
        }
        const d = Math.abs(mine.logprob - w.logprob);
        maxDiff = Math.max(maxDiff, d);
        expect(d, `${at}: token ${w.token}`).toBeLessThanOrEqual(TOLERANCE);
      }
    });
    console.log(`long context: max |Δlogprob| vs llama.cpp ${maxDiff.toExponential(2)} over ${GENERATED} positions`);
  }, SLOW_TEST_MS);
});

describe(`the ${PROMPT_TOKENS}-token prompt in the default bf16 arithmetic`, () => {
  it("matches llama.cpp's bf16 arithmetic at its last positions (top-1, and top-5 logprobs within 0.02 nats on average)", async () => {
    await convertToGguf(dir, path.join(dir, 'model-bf16.gguf'), { weightType: 'bf16' });
    const bf16 = await loadAddon().loadModel({
      files: cfg.files, config: cfg.native, threads: 2, kvBlocks: Math.ceil(MAX_MODEL_LEN / BLOCK), blockSize: BLOCK, kvCacheDtype: 'bf16',
      activations: 'bf16',
    });
    const eng = createEngine({ model: bf16, maxModelLen: MAX_MODEL_LEN, eosTokenIds: cfg.eosTokenIds, vocabSize: cfg.native.vocabSize });
    const { tokens, logprobs } = await serveGreedy(eng).finally(() => eng.close());
    expect(tokens).toHaveLength(GENERATED);
    const ref = await llamaTeacherForced(path.join(dir, 'model-bf16.gguf'), [...prompt, ...tokens.slice(0, -1)], TOP, {
      lastPositions: GENERATED, kvCache: 'BF16',
    });
    const distance = (ours: TokenLogprob[]) => {
      let sum = 0, n = 0, max = 0;
      ref.top.forEach((want, k) => {
        for (const w of want) {
          const mine = ours[k]!.top.find((t) => t.token === w.token);
          if (!mine) continue;
          const d = Math.abs(mine.logprob - w.logprob);
          sum += d, n++, max = Math.max(max, d);
        }
      });
      return { mean: sum / n, max };
    };
    const show = (d: { mean: number; max: number }) => `mean |Δlogprob| ${d.mean.toExponential(2)}, max ${d.max.toExponential(2)}`;
    ref.top.forEach((want, k) => expect(logprobs[k]!.token, `generated token ${k}: top-1`).toBe(want[0]!.token));
    // The exact run above, where it generated the same tokens, against the same bf16 reference, for scale.
    const exact = served && served.tokens.join() === tokens.join() ? `; the exact mode ${show(distance(served.logprobs))}` : '';
    const mine = distance(logprobs);
    console.log(`long context, bf16 arithmetic against llama.cpp's: ${show(mine)} over ${GENERATED} positions${exact}`);
    expect(mine.mean).toBeLessThanOrEqual(BF16_MEAN_TOLERANCE);
  }, SLOW_TEST_MS);
});
