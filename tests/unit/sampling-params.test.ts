// OpenAI/vLLM request fields → SamplingParams (vLLM semantics), and the HTTP validation of every
// sampling field, driven with app.inject() over a scripted engine (no model needed).
import fs from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/server/app.ts';
import { OPENAI_DEFAULTS, parseLogitBias, samplingParams, type Limits } from '../../src/server/sampling.ts';
import { ApiError } from '../../src/server/errors.ts';
import { createTokenizer, type TextTokenizer } from '../../src/chat/tokenizer.ts';
import { createChatTemplate } from '../../src/chat/template.ts';
import { qwen3TokenizerFile } from '../../src/model/tokenizer-files.ts';
import { ScriptedEngine } from './server-scripted-engine.ts';

const limits: Limits = { maxModelLen: 4096, vocabSize: 1000, eosTokenIds: [999], defaults: OPENAI_DEFAULTS, maxChoicesPerRequest: 1024 };
const map = (body: Record<string, unknown>, seedOffset = 0, l: Limits = limits) =>
  samplingParams(body, l, { maxTokens: 16, logprobs: null, promptLogprobs: null, seedOffset });

describe('samplingParams', () => {
  it('maps neutral requests to plain params with no processing fields', () => {
    const p = map({ presence_penalty: 0, frequency_penalty: 0, repetition_penalty: 1, min_p: 0, logit_bias: {}, min_tokens: 0 });
    expect(p).toEqual({
      maxTokens: 16, temperature: 1, topP: 1, topK: 0, seed: undefined, stopTokenIds: [999], ignoreEos: false, logprobs: null, promptLogprobs: null,
    });
  });

  it('follows vLLM: top_k -1 and 0 are off, tiny temperatures are greedy, small ones raised to 0.01', () => {
    expect(map({ top_k: -1 }).topK).toBe(0);
    expect(map({ top_k: 0 }).topK).toBe(0);
    expect(map({ top_k: 40 }).topK).toBe(40);
    expect(map({ top_k: 1e30 }).topK).toBe(0); // the whole vocabulary or more: no limit
    expect(map({ temperature: 0 }).temperature).toBe(0);
    expect(map({ temperature: 1e-6 }).temperature).toBe(0);
    expect(map({ temperature: 0.001 }).temperature).toBe(0.01);
    expect(map({ temperature: 0.7 }).temperature).toBe(0.7);
    expect(map({ top_p: 1e-300 }).topP).toBeGreaterThan(0);
    expect(Math.fround(map({ top_p: 1e-300 }).topP)).toBeGreaterThan(0);
  });

  it('passes penalties, min_p, logit_bias and min_tokens through', () => {
    const p = map({ presence_penalty: 1.1, frequency_penalty: -0.5, repetition_penalty: 1.05, min_p: 0.1, logit_bias: { '12': 100, ' 7 ': -100, '012': 5 }, min_tokens: 3 });
    expect(p).toMatchObject({ presencePenalty: 1.1, frequencyPenalty: -0.5, repetitionPenalty: 1.05, minP: 0.1, minTokens: 3, logitBias: { 12: 5, 7: -100 } });
  });

  it('n > 1 with a seed: choice i uses seed + i, staying a safe integer', () => {
    expect([0, 1, 2].map((i) => map({ seed: 42 }, i).seed)).toEqual([42, 43, 44]);
    const max = Number.MAX_SAFE_INTEGER;
    const seeds = [0, 1, 2].map((i) => map({ seed: max - 1 }, i).seed!);
    expect(new Set(seeds).size).toBe(3);
    expect(seeds.every(Number.isSafeInteger)).toBe(true);
    expect(map({}, 1).seed).toBeUndefined();
  });

  it('model defaults (generation_config) apply to fields the request leaves out', () => {
    const withDefaults = { ...limits, defaults: { temperature: 0.6, topP: 0.95, topK: 20, minP: 0.05, repetitionPenalty: 1.1 } };
    expect(map({}, 0, withDefaults)).toMatchObject({ temperature: 0.6, topP: 0.95, topK: 20, minP: 0.05, repetitionPenalty: 1.1 });
    const p = map({ temperature: 0, min_p: 0, repetition_penalty: 1, top_k: -1 }, 0, withDefaults);
    expect(p).toMatchObject({ temperature: 0, topK: 0 });
    expect(p.minP).toBeUndefined();
    expect(p.repetitionPenalty).toBeUndefined();
  });

  it('ignore_eos drops EOS from the stop ids; stop_token_ids are kept; min_tokens may not exceed the tokens to generate', () => {
    expect(map({ ignore_eos: true, stop_token_ids: [5, 5, 6] }).stopTokenIds).toEqual([5, 6]);
    expect(map({ stop_token_ids: [5] }).stopTokenIds).toEqual([5, 999]);
    expect(() => map({ min_tokens: 17 })).toThrow(/min_tokens \(17\) must be at most .*16/);
  });

  it('logit_bias: token-id keys in the vocabulary, values in [-100, 100]', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ abc: 1 }, /'abc' is not a token id/],
      [{ '-1': 1 }, /'-1' is not a token id/],
      [{ '1.5': 1 }, /'1.5' is not a token id/],
      [{ '1000': 1 }, /'1000' is not a token id in \[0, 1000\)/],
      [{ '3': 100.5 }, /between -100 and 100, got 100.5/],
      [{ '3': '5' }, /got "5"/],
      [{ '3': null }, /got null/],
    ];
    for (const [bias, message] of bad) {
      let err: unknown;
      try {
        parseLogitBias(bias, 1000);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ApiError);
      expect(err).toMatchObject({ status: 400, param: 'logit_bias' });
      expect((err as Error).message).toMatch(message);
    }
    expect(parseLogitBias(null, 10)).toBeUndefined();
    expect(parseLogitBias({}, 10)).toBeUndefined();
  });
});

describe('HTTP validation of the sampling fields', () => {
  let tokenizer: TextTokenizer;
  let engine: ScriptedEngine;
  let app: FastifyInstance;

  beforeAll(() => {
    const config = JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer_config.json'), 'utf8'));
    tokenizer = createTokenizer(JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer.json'), 'utf8')), config);
    engine = new ScriptedEngine(tokenizer.encode('Hello there, friend.'), { maxModelLen: 256 });
    app = buildApp({ engine, tokenizer, template: createChatTemplate(config), servedModelName: 'tiny', apiKey: 'sk-test', bodyLimit: 64 * 1024 });
  });

  const auth = { authorization: 'Bearer sk-test' };
  const post = (url: string, payload: unknown, headers: Record<string, string> = auth) =>
    app.inject({ method: 'POST', url, payload: payload as object, headers });

  async function expectError(url: string, body: unknown, status: number, param: string | null, message: RegExp) {
    const res = await post(url, body);
    expect(res.statusCode, JSON.stringify(body).slice(0, 200)).toBe(status);
    const json = res.json();
    expect(Object.keys(json)).toEqual(['error']);
    expect(json.error).toMatchObject({ param, code: status, type: expect.any(String) });
    expect(json.error.message).toMatch(message);
  }

  it('names the sampling parameter that is out of range or of the wrong type, on both endpoints', async () => {
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ presence_penalty: 2.5 }, 'presence_penalty', /<= 2/],
      [{ frequency_penalty: -3 }, 'frequency_penalty', />= -2/],
      [{ frequency_penalty: 'NaN' }, 'frequency_penalty', /number/],
      [{ repetition_penalty: 0 }, 'repetition_penalty', /> 0/],
      [{ min_p: 1.5 }, 'min_p', /<= 1/],
      [{ min_p: -0.1 }, 'min_p', />= 0/],
      [{ top_k: -2 }, 'top_k', />= -1/],
      [{ top_k: 1.5 }, 'top_k', /integer/],
      [{ top_p: 1.01 }, 'top_p', /<= 1/],
      [{ temperature: '0.7' }, 'temperature', /number/],
      [{ seed: 1.5 }, 'seed', /integer/],
      [{ seed: 2 ** 60 }, 'seed', /<=/],
      [{ n: 0 }, 'n', />= 1/],
      [{ min_tokens: -1 }, 'min_tokens', />= 0/],
      [{ min_tokens: 5, max_tokens: 2 }, 'min_tokens', /at most/],
      [{ logit_bias: { x: 1 } }, 'logit_bias', /not a token id/],
      [{ logit_bias: { 151669: 1 } }, 'logit_bias', /not a token id in \[0, 151669\)/],
      [{ logit_bias: { 5: 1000 } }, 'logit_bias', /between -100 and 100/],
      [{ logit_bias: [1, 2] }, 'logit_bias', /object/],
      [{ stop_token_ids: [-1] }, 'stop_token_ids', /not a token id/],
      [{ stop_token_ids: 'x' }, 'stop_token_ids', /./],
      [{ stop: [1] }, 'stop', /a string or an array of strings/],
      [{ ignore_eos: 'yes' }, 'ignore_eos', /boolean/],
      [{ stream_options: { include_usage: 'y' } }, 'stream_options', /./],
    ];
    for (const [fields, param, message] of cases) {
      await expectError('/v1/completions', { prompt: 'x', ...fields }, 400, param, message);
      await expectError('/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], ...fields }, 400, param, message);
    }
    await expectError('/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], top_logprobs: 21, logprobs: true }, 400, 'top_logprobs', /<= 20/);
    await expectError('/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], max_completion_tokens: 0 }, 400, 'max_completion_tokens', />= 1/);
  });

  it('accepts the full set on both endpoints and hands it to the engine', async () => {
    const fields = {
      temperature: 0.7, top_p: 0.95, top_k: 20, min_p: 0.05, presence_penalty: 1.1, frequency_penalty: 0.2, repetition_penalty: 1.05,
      logit_bias: { 9707: 5 }, seed: 7, stop: ['\n<tool_response>', '<tool_response>'], stop_token_ids: [151643], min_tokens: 1, max_tokens: 3, ignore_eos: false,
    };
    const expected = { temperature: 0.7, topP: 0.95, topK: 20, presencePenalty: 1.1, frequencyPenalty: 0.2, logitBias: { 9707: 5 }, seed: 7, minTokens: 1, maxTokens: 3 };
    expect((await post('/v1/completions', { prompt: 'x', ...fields })).statusCode).toBe(200);
    expect(engine.requests.at(-1)!.params).toMatchObject(expected);
    expect((await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], ...fields })).statusCode).toBe(200);
    expect(engine.requests.at(-1)!.params).toMatchObject(expected);
    expect(engine.requests.at(-1)!.params.minP).toBeCloseTo(0.05);
    expect(engine.requests.at(-1)!.params.repetitionPenalty).toBeCloseTo(1.05);
  });

  it('max_completion_tokens wins over max_tokens in chat', async () => {
    const res = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], max_tokens: 9, max_completion_tokens: 2 });
    expect(res.statusCode).toBe(200);
    expect(engine.requests.at(-1)!.params.maxTokens).toBe(2);
  });
});

describe('/tokenize and /detokenize', () => {
  let tokenizer: TextTokenizer;
  let app: FastifyInstance;
  let config: Record<string, unknown>;

  beforeAll(() => {
    config = JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer_config.json'), 'utf8'));
    tokenizer = createTokenizer(JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer.json'), 'utf8')), config);
    const engine = new ScriptedEngine([1], { maxModelLen: 256 });
    app = buildApp({ engine, tokenizer, template: createChatTemplate(config), servedModelName: ['tiny', 'alias'], apiKey: 'sk-test' });
  });

  // Not behind the API key: vLLM protects /v1 routes only.
  const post = (url: string, payload: unknown) => app.inject({ method: 'POST', url, payload: payload as object });

  it('tokenizes a prompt as the tokenizer does, with token strings on request', async () => {
    const text = 'Hello 世界 <tool_call> 🎉';
    const res = await post('/tokenize', { model: 'alias', prompt: text, return_token_strs: true });
    expect(res.statusCode).toBe(200);
    const ids = tokenizer.encode(text);
    expect(res.json()).toEqual({ count: ids.length, max_model_len: 256, tokens: ids, token_strs: ids.map((id) => tokenizer.tokenText(id)) });
    expect((await post('/tokenize', { prompt: text })).json().token_strs).toBeNull();
  });

  it('tokenizes chat messages through the template, as chat completions renders them', async () => {
    const messages = [{ role: 'system', content: 'sys' }, { role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] }];
    const template = createChatTemplate(config)!;
    const flat = [{ role: 'system', content: 'sys' }, { role: 'user', content: 'a\nb' }];
    const res = (await post('/tokenize', { messages })).json();
    expect(res.tokens).toEqual(tokenizer.encode(template.render(flat, { addGenerationPrompt: true })));
    const noGen = (await post('/tokenize', { messages, add_generation_prompt: false })).json();
    expect(noGen.tokens).toEqual(tokenizer.encode(template.render(flat, { addGenerationPrompt: false })));
    expect(noGen.count).toBeLessThan(res.count);
    const tools = [{ type: 'function', function: { name: 'search', parameters: { type: 'object', properties: { q: { type: 'string' } } } } }];
    const withTools = (await post('/tokenize', { messages, tools })).json();
    expect(tokenizer.decode(withTools.tokens)).toContain('"name": "search"');
  });

  it('detokenizes back to the text', async () => {
    const ids = tokenizer.encode('round trip ✓ <|im_end|>');
    expect((await post('/detokenize', { tokens: ids })).json()).toEqual({ prompt: 'round trip ✓ <|im_end|>' });
    expect((await post('/detokenize', { tokens: [] })).json()).toEqual({ prompt: '' });
  });

  it('answers bad requests in the OpenAI error shape', async () => {
    const cases: [string, unknown, number, string | null, RegExp][] = [
      ['/tokenize', {}, 400, 'prompt', /exactly one of 'prompt' and 'messages'/],
      ['/tokenize', { prompt: 'x', messages: [{ role: 'user', content: 'x' }] }, 400, 'messages', /exactly one/],
      ['/tokenize', { prompt: 5 }, 400, 'prompt', /string/],
      ['/tokenize', { messages: [] }, 400, 'messages', /fewer than 1/],
      ['/tokenize', { model: 'gpt-4', prompt: 'x' }, 404, 'model', /does not exist/],
      ['/tokenize', { messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'nope' }] }, 400, 'tools[0].type', /function/],
      ['/detokenize', {}, 400, 'tokens', /required/],
      ['/detokenize', { tokens: [1, 'a'] }, 400, 'tokens[1]', /integer/],
      ['/detokenize', { tokens: [1, 151669] }, 400, 'tokens', /tokens\[1\] = 151669 is not a token id/],
      ['/detokenize', { model: 'nope', tokens: [1] }, 404, 'model', /does not exist/],
    ];
    for (const [url, body, status, param, message] of cases) {
      const res = await post(url, body);
      expect(res.statusCode, `${url} ${JSON.stringify(body)}`).toBe(status);
      expect(res.json().error).toMatchObject({ param, code: status });
      expect(res.json().error.message).toMatch(message);
    }
  });
});

describe('bodies no handler should see', () => {
  it('413 for an over-long body and 400 for one nested too deep, both OpenAI-shaped and naming what they can', async () => {
    const config = JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer_config.json'), 'utf8'));
    const tokenizer = createTokenizer(JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer.json'), 'utf8')), config);
    const app = buildApp({ engine: new ScriptedEngine([1]), tokenizer, template: createChatTemplate(config), servedModelName: 'tiny', bodyLimit: 10_000 });
    const send = (payload: string) => app.inject({ method: 'POST', url: '/v1/chat/completions', payload, headers: { 'content-type': 'application/json' } });
    const big = await send(JSON.stringify({ messages: [{ role: 'user', content: 'x'.repeat(20_000) }] }));
    expect(big.statusCode).toBe(413);
    expect(big.json()).toEqual({ error: { message: expect.stringMatching(/too large/), type: expect.any(String), param: null, code: 413 } });
    const nest = (n: number) => '{"a":'.repeat(n) + '1' + '}'.repeat(n);
    const deep = await send(`{"messages":[{"role":"user","content":"x","extra":${nest(1000)}}],"max_tokens":1}`);
    expect(deep.statusCode).toBe(400);
    expect(deep.json().error).toMatchObject({ param: 'messages', code: 400, message: expect.stringMatching(/nests more than 256 levels/) });
    // Nesting well within the limit is fine.
    expect((await send(`{"messages":[{"role":"user","content":"x","extra":${nest(100)}}],"max_tokens":1}`)).statusCode).toBe(200);
  });
});
