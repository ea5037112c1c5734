// Logprobs cover every counted token: len(logprobs) == usage.completion_tokens for chat
// (`logprobs.content`) and completions (`logprobs.tokens`), streamed or not, whatever ends the reply:
// the end-of-sequence token (steered onto by logit_bias after min_tokens, or forced by guided decoding
// once the JSON is complete), a stop token id, max_tokens, or a stop string. As vLLM, the EOS or stop
// token is counted and has its logprob entry (its text, "<|im_end|>", is not in the reply); a stop
// string's last token is counted and covered though the string is cut from the text.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/server/app.ts';
import type { GuidedDecoding } from '../../src/guided/guided-decoding.ts';
import { startTinyServer, TINY_MODEL, type TinyServer, warmGuidedDecoding } from '../helpers/tiny-server.ts';
import { listenLoopback } from '../helpers/loopback.ts';

const EOS = 151645;
let server: TinyServer;
let app: FastifyInstance;
let guided: GuidedDecoding;
let client: OpenAI;

beforeAll(async () => {
  server = await startTinyServer();
  const { loaded } = server;
  guided = await warmGuidedDecoding(loaded);
  // The same engine, served with guided decoding.
  app = buildApp({ engine: loaded.engine, tokenizer: loaded.tokenizer, template: loaded.template, servedModelName: TINY_MODEL, vocabSize: loaded.config.native.vocabSize, guidedDecoding: guided, tokenizerWorkers: 1 });
  client = new OpenAI({ baseURL: `${await listenLoopback(app)}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
}, 120_000);

afterAll(async () => {
  await app?.close();
  await server?.close();
  await guided?.close();
});

const messages = [{ role: 'user' as const, content: 'Say something.' }];
const prompt = 'Once upon a time';

interface Outcome {
  tokens: string[];
  completionTokens: number;
  finish: string | null;
  text: string;
}

/** A chat request's logprob tokens, usage and finish, non-streamed or streamed (include_usage). */
async function chat(body: Record<string, unknown>, stream: boolean): Promise<Outcome> {
  const params = { model: TINY_MODEL, messages, logprobs: true, top_logprobs: 1, ...body };
  if (!stream) {
    const res = await client.chat.completions.create(params as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const c = res.choices[0];
    return { tokens: c.logprobs!.content!.map((t) => t.token), completionTokens: res.usage!.completion_tokens, finish: c.finish_reason, text: c.message.content ?? '' };
  }
  const out: Outcome = { tokens: [], completionTokens: -1, finish: null, text: '' };
  const chunks = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } } as unknown as OpenAI.ChatCompletionCreateParamsStreaming);
  for await (const chunk of chunks) {
    if (chunk.usage) out.completionTokens = chunk.usage.completion_tokens;
    for (const c of chunk.choices) {
      out.tokens.push(...(c.logprobs?.content ?? []).map((t) => t.token));
      out.text += c.delta.content ?? '';
      out.finish = c.finish_reason ?? out.finish;
    }
  }
  return out;
}

/** The same for /v1/completions (legacy logprobs: tokens, token_logprobs, top_logprobs, text_offset). */
async function completion(body: Record<string, unknown>, stream: boolean): Promise<Outcome> {
  const params = { model: TINY_MODEL, prompt, logprobs: 1, ...body };
  const check = (lp: OpenAI.Completions.Completion['choices'][number]['logprobs']) => {
    expect(lp!.token_logprobs).toHaveLength(lp!.tokens!.length);
    expect(lp!.top_logprobs).toHaveLength(lp!.tokens!.length);
    expect(lp!.text_offset).toHaveLength(lp!.tokens!.length);
    return lp!.tokens!;
  };
  if (!stream) {
    const res = await client.completions.create(params as unknown as OpenAI.CompletionCreateParamsNonStreaming);
    const c = res.choices[0];
    return { tokens: check(c.logprobs), completionTokens: res.usage!.completion_tokens, finish: c.finish_reason, text: c.text };
  }
  const out: Outcome = { tokens: [], completionTokens: -1, finish: null, text: '' };
  const chunks = await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } } as unknown as OpenAI.CompletionCreateParamsStreaming);
  for await (const chunk of chunks) {
    if (chunk.usage) out.completionTokens = chunk.usage.completion_tokens;
    for (const c of chunk.choices) {
      if (c.logprobs) out.tokens.push(...check(c.logprobs));
      out.text += c.text;
      out.finish = c.finish_reason ?? out.finish;
    }
  }
  return out;
}

const endpoints = { chat, completion } as const;
const both = [false, true] as const;

describe('logprobs cover every counted token (real engine, openai client)', () => {
  for (const [name, call] of Object.entries(endpoints)) {
    it(`${name}: a reply ended by EOS has the EOS entry last, streamed or not`, async () => {
      for (const stream of both) {
        // EOS may not come before min_tokens; then logit_bias makes it certain.
        const out = await call({ max_tokens: 20, temperature: 0, min_tokens: 3, logit_bias: { [EOS]: 100 } }, stream);
        expect(out.finish, `stream ${stream}`).toBe('stop');
        expect(out.completionTokens).toBe(4);
        expect(out.tokens).toHaveLength(4);
        expect(out.tokens.at(-1)).toBe('<|im_end|>');
        expect(out.text).not.toContain('<|im_end|>');
      }
    });

    it(`${name}: a guided reply ends with EOS, and its logprob is there`, async () => {
      const response_format = { type: 'json_schema', json_schema: { name: 'pick', schema: { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'], additionalProperties: false } } };
      for (const stream of both) {
        const out = await call({ max_tokens: 40, temperature: 1, seed: 5, response_format }, stream);
        expect(out.finish, `stream ${stream}`).toBe('stop');
        expect(JSON.parse(out.text)).toHaveProperty('ok');
        expect(out.tokens).toHaveLength(out.completionTokens);
        // once the JSON is complete the grammar allows only the model's EOS ids (<|im_end|> and <|endoftext|>)
        expect(['<|im_end|>', '<|endoftext|>']).toContain(out.tokens.at(-1));
      }
    });

    it(`${name}: a stop token id, max_tokens and a stop string are covered too`, async () => {
      // The greedy reply (as token ids), then requests that end inside it.
      const greedy = { max_tokens: 16, temperature: 0, ignore_eos: true, return_tokens_as_token_ids: true };
      const free = await call(greedy, false);
      expect(free.finish).toBe('length');
      expect(free.tokens).toHaveLength(16);
      const ids = free.tokens.map((t) => Number(t.slice('token_id:'.length)));
      const decode = (n: number) => server.loaded.tokenizer.decode(ids.slice(0, n), { skipSpecialTokens: true });
      // A stop token id: a token of the greedy reply that first appears at position k >= 2.
      const k = ids.findIndex((id, i) => i >= 2 && ids.indexOf(id) === i);
      // A stop string: two characters of the reply's text (whole ones) from the middle; the reply stops
      // at the token that completes it. vLLM counts every token generated, that one included.
      const text = decode(16);
      expect(free.text).toBe(text);
      let from = Math.floor(text.length / 2);
      while (from > 0 && /[\uFFFD\uDC00-\uDFFF]/.test(text.slice(from, from + 3))) from--;
      const needle = text.slice(from, from + 2);
      const at = text.indexOf(needle);
      let last = 1;
      while (!decode(last).includes(needle)) last++;
      for (const stream of both) {
        const cut = await call({ ...greedy, max_tokens: 7 }, stream);
        expect(cut.finish).toBe('length');
        expect(cut.completionTokens).toBe(7);
        expect(cut.tokens).toEqual(free.tokens.slice(0, 7));

        const byId = await call({ ...greedy, stop_token_ids: [ids[k]] }, stream);
        expect(byId.finish).toBe('stop');
        expect(byId.completionTokens).toBe(k + 1);
        expect(byId.tokens).toEqual(free.tokens.slice(0, k + 1));

        const byString = await call({ ...greedy, stop: [needle] }, stream);
        expect(byString.finish, JSON.stringify(needle)).toBe('stop');
        expect(byString.text).toBe(text.slice(0, at));
        expect(byString.completionTokens).toBe(last);
        expect(byString.tokens).toEqual(free.tokens.slice(0, last));
      }
    });
  }
});
