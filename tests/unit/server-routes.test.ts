// Response shapes, SSE framing, logprobs, echo, stop strings and disconnects of the HTTP layer,
// over a scripted engine (a test double: see server-scripted-engine.ts).
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/server/app.ts';
import { createTokenizer, type TextTokenizer } from '../../src/chat/tokenizer.ts';
import { createChatTemplate } from '../../src/chat/template.ts';
import { qwen3TokenizerFile } from '../../src/model/tokenizer-files.ts';
import { ScriptedEngine } from './server-scripted-engine.ts';

const REPLY = 'Hi 世界 🎉! The answer is 42.\nUser: more';
let tokenizer: TextTokenizer;
let config: Record<string, unknown>;
let script: number[];
let engine: ScriptedEngine;
let app: FastifyInstance;

beforeAll(() => {
  config = JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer_config.json'), 'utf8'));
  tokenizer = createTokenizer(JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer.json'), 'utf8')), config);
  // the reply, then <|im_end|> (an eos id), then text the engine must never get to
  script = [...tokenizer.encode(REPLY), 151645, ...tokenizer.encode(' after eos')];
  engine = new ScriptedEngine(script);
  app = buildApp({ engine, tokenizer, template: createChatTemplate(config), servedModelName: 'tiny' });
});

const post = (url: string, payload: object) => app.inject({ method: 'POST', url, payload });

/** Parses an SSE body: every event must be `data: ...\n\n`; the last one [DONE]. */
function sse(body: string): any[] {
  expect(body.endsWith('data: [DONE]\n\n')).toBe(true);
  const events = body.split('\n\n');
  expect(events.pop()).toBe('');
  expect(events.pop()).toBe('data: [DONE]');
  return events.map((e) => {
    expect(e.startsWith('data: ')).toBe(true);
    return JSON.parse(e.slice(6));
  });
}

describe('/v1/completions', () => {
  it('returns text, finish_reason and usage; stops at eos without showing it', async () => {
    const res = await post('/v1/completions', { prompt: 'Say hi', max_tokens: 100 });
    expect(res.statusCode).toBe(200);
    const body = res.json();
    const promptLen = tokenizer.encode('Say hi').length;
    expect(body).toMatchObject({ object: 'text_completion', model: 'tiny', choices: [{ index: 0, text: REPLY, finish_reason: 'stop', logprobs: null }] });
    expect(body.id).toMatch(/^cmpl-/);
    const replyLen = tokenizer.encode(REPLY).length;
    expect(body.usage).toEqual({ prompt_tokens: promptLen, completion_tokens: replyLen + 1, total_tokens: promptLen + replyLen + 1 });
    expect(engine.requests.at(-1)!.params).toMatchObject({ maxTokens: 100, temperature: 1, topP: 1, topK: 0, stopTokenIds: [151645], ignoreEos: false, logprobs: null, promptLogprobs: null });
  });

  it('defaults max_tokens to 16 and reports finish_reason length', async () => {
    const body = (await post('/v1/completions', { prompt: [9707] })).json();
    expect(engine.requests.at(-1)!.params.maxTokens).toBe(16);
    expect(body.choices[0].finish_reason).toBe('length');
    expect(body.choices[0].text).toBe(tokenizer.decode(script.slice(0, 16)));
  });

  it('streams SSE whose text concatenates to the non-streamed text, with a usage chunk when asked', async () => {
    const res = await post('/v1/completions', { prompt: 'Say hi', max_tokens: 100, stream: true, stream_options: { include_usage: true } });
    expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
    const chunks = sse(res.body);
    const text = chunks.filter((c) => c.choices.length).map((c) => c.choices[0].text).join('');
    expect(text).toBe(REPLY);
    for (const c of chunks.slice(0, -1)) {
      expect(c).toMatchObject({ object: 'text_completion', model: 'tiny', usage: null });
      expect(c.choices[0].text).not.toContain('\uFFFD');
    }
    expect(chunks.at(-2).choices[0].finish_reason).toBe('stop');
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { completion_tokens: tokenizer.encode(REPLY).length + 1 } });
  });

  it('stop strings end the text across token boundaries and abort the engine request', async () => {
    const before = engine.aborted;
    const body = (await post('/v1/completions', { prompt: 'x', max_tokens: 100, stop: ['\nUser:', 'zzz'] })).json();
    expect(body.choices[0]).toMatchObject({ text: 'Hi 世界 🎉! The answer is 42.', finish_reason: 'stop', stop_reason: '\nUser:' });
    expect(engine.aborted).toBe(before + 1);
    const streamed = sse((await post('/v1/completions', { prompt: 'x', max_tokens: 100, stop: '42', stream: true })).body);
    expect(streamed.map((c) => c.choices[0].text).join('')).toBe('Hi 世界 🎉! The answer is ');
    expect(streamed.at(-1).choices[0]).toMatchObject({ finish_reason: 'stop', stop_reason: '42' });
    const included = (await post('/v1/completions', { prompt: 'x', max_tokens: 100, stop: '42', include_stop_str_in_output: true })).json();
    expect(included.choices[0].text).toBe('Hi 世界 🎉! The answer is 42');
  });

  it('ignore_eos drops eos from the stop ids; stop_token_ids are reported as stop_reason', async () => {
    await post('/v1/completions', { prompt: 'x', ignore_eos: true, max_tokens: 3 });
    expect(engine.requests.at(-1)!.params).toMatchObject({ stopTokenIds: [], ignoreEos: true });
    const stopId = script[3];
    const body = (await post('/v1/completions', { prompt: 'x', max_tokens: 50, stop_token_ids: [stopId] })).json();
    expect(body.choices[0]).toMatchObject({ text: tokenizer.decode(script.slice(0, 3)), finish_reason: 'stop', stop_reason: stopId });
  });

  it('legacy logprobs: tokens, token_logprobs, top_logprobs (top N plus the chosen), text_offset', async () => {
    const body = (await post('/v1/completions', { prompt: 'x', max_tokens: 5, logprobs: 2 })).json();
    const lp = body.choices[0].logprobs;
    expect(lp.tokens).toEqual(script.slice(0, 5).map((id) => tokenizer.decode([id])));
    expect(lp.token_logprobs).toHaveLength(5);
    expect(lp.token_logprobs.every((x: number) => x < 0)).toBe(true);
    expect(Object.keys(lp.top_logprobs[0])).toHaveLength(2);
    expect(lp.top_logprobs[0][lp.tokens[0]]).toBe(lp.token_logprobs[0]);
    let offset = 0;
    lp.text_offset.forEach((o: number, i: number) => {
      expect(o).toBe(offset);
      offset += lp.tokens[i].length;
    });
  });

  it('echo + logprobs on a token-id prompt: prompt first, its first logprob null, lengths match', async () => {
    const prompt = tokenizer.encode('The 世界 prompt');
    const body = (await post('/v1/completions', { prompt, max_tokens: 3, echo: true, logprobs: 1 })).json();
    expect(engine.requests.at(-1)!.params.promptLogprobs).toBe(1);
    const choice = body.choices[0];
    expect(choice.text).toBe('The 世界 prompt' + tokenizer.decode(script.slice(0, 3)));
    const lp = choice.logprobs;
    expect(lp.tokens).toHaveLength(prompt.length + 3);
    expect(lp.token_logprobs).toHaveLength(prompt.length + 3);
    expect(lp.top_logprobs).toHaveLength(prompt.length + 3);
    expect(lp.text_offset).toHaveLength(prompt.length + 3);
    expect(lp.token_logprobs[0]).toBeNull();
    expect(lp.top_logprobs[0]).toBeNull();
    expect(lp.token_logprobs.slice(1).every((x: number) => typeof x === 'number')).toBe(true);
    expect(lp.text_offset[0]).toBe(0);
  });

  it('echo with max_tokens 0 returns the prompt and its logprobs only (vLLM scoring mode)', async () => {
    const prompt = tokenizer.encode('score me');
    const body = (await post('/v1/completions', { prompt, max_tokens: 0, echo: true, logprobs: 0 })).json();
    expect(body.choices[0].text).toBe('score me');
    expect(body.choices[0].logprobs.tokens).toHaveLength(prompt.length);
    expect(body.choices[0].finish_reason).toBe('length');
    const streamed = sse((await post('/v1/completions', { prompt, max_tokens: 0, echo: true, logprobs: 0, stream: true })).body);
    expect(streamed.map((c) => c.choices[0].text).join('')).toBe('score me');
    expect(streamed.flatMap((c) => c.choices[0].logprobs?.tokens ?? [])).toHaveLength(prompt.length);
  });

  it('return_tokens_as_token_ids renders token_id:N, in the stream too', async () => {
    const body = (await post('/v1/completions', { prompt: [9707, 1879], max_tokens: 2, echo: true, logprobs: 1, return_tokens_as_token_ids: true })).json();
    const lp = body.choices[0].logprobs;
    expect(lp.tokens).toEqual(['token_id:9707', 'token_id:1879', `token_id:${script[0]}`, `token_id:${script[1]}`]);
    expect(Object.keys(lp.top_logprobs[2])).toContain(`token_id:${script[0]}`);
    const chunks = sse((await post('/v1/completions', { prompt: [9707], max_tokens: 2, logprobs: 0, return_tokens_as_token_ids: true, stream: true })).body);
    expect(chunks.flatMap((c) => c.choices[0].logprobs?.tokens ?? [])).toEqual([`token_id:${script[0]}`, `token_id:${script[1]}`]);
  });

  it('several prompts and n give indexed choices; seeds differ per choice', async () => {
    const body = (await post('/v1/completions', { prompt: ['a', 'b c'], n: 2, max_tokens: 2, seed: 7 })).json();
    expect(body.choices.map((c: any) => c.index)).toEqual([0, 1, 2, 3]);
    expect(engine.requests.slice(-4).map((r) => r.params.seed)).toEqual([7, 8, 7, 8]);
    expect(body.usage.prompt_tokens).toBe(tokenizer.encode('a').length + tokenizer.encode('b c').length);
    expect(body.usage.completion_tokens).toBe(8);
    const chunks = sse((await post('/v1/completions', { prompt: 'a', n: 3, max_tokens: 2, stream: true })).body);
    for (const i of [0, 1, 2]) {
      const mine = chunks.filter((c) => c.choices[0].index === i);
      expect(mine.map((c) => c.choices[0].text).join('')).toBe(tokenizer.decode(script.slice(0, 2)));
    }
  });
});

describe('/v1/chat/completions', () => {
  it('renders the template, defaults max_tokens to the context left, answers in chat shape', async () => {
    const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello?' }];
    const body = (await post('/v1/chat/completions', { model: 'tiny', messages })).json();
    const req = engine.requests.at(-1)!;
    expect(tokenizer.decode(req.promptTokens)).toBe('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello?<|im_end|>\n<|im_start|>assistant\n');
    expect(req.params.maxTokens).toBe(4096 - req.promptTokens.length);
    expect(body).toMatchObject({
      object: 'chat.completion',
      model: 'tiny',
      choices: [{ index: 0, message: { role: 'assistant', content: REPLY }, finish_reason: 'stop', logprobs: null }],
      usage: { prompt_tokens: req.promptTokens.length },
    });
    expect(body.id).toMatch(/^chatcmpl-/);
  });

  it('streams a role chunk, content deltas equal to the whole, a finish chunk and usage', async () => {
    const res = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'Hi' }], stream: true, stream_options: { include_usage: true } });
    const chunks = sse(res.body);
    expect(chunks[0].choices[0]).toEqual({ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null });
    const content = chunks.filter((c) => c.choices.length).map((c) => c.choices[0].delta.content ?? '').join('');
    expect(content).toBe(REPLY);
    expect(chunks.at(-2).choices[0].finish_reason).toBe('stop');
    expect(chunks.at(-1)).toMatchObject({ object: 'chat.completion.chunk', choices: [], usage: { completion_tokens: tokenizer.encode(REPLY).length + 1 } });
  });

  it('chat logprobs: content entries with token, logprob, bytes and exactly top_logprobs alternatives', async () => {
    const body = (await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4, logprobs: true, top_logprobs: 3 })).json();
    const content = body.choices[0].logprobs.content;
    expect(content).toHaveLength(4);
    expect(content[0].token).toBe(tokenizer.decode([script[0]]));
    expect(content[0].bytes).toEqual([...Buffer.from(content[0].token)]);
    expect(content[0].top_logprobs).toHaveLength(3);
    const ids = (await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2, logprobs: true, return_tokens_as_token_ids: true, stream: true })).body;
    const tokens = sse(ids).flatMap((c) => c.choices[0]?.logprobs?.content ?? []).map((e: any) => e.token);
    expect(tokens).toEqual([`token_id:${script[0]}`, `token_id:${script[1]}`]);
  });

  it('applies stop strings to chat output', async () => {
    const body = (await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'Hi' }], stop: ['🎉'] })).json();
    expect(body.choices[0]).toMatchObject({ message: { content: 'Hi 世界 ' }, finish_reason: 'stop', stop_reason: '🎉' });
  });
});

describe('client disconnect', () => {
  it('aborts the engine request when a streaming client goes away (real socket)', async () => {
    const slow = new ScriptedEngine(Array.from({ length: 200 }, () => 9707), { delayMs: 20 });
    const server = buildApp({ engine: slow, tokenizer, template: null, servedModelName: 'tiny' });
    await server.listen({ host: '127.0.0.1', port: 0 });
    try {
      const { port } = server.server.address() as AddressInfo;
      await new Promise<void>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/v1/completions', headers: { 'content-type': 'application/json' } }, (res) => {
          res.once('data', () => {
            req.destroy();
            resolve();
          });
        });
        req.on('error', () => {});
        req.end(JSON.stringify({ prompt: 'x', max_tokens: 150, stream: true }));
        setTimeout(() => reject(new Error('no data')), 5000);
      });
      await expect.poll(() => slow.finished, { timeout: 3000 }).toBe(1);
      expect(slow.aborted).toBe(1);
      // non-streaming too
      const ac = new AbortController();
      const pending = fetch(`http://127.0.0.1:${port}/v1/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x', max_tokens: 150 }), signal: ac.signal,
      }).catch(() => 'aborted');
      await expect.poll(() => slow.requests.length).toBe(2);
      ac.abort();
      expect(await pending).toBe('aborted');
      await expect.poll(() => slow.finished, { timeout: 3000 }).toBe(2);
      expect(slow.aborted).toBe(2);
    } finally {
      await server.close();
    }
  });
});
