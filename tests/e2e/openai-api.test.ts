// The whole path: a generated checkpoint, the real native addon and engine, the real server on
// loopback, driven by the official `openai` client.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import type { FastifyInstance } from 'fastify';
import { makeModel } from '../../src/model/make-model.ts';
import { loadServedModel, type LoadedModel } from '../../src/cli/load-model.ts';
import { buildApp } from '../../src/server/app.ts';
import { listenLoopback } from '../helpers/loopback.ts';

const MODEL = 'tiny-moe';
const API_KEY = 'sk-e2e-secret';
let dir: string;
let loaded: LoadedModel;
let app: FastifyInstance;
let keyed: FastifyInstance;
let client: OpenAI;
let baseURL: string;

async function listen(server: FastifyInstance): Promise<string> {
  return `${await listenLoopback(server)}/v1`;
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moeserve-e2e-'));
  // A dense first layer and top-2 routing; the real Qwen3 vocabulary, so the chat template's tokens exist.
  await makeModel(dir, { seed: 7, layers: 3, hidden: 64, heads: 4, kvHeads: 2, headDim: 16, experts: 8, topK: 2, mlpOnlyLayers: [0], maxPositionEmbeddings: 1024 });
  loaded = await loadServedModel({ dir, threads: 2, kvCacheGiB: 0.25, generationConfig: 'vllm' });
  const common = { engine: loaded.engine, tokenizer: loaded.tokenizer, template: loaded.template, servedModelName: MODEL, vocabSize: loaded.config.native.vocabSize };
  app = buildApp(common);
  keyed = buildApp({ ...common, apiKey: API_KEY });
  baseURL = await listen(app);
  client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0 });
});

afterAll(async () => {
  await app?.close();
  await keyed?.close();
  await loaded?.engine.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const greedy = { model: MODEL, temperature: 0 } as const;

describe('OpenAI API over the real engine', () => {
  it('lists the model with its context length', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual([MODEL]);
    expect((models.data[0] as unknown as { max_model_len: number }).max_model_len).toBe(1024);
  });

  it('chat: streamed deltas concatenate to the non-streamed greedy reply; usage adds up', async () => {
    const messages = [{ role: 'system' as const, content: 'You are a test.' }, { role: 'user' as const, content: 'Say something in 日本語 🎉' }];
    const full = await client.chat.completions.create({ ...greedy, messages, max_tokens: 24 });
    const choice = full.choices[0];
    expect(choice.message.role).toBe('assistant');
    expect(choice.finish_reason).toBe('length');
    expect(full.usage!.completion_tokens).toBe(24);
    const expectedPrompt = loaded.tokenizer.encode(loaded.template!.render(messages)).length;
    expect(full.usage!.prompt_tokens).toBe(expectedPrompt);
    expect(full.usage!.total_tokens).toBe(expectedPrompt + 24);

    const stream = await client.chat.completions.create({ ...greedy, messages, max_tokens: 24, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        text += c.delta.content ?? '';
        finish = c.finish_reason ?? finish;
      }
    }
    expect(text).toBe(choice.message.content);
    expect(text.length).toBeGreaterThan(0);
    expect(finish).toBe('length');
    expect(usage).toEqual(full.usage);
  });

  it('completions: streamed text equals non-streamed text, for a string prompt and for token ids', async () => {
    for (const prompt of ['The quick brown fox', loaded.tokenizer.encode('The quick brown fox')]) {
      const full = await client.completions.create({ ...greedy, prompt, max_tokens: 20 });
      const stream = await client.completions.create({ ...greedy, prompt, max_tokens: 20, stream: true });
      let text = '';
      for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
      expect(text).toBe(full.choices[0].text);
      expect(full.usage).toMatchObject({ prompt_tokens: 4, completion_tokens: 20, total_tokens: 24 });
    }
  });

  it('echo + logprobs with a token-id prompt: prompt first, first logprob null, lengths match, prompt logprobs agree with decode', async () => {
    const promptIds = loaded.tokenizer.encode('Prompt logprobs: 世界 and more words');
    const gen = await client.completions.create({ ...greedy, prompt: promptIds, max_tokens: 6, logprobs: 3 });
    const genLp = gen.choices[0].logprobs!;
    expect(genLp.tokens).toHaveLength(6);
    // Greedy: each chosen token is the best of its top_logprobs.
    genLp.top_logprobs!.forEach((top, i) => {
      expect(Math.max(...Object.values(top!))).toBeCloseTo(genLp.token_logprobs![i]!, 5);
    });

    const echo = await client.completions.create({ ...greedy, prompt: promptIds, max_tokens: 2, logprobs: 3, echo: true });
    const lp = echo.choices[0].logprobs!;
    const total = promptIds.length + 2;
    expect(lp.tokens).toHaveLength(total);
    expect(lp.token_logprobs).toHaveLength(total);
    expect(lp.top_logprobs).toHaveLength(total);
    expect(lp.text_offset).toHaveLength(total);
    expect(lp.token_logprobs![0]).toBeNull();
    expect(lp.top_logprobs![0]).toBeNull();
    expect(lp.tokens!.slice(0, promptIds.length)).toEqual(promptIds.map((id) => loaded.tokenizer.tokenText(id)));
    expect(echo.choices[0].text.startsWith(loaded.tokenizer.decode(promptIds))).toBe(true);
    for (let i = 1; i < total; i++) {
      expect(lp.token_logprobs![i]).toBeLessThanOrEqual(0);
      expect(Object.keys(lp.top_logprobs![i]!).length).toBeGreaterThanOrEqual(3);
    }

    // Teacher forcing: the prompt + its greedy continuation, echoed, scores the continuation's tokens
    // (prefill) as decoding did, one token at a time.
    const genIds = (await client.completions.create({
      ...greedy, prompt: promptIds, max_tokens: 6, logprobs: 0, return_tokens_as_token_ids: true,
    } as OpenAI.CompletionCreateParamsNonStreaming)).choices[0].logprobs!.tokens!.map((t) => Number(t.slice('token_id:'.length)));
    const scored = await client.completions.create({ ...greedy, prompt: [...promptIds, ...genIds], max_tokens: 1, logprobs: 0, echo: true });
    const forced = scored.choices[0].logprobs!.token_logprobs!.slice(promptIds.length, promptIds.length + 6);
    forced.forEach((value, i) => expect(value!).toBeCloseTo(genLp.token_logprobs![i]!, 3));
  });

  it('echo with max_tokens 0 scores the prompt only', async () => {
    const promptIds = loaded.tokenizer.encode('score this prompt');
    const res = await client.completions.create({ ...greedy, prompt: promptIds, max_tokens: 0, echo: true, logprobs: 1 });
    expect(res.choices[0].text).toBe('score this prompt');
    expect(res.choices[0].logprobs!.tokens).toHaveLength(promptIds.length);
    expect(res.choices[0].logprobs!.token_logprobs![0]).toBeNull();
  });

  it('return_tokens_as_token_ids renders token_id:N consistent with the token strings', async () => {
    const prompt = 'Token ids please';
    const plain = await client.completions.create({ ...greedy, prompt, max_tokens: 5, logprobs: 1 });
    const ids = await client.completions.create({ ...greedy, prompt, max_tokens: 5, logprobs: 1, return_tokens_as_token_ids: true } as OpenAI.CompletionCreateParamsNonStreaming);
    const tokens = ids.choices[0].logprobs!.tokens!;
    expect(tokens.every((t) => /^token_id:\d+$/.test(t))).toBe(true);
    expect(tokens.map((t) => loaded.tokenizer.tokenText(Number(t.slice(9))))).toEqual(plain.choices[0].logprobs!.tokens);
    expect(ids.choices[0].text).toBe(plain.choices[0].text);
    const chat = await client.chat.completions.create({
      ...greedy, messages: [{ role: 'user', content: 'hi' }], max_tokens: 3, logprobs: true, top_logprobs: 2, return_tokens_as_token_ids: true,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const content = chat.choices[0].logprobs!.content!;
    expect(content).toHaveLength(3);
    expect(content.every((c) => /^token_id:\d+$/.test(c.token) && c.top_logprobs.length === 2)).toBe(true);
  });

  it('stop strings end generation before the stop text, streamed or not', async () => {
    const prompt = 'Stop strings are tested here';
    const base = (await client.completions.create({ ...greedy, prompt, max_tokens: 30 })).choices[0].text;
    // A stop string from the middle of the greedy text, likely spanning a token boundary.
    const k = Math.floor(base.length / 2);
    const stop = base.slice(k, k + 3);
    const at = base.indexOf(stop);
    const res = await client.completions.create({ ...greedy, prompt, max_tokens: 30, stop });
    expect(res.choices[0].text).toBe(base.slice(0, at));
    expect(res.choices[0].finish_reason).toBe('stop');
    const stream = await client.completions.create({ ...greedy, prompt, max_tokens: 30, stop: [stop], stream: true });
    let text = '';
    let finish: string | null = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(text).toBe(base.slice(0, at));
    expect(finish).toBe('stop');
  });

  it('same seed, same sample; concurrent requests give what they give alone', async () => {
    const sampled = { model: MODEL, prompt: 'Random', max_tokens: 12, temperature: 1, seed: 1234 };
    const a = await client.completions.create(sampled);
    const b = await client.completions.create(sampled);
    expect(a.choices[0].text).toBe(b.choices[0].text);
    const prompts = ['one', 'two two', 'three three three', 'four'];
    const alone: string[] = [];
    for (const prompt of prompts) alone.push((await client.completions.create({ ...greedy, prompt, max_tokens: 10 })).choices[0].text);
    const together = await Promise.all(prompts.map((prompt) => client.completions.create({ ...greedy, prompt, max_tokens: 10 })));
    expect(together.map((r) => r.choices[0].text)).toEqual(alone);
  });

  it('errors come back as OpenAI errors: 404 unknown model, 400 too long, 401 without the key', async () => {
    await expect(client.completions.create({ model: 'nope', prompt: 'x' })).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    const tooLong = client.completions.create({ ...greedy, prompt: 'x', max_tokens: 5000 });
    await expect(tooLong).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    await expect(tooLong).rejects.toThrow(/maximum context length is 1024 tokens/);
    const keyedURL = await listen(keyed);
    const wrong = new OpenAI({ baseURL: keyedURL, apiKey: 'sk-wrong', maxRetries: 0 });
    await expect(wrong.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    await expect(wrong.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }] })).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    const right = new OpenAI({ baseURL: keyedURL, apiKey: API_KEY, maxRetries: 0 });
    const ok = await right.completions.create({ ...greedy, prompt: 'x', max_tokens: 2 });
    expect(ok.usage!.completion_tokens).toBe(2);
  });

  it('a client that stops reading a stream aborts its request in the engine', async () => {
    const before = loaded.engine.stats().generationTokens;
    const stream = await client.completions.create({ ...greedy, prompt: 'long', max_tokens: 1000, stream: true });
    let chunks = 0;
    for await (const _chunk of stream) {
      if (++chunks === 3) break; // closes the connection
    }
    await expect.poll(() => loaded.engine.stats().running + loaded.engine.stats().waiting, { timeout: 5000 }).toBe(0);
    expect(loaded.engine.stats().kvBlocksUsed).toBe(0);
    expect(loaded.engine.stats().generationTokens - before).toBeLessThan(1000);
  });
});
