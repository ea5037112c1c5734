// Tool calls and reasoning through the whole HTTP layer: the real tokenizer, chat template,
// detokenizer and server on loopback, driven by the official `openai` client. The engine is a test
// double replaying a realistic reply as real token ids (a random model never writes tool calls);
// tests/e2e/chat-tools.test.ts covers the request side with the real engine.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import type { FastifyInstance } from 'fastify';
import { buildApp, type AppOptions } from '../../src/server/app.ts';
import { createChatTemplate, type ChatTemplate } from '../../src/chat/template.ts';
import { qwen3TokenizerFile } from '../../src/model/tokenizer-files.ts';
import { byteTokens, qwen3Tokenizer } from '../helpers/stream-splits.ts';
import { ScriptedEngine } from './server-scripted-engine.ts';
import { listenLoopback } from '../helpers/loopback.ts';

const EOS = 151645;
const config = JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
const qwen3 = createChatTemplate(config)!;
const thinkingTemplate = createChatTemplate({
  ...config,
  chat_template: (config.chat_template as string).replace("{{- '<|im_start|>assistant\\n' }}", "{{- '<|im_start|>assistant\\n<think>\\n' }}"),
})!;

const REASONING = 'The user wants weather for two cities. I could write <tool_call>{"name": "x"}</tool_call> but I am still thinking.';
const REPLY =
  `<think>\n${REASONING}\n</think>\n\nChecking both.\n` +
  '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "note": "a < b > c"}}\n</tool_call>\n' +
  '<tool_call>\n{"name": "get_weather", "arguments": {"city": "東京 🗼", "days": 2}}\n</tool_call>';
const TOOLS: OpenAI.ChatCompletionTool[] = [
  { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } }, required: ['city'] } } },
];
const MESSAGES: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Weather in Paris and Tokyo?' }];

const servers: FastifyInstance[] = [];

async function serve(script: number[], template: ChatTemplate = qwen3, extra: Partial<AppOptions> = {}) {
  const engine = new ScriptedEngine(script);
  // --reasoning-parser qwen3 (off unless named, as vLLM); a test turns it off with { reasoningParser: null }.
  const app = buildApp({ engine, tokenizer: qwen3Tokenizer(), template, servedModelName: 'tiny', reasoningParser: 'qwen3', ...extra });
  servers.push(app);
  return { engine, app, client: new OpenAI({ baseURL: `${await listenLoopback(app)}/v1`, apiKey: 'unused', maxRetries: 0 }) };
}

afterAll(async () => {
  for (const app of servers) await app.close();
});

interface Collected {
  role?: string;
  reasoning: string | null;
  content: string | null;
  toolCalls: { id: string; type: string; name: string; arguments: string }[];
  finish: string | null;
  chunks: OpenAI.ChatCompletionChunk[];
}

/** Reassembles a streamed choice by OpenAI's delta rules, checking the shape of every tool-call delta. */
async function collect(stream: AsyncIterable<OpenAI.ChatCompletionChunk>, index = 0): Promise<Collected> {
  const out: Collected = { reasoning: null, content: null, toolCalls: [], finish: null, chunks: [] };
  for await (const chunk of stream) {
    out.chunks.push(chunk);
    for (const c of chunk.choices) {
      if (c.index !== index) continue;
      const delta = c.delta as OpenAI.ChatCompletionChunk.Choice.Delta & { reasoning_content?: string; reasoning?: string };
      // vLLM's newer name rides along with every reasoning delta
      expect(delta.reasoning).toBe(delta.reasoning_content);
      if (delta.role) out.role = delta.role;
      if (delta.reasoning_content) out.reasoning = (out.reasoning ?? '') + delta.reasoning_content;
      if (delta.content) out.content = (out.content ?? '') + delta.content;
      for (const tc of delta.tool_calls ?? []) {
        if (tc.index === out.toolCalls.length) {
          // the first delta of a call: index, id, type and name, empty arguments
          expect(tc.id).toMatch(/^chatcmpl-tool-[0-9a-f]{32}$/);
          expect(tc.type).toBe('function');
          expect(tc.function?.name).toBeTruthy();
          expect(tc.function?.arguments).toBe('');
          out.toolCalls.push({ id: tc.id!, type: tc.type!, name: tc.function!.name!, arguments: '' });
        } else {
          expect(tc.index).toBe(out.toolCalls.length - 1);
          expect(tc.id).toBeUndefined();
          out.toolCalls[tc.index].arguments += tc.function?.arguments ?? '';
        }
      }
      if (c.finish_reason) out.finish = c.finish_reason;
    }
  }
  return out;
}

/** The non-streamed message in the same shape (ids dropped by the comparison helper). */
function fromMessage(choice: OpenAI.ChatCompletion.Choice) {
  const m = choice.message as OpenAI.ChatCompletionMessage & { reasoning_content?: string | null };
  return {
    reasoning: m.reasoning_content ?? null,
    content: m.content,
    toolCalls: (m.tool_calls ?? []).map((t) => ({ type: t.type, name: (t as OpenAI.ChatCompletionMessageFunctionToolCall).function.name, arguments: (t as OpenAI.ChatCompletionMessageFunctionToolCall).function.arguments })),
    finish: choice.finish_reason,
  };
}
const withoutIds = (c: Collected) => ({ reasoning: c.reasoning, content: c.content, toolCalls: c.toolCalls.map(({ id: _id, ...rest }) => rest), finish: c.finish });

describe('tool calls and reasoning over HTTP (scripted engine, openai client)', () => {
  let client: OpenAI;
  beforeAll(async () => {
    ({ client } = await serve([...qwen3Tokenizer().encode(REPLY), EOS]));
  });

  it('non-streamed: reasoning_content, content, several tool_calls, finish_reason tool_calls', async () => {
    const res = await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, tools: TOOLS });
    const choice = res.choices[0];
    expect(choice.finish_reason).toBe('tool_calls');
    const message = choice.message as OpenAI.ChatCompletionMessage & { reasoning_content?: string; reasoning?: string };
    expect(message.reasoning_content).toBe(REASONING);
    expect(message.reasoning).toBe(REASONING);
    expect(message.content).toBe('Checking both.');
    const calls = message.tool_calls as OpenAI.ChatCompletionMessageFunctionToolCall[];
    expect(calls).toHaveLength(2);
    for (const call of calls) {
      expect(call.id).toMatch(/^chatcmpl-tool-[0-9a-f]{32}$/);
      expect(call.type).toBe('function');
      expect(call.function.name).toBe('get_weather');
    }
    expect(calls[0].id).not.toBe(calls[1].id);
    expect(calls.map((c) => JSON.parse(c.function.arguments))).toEqual([{ city: 'Paris', note: 'a < b > c' }, { city: '東京 🗼', days: 2 }]);
    expect(calls[1].function.arguments).toBe('{"city": "東京 🗼", "days": 2}');
  });

  it('streamed: OpenAI-shaped deltas that reassemble to the non-streamed reply', async () => {
    const full = await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, tools: TOOLS });
    const streamed = await collect(await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, tools: TOOLS, stream: true }));
    expect(streamed.role).toBe('assistant');
    expect(withoutIds(streamed)).toEqual(fromMessage(full.choices[0]));
    // the SDK's own accumulator agrees
    const sdk = await client.chat.completions.stream({ model: 'tiny', messages: MESSAGES, tools: TOOLS }).finalChatCompletion();
    expect(sdk.choices[0].finish_reason).toBe('tool_calls');
    expect(sdk.choices[0].message.content).toBe('Checking both.');
    expect(sdk.choices[0].message.tool_calls!.map((t) => (t as OpenAI.ChatCompletionMessageFunctionToolCall).function.arguments)).toEqual(
      (full.choices[0].message.tool_calls as OpenAI.ChatCompletionMessageFunctionToolCall[]).map((t) => t.function.arguments),
    );
  });

  it('tool_choice none: tools are rendered, but the reply is not parsed for calls', async () => {
    const res = await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, tools: TOOLS, tool_choice: 'none' });
    expect(res.choices[0].finish_reason).toBe('stop');
    expect(res.choices[0].message.tool_calls).toBeUndefined();
    expect(res.choices[0].message.content).toBe(REPLY.slice(REPLY.indexOf('Checking both.')));
  });

  it('without tools the reply is not parsed for calls either', async () => {
    const res = await client.chat.completions.create({ model: 'tiny', messages: MESSAGES });
    expect(res.choices[0].message.tool_calls).toBeUndefined();
    expect(res.choices[0].message.content).toContain('<tool_call>');
  });

  it('parallel_tool_calls false keeps the first call', async () => {
    const res = await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, tools: TOOLS, parallel_tool_calls: false });
    expect(res.choices[0].message.tool_calls).toHaveLength(1);
    const streamed = await collect(await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, tools: TOOLS, parallel_tool_calls: false, stream: true }));
    expect(streamed.toolCalls).toHaveLength(1);
  });

  it('n=2: each choice is parsed on its own', async () => {
    const res = await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, tools: TOOLS, n: 2 });
    expect(res.choices.map((c) => c.message.tool_calls?.length)).toEqual([2, 2]);
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, tools: TOOLS, n: 2, stream: true })) chunks.push(chunk);
    for (const index of [0, 1]) {
      const one = await collect((async function* () { yield* chunks; })(), index);
      expect(withoutIds(one)).toEqual(fromMessage(res.choices[index]));
    }
  });

  it('logprobs still cover every generated token when text is held back for parsing, EOS included', async () => {
    const chunks = await collect(await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, tools: TOOLS, stream: true, logprobs: true, stream_options: { include_usage: true } }));
    const entries = chunks.chunks.flatMap((c) => c.choices.flatMap((ch) => ch.logprobs?.content ?? []));
    // every counted token, the EOS that ended the reply too (as vLLM: its text, though not in the content)
    expect(entries).toHaveLength(qwen3Tokenizer().encode(REPLY).length + 1);
    expect(entries).toHaveLength(chunks.chunks.at(-1)!.usage!.completion_tokens);
    expect(entries.at(-1)!.token).toBe('<|im_end|>');
  });

  it('refuses bad tools and tool calls with OpenAI-shaped 400s naming the parameter', async () => {
    const bad = async (body: Record<string, unknown>, param: string) => {
      const err = await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, ...body } as never).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.BadRequestError);
      expect((err as InstanceType<typeof OpenAI.BadRequestError>).param).toBe(param);
    };
    await bad({ tools: [{ type: 'function', function: { parameters: {} } }] }, 'tools[0].function.name');
    await bad({ tools: [{ type: 'code_interpreter' }] }, 'tools[0].type');
    await bad({ tools: TOOLS, tool_choice: 'sometimes' }, 'tool_choice');
    await bad({ tools: TOOLS, tool_choice: { type: 'function', function: { name: 'nope' } } }, 'tool_choice.function.name');
    await bad({ messages: [...MESSAGES, { role: 'assistant', tool_calls: [{ id: 'x', type: 'function', function: { name: 'f', arguments: '{oops' } }] }] }, 'messages[1].tool_calls[0].function.arguments');
  });
});

describe('edge replies over HTTP', () => {
  it('a call cut off by max_tokens stays content, finish_reason length, streamed and not', async () => {
    const ids = qwen3Tokenizer().encode('Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par');
    const { client } = await serve([...ids, EOS]);
    const res = await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, tools: TOOLS, max_tokens: ids.length - 2 });
    expect(res.choices[0].finish_reason).toBe('length');
    expect(res.choices[0].message.tool_calls).toBeUndefined();
    expect(res.choices[0].message.content).toBe(qwen3Tokenizer().decode(ids.slice(0, ids.length - 2)));
    const streamed = await collect(await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, tools: TOOLS, max_tokens: ids.length - 2, stream: true }));
    expect(withoutIds(streamed)).toEqual(fromMessage(res.choices[0]));
  });

  it('a reply streamed one byte per token (every byte boundary) equals the non-streamed one', async () => {
    const { client } = await serve([...byteTokens(REPLY), EOS]);
    const full = await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, tools: TOOLS });
    expect(fromMessage(full.choices[0]).toolCalls).toHaveLength(2);
    const streamed = await collect(await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, tools: TOOLS, stream: true }));
    expect(withoutIds(streamed)).toEqual(fromMessage(full.choices[0]));
  });

  it('a template that opens <think> in the prompt: the reply starts as reasoning', async () => {
    const { client, engine } = await serve([...qwen3Tokenizer().encode('Thinking it over.\n</think>\n\nThe answer is 4.'), EOS], thinkingTemplate);
    const res = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: '2+2?' }] });
    expect(qwen3Tokenizer().decode(engine.requests[0].promptTokens).endsWith('<|im_start|>assistant\n<think>\n')).toBe(true);
    const message = res.choices[0].message as OpenAI.ChatCompletionMessage & { reasoning_content?: string };
    expect(message.reasoning_content).toBe('Thinking it over.');
    expect(message.content).toBe('The answer is 4.');
    // max_tokens hit while thinking: all reasoning, content null
    const cut = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: '2+2?' }], max_tokens: 3 });
    expect(cut.choices[0].message.content).toBeNull();
    expect((cut.choices[0].message as { reasoning_content?: string }).reasoning_content).toBe('Thinking it over');
  });

  it('without a reasoning parser (the default, as vLLM) a reply cut off while thinking is content, never null', async () => {
    const script = [...qwen3Tokenizer().encode('Thinking it over.\n</think>\n\nThe answer is 4.'), EOS];
    const engine = new ScriptedEngine(script);
    const app = buildApp({ engine, tokenizer: qwen3Tokenizer(), template: thinkingTemplate, servedModelName: 'tiny' });
    servers.push(app);
    const client = new OpenAI({ baseURL: `${await listenLoopback(app)}/v1`, apiKey: 'unused', maxRetries: 0 });
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: '2+2?' }];
    const whole = await client.chat.completions.create({ model: 'tiny', messages });
    expect(whole.choices[0].message.content).toBe('Thinking it over.\n</think>\n\nThe answer is 4.');
    const cut = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 3 });
    expect(cut.choices[0].message.content).toBe('Thinking it over');
    expect(cut.choices[0].finish_reason).toBe('length');
    for (const res of [whole, cut]) {
      expect('reasoning_content' in res.choices[0].message).toBe(false);
      expect('reasoning' in res.choices[0].message).toBe(false);
    }
    let streamed = '';
    for await (const chunk of await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 3, stream: true })) {
      const delta = chunk.choices[0]?.delta as { content?: string; reasoning_content?: string; reasoning?: string } | undefined;
      expect(delta?.reasoning_content ?? delta?.reasoning).toBeUndefined();
      streamed += delta?.content ?? '';
    }
    expect(streamed).toBe('Thinking it over');
  });

  it('the parsers can be switched off (vLLM without --reasoning-parser / --tool-call-parser)', async () => {
    const { client } = await serve([...qwen3Tokenizer().encode(REPLY), EOS], qwen3, { reasoningParser: null, toolCallParser: null });
    const res = await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, tools: TOOLS, tool_choice: 'none' });
    expect(res.choices[0].message.content).toBe(REPLY);
    expect('reasoning_content' in res.choices[0].message).toBe(false);
    expect('reasoning' in res.choices[0].message).toBe(false);
    const err = await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, tools: TOOLS }).then(() => null, (e: unknown) => e);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).param).toBe('tool_choice');
  });

  it("a developer message reaches the model as the system message (OpenAI's meaning), not dropped", async () => {
    const { client, engine } = await serve([...qwen3Tokenizer().encode('Bonjour.'), EOS]);
    await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'developer', content: 'Answer in French.' }, { role: 'user', content: 'Hi' }] });
    expect(qwen3Tokenizer().decode(engine.requests[0].promptTokens)).toBe(
      '<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  it('an invalid block stays content verbatim and nothing crashes', async () => {
    const text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": }\n</tool_call>';
    const { client } = await serve([...qwen3Tokenizer().encode(text), EOS]);
    const res = await client.chat.completions.create({ model: 'tiny', messages: MESSAGES, tools: TOOLS });
    expect(res.choices[0]).toMatchObject({ finish_reason: 'stop', message: { content: text } });
    expect(res.choices[0].message.tool_calls).toBeUndefined();
  });
});
