// Error shapes, validation and auth of the HTTP layer, driven with app.inject() over a scripted engine.
import fs from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/server/app.ts';
import { createTokenizer, type TextTokenizer } from '../../src/chat/tokenizer.ts';
import { createChatTemplate } from '../../src/chat/template.ts';
import { qwen3TokenizerFile } from '../../src/model/tokenizer-files.ts';
import { ScriptedEngine } from './server-scripted-engine.ts';

let tokenizer: TextTokenizer;
let config: Record<string, unknown>;
let engine: ScriptedEngine;
let app: FastifyInstance;

beforeAll(() => {
  config = JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer_config.json'), 'utf8'));
  tokenizer = createTokenizer(JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer.json'), 'utf8')), config);
  engine = new ScriptedEngine(tokenizer.encode('Hello there, friend.'), { maxModelLen: 64 });
  app = buildApp({ engine, tokenizer, template: createChatTemplate(config), servedModelName: 'tiny', apiKey: 'sk-test' });
});

const auth = { authorization: 'Bearer sk-test' };
const post = (url: string, payload: unknown, headers: Record<string, string> = auth) =>
  app.inject({ method: 'POST', url, payload: payload as object, headers });

function expectError(res: { statusCode: number; json(): any }, status: number, param: string | null, message: RegExp) {
  expect(res.statusCode).toBe(status);
  const body = res.json();
  expect(Object.keys(body)).toEqual(['error']);
  expect(body.error).toMatchObject({ param, code: status });
  expect(typeof body.error.type).toBe('string');
  expect(body.error.message).toMatch(message);
}

describe('auth', () => {
  it('requires the API key on /v1 routes only', async () => {
    expectError(await app.inject({ method: 'GET', url: '/v1/models' }), 401, null, /API key/);
    expectError(await app.inject({ method: 'GET', url: '/v1/models', headers: { authorization: 'Bearer sk-wrong' } }), 401, null, /Unauthorized/);
    expectError(await post('/v1/completions', { prompt: 'x' }, { authorization: 'sk-test' }), 401, null, /Unauthorized/);
    expect((await app.inject({ method: 'GET', url: '/health' })).statusCode).toBe(200);
    const models = await app.inject({ method: 'GET', url: '/v1/models', headers: auth });
    expect(models.statusCode).toBe(200);
    expect(models.json()).toMatchObject({ object: 'list', data: [{ id: 'tiny', object: 'model', max_model_len: 64 }] });
  });
});

describe('validation', () => {
  it('404s an unknown model as vLLM does', async () => {
    expectError(await post('/v1/completions', { model: 'gpt-4', prompt: 'x' }), 404, 'model', /^The model `gpt-4` does not exist\.$/);
    expectError(await post('/v1/chat/completions', { model: 'nope', messages: [{ role: 'user', content: 'x' }] }), 404, 'model', /nope/);
  });

  it('names the parameter that is wrong', async () => {
    expectError(await post('/v1/completions', { model: 'tiny' }), 400, 'prompt', /'prompt' is a required parameter/);
    expectError(await post('/v1/completions', { prompt: 5 }), 400, 'prompt', /'prompt' must be a string, an array of strings, an array of token ids/);
    expectError(await post('/v1/completions', { prompt: [] }), 400, 'prompt', /'prompt' must be/);
    expectError(await post('/v1/completions', { prompt: 'x', max_tokens: 'ten' }), 400, 'max_tokens', /'max_tokens' must be integer/);
    expectError(await post('/v1/completions', { prompt: 'x', max_tokens: 2.5 }), 400, 'max_tokens', /integer/);
    expectError(await post('/v1/completions', { prompt: 'x', max_tokens: 0 }), 400, 'max_tokens', /only with echo/);
    expectError(await post('/v1/completions', { prompt: 'x', logprobs: 21 }), 400, 'logprobs', /'logprobs' must be <= 20/);
    expectError(await post('/v1/completions', { prompt: 'x', temperature: -1 }), 400, 'temperature', />= 0/);
    expectError(await post('/v1/completions', { prompt: 'x', top_p: 0 }), 400, 'top_p', /> 0/);
    expectError(await post('/v1/completions', { prompt: 'x', stop: 7 }), 400, 'stop', /a string or an array of strings/);
    expectError(await post('/v1/completions', { prompt: 'x', n: 0 }), 400, 'n', />= 1/);
    expectError(await post('/v1/completions', { prompt: 'x', frequency_penalty: 2.5 }), 400, 'frequency_penalty', /must be <= 2/);
    expectError(await post('/v1/completions', { prompt: [1, -3] }), 400, 'prompt', /Token id -3 .*out of vocabulary/);
    expectError(await post('/v1/completions', { prompt: [1, 999999] }), 400, 'prompt', /Token id 999999/);
    expectError(await post('/v1/completions', { prompt: '' }), 400, 'prompt', /empty/);
    expectError(await post('/v1/chat/completions', { messages: [] }), 400, 'messages', /must NOT have fewer than 1 items/);
    expectError(await post('/v1/chat/completions', { messages: [{ content: 'x' }] }), 400, 'messages[0].role', /required/);
    expectError(await post('/v1/chat/completions', { messages: [{ role: 'user', content: 3 }] }), 400, 'messages[0].content', /a string, an array of content parts or null/);
    expectError(
      await post('/v1/chat/completions', { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: {} }] }] }),
      400, 'messages[0].content', /only text content parts/,
    );
    expectError(await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], top_logprobs: 3 }), 400, 'top_logprobs', /requires 'logprobs'/);
    expectError(await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], tool_choice: 'required' }), 400, 'tool_choice', /auto/);
  });

  it('refuses prompt + max_tokens beyond the context, naming both numbers', async () => {
    const prompt = Array.from({ length: 40 }, () => 9707);
    expectError(await post('/v1/completions', { prompt, max_tokens: 30 }), 400, 'max_tokens', /maximum context length is 64 tokens.*70 tokens \(40 in the input, 30 in the completion\)/);
    expectError(await post('/v1/completions', { prompt: Array(64).fill(9707) }), 400, 'prompt', /64 input tokens/);
    expectError(
      await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], max_completion_tokens: 60 }),
      400, 'max_completion_tokens', /maximum context length is 64/,
    );
    // without max_tokens the default is clamped to what fits
    const ok = await post('/v1/completions', { prompt: Array(60).fill(9707) });
    expect(ok.statusCode).toBe(200);
    expect(engine.requests.at(-1)!.params.maxTokens).toBe(4);
  });

  it('answers malformed bodies, unknown routes and wrong content types in the same shape', async () => {
    const bad = await app.inject({ method: 'POST', url: '/v1/completions', headers: { ...auth, 'content-type': 'application/json' }, payload: '{"prompt": ' });
    expectError(bad, 400, null, /JSON/i);
    const text = await app.inject({ method: 'POST', url: '/v1/completions', headers: { ...auth, 'content-type': 'text/plain' }, payload: 'hi' });
    expectError(text, 400, null, /'body' must be object/);
    expectError(await app.inject({ method: 'GET', url: '/v1/nothing', headers: auth }), 404, null, /Not found/);
    const empty = await app.inject({ method: 'POST', url: '/v1/chat/completions', headers: { ...auth, 'content-type': 'application/json' } });
    expect(empty.statusCode).toBe(400);
  });

  it('survives odd but schema-valid input', async () => {
    const weird = [
      { prompt: ['a', 'b'], n: 2, max_tokens: 2 },
      { prompt: [[1, 2], [3]], max_tokens: 1, logprobs: 0, echo: true },
      { prompt: 'x', stop: ['', ''], max_tokens: 3 },
      { prompt: 'x', seed: -5, top_k: -1, max_tokens: 1 },
      { prompt: '\u0000\uD800 lone surrogate', max_tokens: 1 },
    ];
    for (const body of weird) expect((await post('/v1/completions', body)).statusCode).toBe(200);
    const chat = [
      { messages: [{ role: 'assistant', content: null }, { role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] }], max_tokens: 1 },
      { messages: [{ role: 'user', content: 'x' }], chat_template_kwargs: { enable_thinking: false }, max_tokens: 1 },
    ];
    for (const body of chat) expect((await post('/v1/chat/completions', body)).statusCode).toBe(200);
    // a template that fails on these messages is a 400 naming messages, not a crash
    const failing = buildApp({
      engine,
      tokenizer,
      template: createChatTemplate({ chat_template: "{% if messages[0].role != 'system' %}{{ raise_exception('system first') }}{% endif %}" }),
      servedModelName: 'tiny',
    });
    const res = await failing.inject({ method: 'POST', url: '/v1/chat/completions', payload: { messages: [{ role: 'user', content: 'x' }] } });
    expectError(res, 400, 'messages', /chat template error: .*system first/);
  });

  it('maps an engine RequestError to a 400 with its param', async () => {
    const strict = new ScriptedEngine([1, 2, 3], { maxModelLen: 8 });
    const lenient = buildApp({ engine: strict, tokenizer, template: null, servedModelName: 'x', maxModelLen: 1000 });
    // maxModelLen is capped at the engine's own 8, so the server refuses first...
    const res = await lenient.inject({ method: 'POST', url: '/v1/completions', payload: { prompt: [1, 2, 3], max_tokens: 6 } });
    expectError(res, 400, 'max_tokens', /maximum context length is 8/);
    // ...and a model without a chat template refuses chat clearly
    const chat = await lenient.inject({ method: 'POST', url: '/v1/chat/completions', payload: { messages: [{ role: 'user', content: 'x' }] } });
    expectError(chat, 400, 'messages', /no chat template/);
  });

  it('never answers 5xx to random bodies (fuzz)', async () => {
    let seed = 42;
    const rand = (n: number) => Math.floor(((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * n);
    const values: unknown[] = [
      null, true, false, 0, 1, -1, 2, 20, 21, 0.5, 1e308, -1e308, 2 ** 53, 'demo', '', 'tiny', '💥\u0000', [], [1, 2], [0],
      ['a', 'b'], [[1], [2, 3]], [[]], {}, { type: 'text' }, { include_usage: true }, [{ role: 'user', content: 'x' }],
      [{ role: 'user', content: null }], [{ role: 'user', content: [{ type: 'text', text: 'y' }] }], [{ role: 5 }],
    ];
    const keys = [
      'model', 'prompt', 'messages', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'stop',
      'n', 'stream', 'stream_options', 'logprobs', 'top_logprobs', 'echo', 'return_tokens_as_token_ids', 'ignore_eos',
      'stop_token_ids', 'tools', 'tool_choice', 'chat_template_kwargs', 'skip_special_tokens', 'response_format', 'best_of',
    ];
    const statuses = new Set<number>();
    for (let i = 0; i < 400; i++) {
      const body: Record<string, unknown> = { model: 'tiny' };
      for (let k = rand(6); k >= 0; k--) body[keys[rand(keys.length)]] = values[rand(values.length)];
      if (rand(2)) body.prompt = ['hello', [1, 2, 3], 'x'][rand(3)];
      else body.messages = [{ role: 'user', content: 'hi' }];
      const url = rand(2) ? '/v1/completions' : '/v1/chat/completions';
      const res = await post(url, body);
      statuses.add(res.statusCode);
      if (res.statusCode >= 500) throw new Error(`${res.statusCode} for ${url} ${JSON.stringify(body)}: ${res.body}`);
      if (res.statusCode !== 200) expect(res.json().error.code).toBe(res.statusCode);
    }
    // the fuzz reaches both outcomes
    expect(statuses.has(200) && statuses.has(400)).toBe(true);
  });
});
