// Tools and reasoning over the whole path: a generated checkpoint, the real native engine, the real
// server on loopback and the official `openai` client. A random model never writes a tool call by
// itself: the request side (tools, tool calls and results rendered exactly as the reference
// template rendering) is checked here, and the reply parsers are driven through the real engine
// with logit_bias; the full parse path with a scripted reply is tests/unit/server-chat-tools.test.ts.
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
const FIXTURES = path.join(import.meta.dirname, '../fixtures/chat-template');
let dir: string;
let loaded: LoadedModel;
let app: FastifyInstance;
let client: OpenAI;
let root: string;

interface Fixture {
  request: { messages: OpenAI.ChatCompletionMessageParam[]; tools?: OpenAI.ChatCompletionTool[]; chat_template_kwargs?: Record<string, unknown>; add_generation_prompt?: boolean };
  template: string;
  expected: string;
}
const fixture = (name: string) => JSON.parse(fs.readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8')) as Fixture;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moeserve-e2e-tools-'));
  await makeModel(dir, { seed: 11, layers: 2, hidden: 64, heads: 4, kvHeads: 2, headDim: 16, experts: 8, topK: 2, mlpOnlyLayers: [0], maxPositionEmbeddings: 2048 });
  loaded = await loadServedModel({ dir, threads: 2, kvCacheGiB: 0.25, generationConfig: 'vllm' });
  app = buildApp({ engine: loaded.engine, tokenizer: loaded.tokenizer, template: loaded.template, servedModelName: MODEL, vocabSize: loaded.config.native.vocabSize, reasoningParser: 'qwen3' });
  root = await listenLoopback(app);
  client = new OpenAI({ baseURL: `${root}/v1`, apiKey: 'unused', maxRetries: 0 });
});

afterAll(async () => {
  await app?.close();
  await loaded?.engine.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

type Message = OpenAI.ChatCompletionMessage & { reasoning_content?: string | null };

/** A streamed choice reassembled: reasoning, content, tool calls (by index), finish. */
async function reassemble(stream: AsyncIterable<OpenAI.ChatCompletionChunk>) {
  let reasoning: string | null = null;
  let content: string | null = null;
  const calls: { name: string; arguments: string }[] = [];
  let finish: string | null = null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      const delta = c.delta as OpenAI.ChatCompletionChunk.Choice.Delta & { reasoning_content?: string };
      if (delta.reasoning_content) reasoning = (reasoning ?? '') + delta.reasoning_content;
      if (delta.content) content = (content ?? '') + delta.content;
      for (const tc of delta.tool_calls ?? []) {
        calls[tc.index] ??= { name: tc.function?.name ?? '', arguments: '' };
        calls[tc.index].arguments += tc.function?.arguments ?? '';
      }
      finish = c.finish_reason ?? finish;
    }
  }
  return { reasoning, content, calls, finish };
}

function asParsed(choice: OpenAI.ChatCompletion.Choice) {
  const m = choice.message as Message;
  const calls = (m.tool_calls ?? []) as OpenAI.ChatCompletionMessageFunctionToolCall[];
  return { reasoning: m.reasoning_content ?? null, content: m.content, calls: calls.map((c) => ({ name: c.function.name, arguments: c.function.arguments })), finish: choice.finish_reason };
}

describe('tool requests over the real engine', () => {
  it('renders tools, tool calls and tool results exactly as the reference rendering (/tokenize and usage agree)', async () => {
    for (const name of ['tools-with-system', 'tool-call-round-trip', 'multi-step-history', 'no-thinking-with-tools']) {
      const { request, expected } = fixture(name);
      const golden = loaded.tokenizer.encode(expected);
      const res = await fetch(`${root}/tokenize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: MODEL, ...request }) });
      expect(res.status, name).toBe(200);
      expect(((await res.json()) as { tokens: number[] }).tokens, name).toEqual(golden);
      const reply = await client.chat.completions.create({ model: MODEL, ...request, max_tokens: 2, temperature: 0 } as OpenAI.ChatCompletionCreateParamsNonStreaming);
      expect(reply.usage!.prompt_tokens, name).toBe(golden.length);
    }
  });

  it('with tools and reasoning on, the greedy stream reassembles to the non-streamed reply', async () => {
    const { request } = fixture('tool-call-round-trip');
    const params = { model: MODEL, ...request, max_tokens: 24, temperature: 0 } as OpenAI.ChatCompletionCreateParamsNonStreaming;
    const full = await client.chat.completions.create(params);
    expect(['stop', 'length', 'tool_calls']).toContain(full.choices[0].finish_reason);
    expect('reasoning_content' in full.choices[0].message).toBe(true);
    const streamed = await reassemble(await client.chat.completions.create({ ...params, stream: true }));
    expect(streamed).toEqual(asParsed(full.choices[0]));
  });

  it("the DeepResearch agent's settings work with tools", async () => {
    const { request } = fixture('tools-with-system');
    const reply = await client.chat.completions.create({
      model: MODEL, ...request, max_tokens: 16, temperature: 0.6, top_p: 0.95, presence_penalty: 1.1, stop: ['\n<tool_response>', '<tool_response>'],
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(['stop', 'length', 'tool_calls']).toContain(reply.choices[0].finish_reason);
    expect(reply.usage!.completion_tokens).toBeGreaterThan(0);
  });
});

describe('reply parsers over the real engine (logit_bias steers the random model onto the markers)', () => {
  const user: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Use a tool.' }];
  const tools: OpenAI.ChatCompletionTool[] = [{ type: 'function', function: { name: 'noop', parameters: { type: 'object', properties: {} } } }];

  it('a run of <tool_call>/</tool_call> markers is no call: content verbatim, finish length, streamed alike', async () => {
    const params = {
      model: MODEL, messages: user, tools, max_tokens: 12, temperature: 0, logprobs: true, return_tokens_as_token_ids: true,
      logit_bias: { '151657': 100, '151658': 100 },
    } as OpenAI.ChatCompletionCreateParamsNonStreaming;
    const full = await client.chat.completions.create(params);
    const choice = full.choices[0];
    const ids = choice.logprobs!.content!.map((t) => Number(t.token.slice('token_id:'.length)));
    expect(ids).toHaveLength(12);
    expect(ids.every((id) => id === 151657 || id === 151658)).toBe(true);
    expect(choice.finish_reason).toBe('length');
    expect(choice.message.tool_calls).toBeUndefined();
    expect(choice.message.content).toBe(loaded.tokenizer.decode(ids));
    const streamed = await reassemble(await client.chat.completions.create({ ...params, stream: true }));
    expect(streamed).toEqual(asParsed(choice));
  });

  it('a reply that opens <think> and never closes it is all reasoning_content, content null', async () => {
    const params = { model: MODEL, messages: user, max_tokens: 6, temperature: 0, logit_bias: { '151667': 100 } } as OpenAI.ChatCompletionCreateParamsNonStreaming;
    const full = await client.chat.completions.create(params);
    const message = full.choices[0].message as Message;
    // the first <think> opens the reasoning; the model keeps writing it as reasoning text
    expect(message.reasoning_content).toBe('<think>'.repeat(5));
    expect(message.content).toBeNull();
    expect(full.choices[0].finish_reason).toBe('length');
    const streamed = await reassemble(await client.chat.completions.create({ ...params, stream: true }));
    expect(streamed).toEqual(asParsed(full.choices[0]));
  });

  it('tool_choice none: the markers stay content even with tools', async () => {
    const full = await client.chat.completions.create({
      model: MODEL, messages: user, tools, tool_choice: 'none', max_tokens: 4, temperature: 0, logit_bias: { '151657': 100 },
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(full.choices[0].message.content).toBe('<tool_call>'.repeat(4));
  });
});
