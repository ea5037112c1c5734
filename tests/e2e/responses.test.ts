// The Responses API (POST /v1/responses) end to end: a generated random-weight checkpoint (real Qwen3
// vocabulary and chat template), the real addon, engine and server on loopback, driven by the
// official `openai` client 6.x (client.responses.create / .stream). Random weights never call a tool
// or write JSON by themselves: tool_choice required/named and text.format json_schema go through
// guided decoding, which makes every reply valid; logit_bias steers the model onto <think>.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, Output, stepCountIs, streamText, tool } from 'ai';
import { z } from 'zod';
import type { FastifyInstance } from 'fastify';
import { loadServedModel, type LoadedModel } from '../../src/cli/load-model.ts';
import { buildApp } from '../../src/server/app.ts';
import { ApiError } from '../../src/server/errors.ts';
import type { Engine, EngineEvent, GenerateRequest } from '../../src/engine/types.ts';
import type { GuidedDecoding } from '../../src/guided/guided-decoding.ts';
import { warmGuidedDecoding } from '../helpers/tiny-server.ts';
import { testModel } from '../helpers/model-fixtures.ts';
import { listenLoopback } from '../helpers/loopback.ts';
import { validator } from '../unit/guided-helpers.ts';
import { ResponseOutput } from '../../src/server/responses-output.ts';

const MODEL = 'tiny-moe';
const API_KEY = 'sk-responses-secret';
let loaded: LoadedModel;
let app: FastifyInstance;
let keyed: FastifyInstance;
let failing: FastifyInstance;
let failingOrigin: string;
let stateless: FastifyInstance;
let statelessOrigin: string;
let guidedDecoding: GuidedDecoding;
let origin: string;
let keyedOrigin: string;
let client: OpenAI;

beforeAll(async () => {
  const dir = await testModel({ seed: 21, layers: 2, hidden: 64, heads: 4, kvHeads: 2, headDim: 16, experts: 8, topK: 2, mlpOnlyLayers: [0], maxPositionEmbeddings: 2048 });
  loaded = await loadServedModel({ dir, threads: 2, kvCacheGiB: 0.25, generationConfig: 'vllm' });
  const vocabSize = loaded.config.native.vocabSize;
  guidedDecoding = await warmGuidedDecoding(loaded);
  const common = { engine: loaded.engine, tokenizer: loaded.tokenizer, template: loaded.template, servedModelName: MODEL, vocabSize, guidedDecoding };
  app = buildApp({ ...common, reasoningParser: 'qwen3' });
  keyed = buildApp({ ...common, apiKey: API_KEY });
  // The real engine, failing every request after its third token (as when draining ends requests).
  const engine = loaded.engine;
  const breaking: Engine = {
    maxModelLen: engine.maxModelLen,
    eosTokenIds: engine.eosTokenIds,
    stats: () => engine.stats(),
    close: (reason) => engine.close(reason),
    async *generate(req: GenerateRequest): AsyncGenerator<EngineEvent> {
      let tokens = 0;
      for await (const event of engine.generate(req)) {
        yield event;
        if (event.type === 'token' && ++tokens === 3) throw new ApiError(503, 'The server is shutting down (test).');
      }
    },
  };
  failing = buildApp({ ...common, engine: breaking });
  stateless = buildApp({ ...common, responseStoreBytes: 0 });
  statelessOrigin = await listenLoopback(stateless);
  origin = await listenLoopback(app);
  keyedOrigin = await listenLoopback(keyed);
  failingOrigin = await listenLoopback(failing);
  client = new OpenAI({ baseURL: `${origin}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120_000 });
}, 300_000);

afterAll(async () => {
  await app?.close();
  await keyed?.close();
  await failing?.close();
  await stateless?.close();
  await loaded?.engine.close();
  await guidedDecoding?.close();
});

const greedy = { model: MODEL, temperature: 0 } as const;

/** Prompt tokens of a chat request as /tokenize renders it (the chat route's rendering). */
async function chatPromptTokens(request: Record<string, unknown>): Promise<number> {
  const res = await fetch(`${origin}/tokenize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: MODEL, ...request }) });
  expect(res.status).toBe(200);
  return ((await res.json()) as { count: number }).count;
}

type Item = OpenAI.Responses.ResponseOutputItem;
const messages = (r: OpenAI.Responses.Response) => r.output.filter((i): i is OpenAI.Responses.ResponseOutputMessage => i.type === 'message');
const calls = (r: OpenAI.Responses.Response) => r.output.filter((i): i is OpenAI.Responses.ResponseFunctionToolCall => i.type === 'function_call');

/** The shape every Response has. */
function checkResponse(r: OpenAI.Responses.Response) {
  expect(r.id).toMatch(/^resp_[0-9a-f]{32}$/);
  expect(r.object).toBe('response');
  expect(Math.abs(r.created_at - Date.now() / 1000)).toBeLessThan(600);
  expect(r.model).toBe(MODEL);
  expect(typeof (r as unknown as { store: boolean }).store).toBe('boolean');
  const u = r.usage!;
  expect(u.total_tokens).toBe(u.input_tokens + u.output_tokens);
  expect(u.input_tokens_details.cached_tokens).toBe(0);
  expect(u.output_tokens_details.reasoning_tokens).toBeGreaterThanOrEqual(0);
  for (const m of messages(r)) {
    expect(m.id).toMatch(/^msg_/);
    expect(m.role).toBe('assistant');
    expect(m.content.every((p) => p.type === 'output_text' && Array.isArray(p.annotations))).toBe(true);
  }
  for (const c of calls(r)) {
    expect(c.id).toMatch(/^fc_/);
    expect(c.call_id).toMatch(/^call_/);
    expect(c.status).toBe('completed');
  }
  // output_text is the SDK's (create and stream helpers add it; raw events carry none): the message texts joined.
  if (r.output_text !== undefined) expect(r.output_text).toBe(messages(r).flatMap((m) => m.content.map((p) => (p.type === 'output_text' ? p.text : ''))).join(''));
}

/** The raw events of a streamed response, checked for numbering and for each item's own event order. */
async function collect(stream: AsyncIterable<OpenAI.Responses.ResponseStreamEvent>) {
  const events: OpenAI.Responses.ResponseStreamEvent[] = [];
  for await (const event of stream) events.push(event);
  expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
  expect(events.slice(0, 2).map((e) => e.type)).toEqual(['response.created', 'response.in_progress']);
  const last = events.at(-1)!;
  expect(['response.completed', 'response.incomplete']).toContain(last.type);
  const final = (last as OpenAI.Responses.ResponseCompletedEvent).response;
  // Each item: added, then its part/deltas/done events, then done, before the next item begins.
  const body = events.slice(2, -1).map((e) => e.type);
  const short: Record<string, string> = {
    'response.output_item.added': 'added',
    'response.content_part.added': 'part+',
    'response.output_text.delta': 'text*',
    'response.output_text.done': 'text=',
    'response.reasoning_text.delta': 'reason*',
    'response.reasoning_text.done': 'reason=',
    'response.content_part.done': 'part=',
    'response.function_call_arguments.delta': 'args*',
    'response.function_call_arguments.done': 'args=',
    'response.output_item.done': 'done',
  };
  const words = body.map((t) => short[t] ?? t);
  // Runs of deltas collapsed; then every item is one of three sentences.
  const sentence = words.filter((w, i) => !(w.endsWith('*') && words[i - 1] === w)).map((w) => `${w} `).join('');
  expect(sentence).toMatch(/^((added part\+ (text\* )?text= part= done|added part\+ (reason\* )?reason= part= done|added args\* args= done) )*$/);
  // Per item: deltas concatenate to the done text; the done item matches the final response's.
  const itemDone = events.filter((e): e is OpenAI.Responses.ResponseOutputItemDoneEvent => e.type === 'response.output_item.done');
  expect(itemDone.map((e) => e.item)).toEqual(final.output);
  expect(itemDone.map((e) => e.output_index)).toEqual(final.output.map((_, i) => i));
  for (const [i, item] of final.output.entries()) {
    const of = <T extends { output_index: number }>(type: string) => events.filter((e) => e.type === type && (e as unknown as T).output_index === i) as unknown as T[];
    if (item.type === 'message') {
      const text = of<OpenAI.Responses.ResponseTextDeltaEvent>('response.output_text.delta').map((e) => e.delta).join('');
      expect(text).toBe((item.content[0] as OpenAI.Responses.ResponseOutputText).text);
      expect(of<OpenAI.Responses.ResponseTextDoneEvent>('response.output_text.done')[0].text).toBe(text);
    } else if (item.type === 'function_call') {
      const args = of<OpenAI.Responses.ResponseFunctionCallArgumentsDeltaEvent>('response.function_call_arguments.delta').map((e) => e.delta).join('');
      expect(args).toBe(item.arguments);
      expect(of<OpenAI.Responses.ResponseFunctionCallArgumentsDoneEvent>('response.function_call_arguments.done')[0].arguments).toBe(args);
    } else if (item.type === 'reasoning') {
      const text = of<OpenAI.Responses.ResponseReasoningTextDeltaEvent>('response.reasoning_text.delta').map((e) => e.delta).join('');
      expect(text).toBe(item.content![0].text);
      expect(of<OpenAI.Responses.ResponseReasoningTextDoneEvent>('response.reasoning_text.done')[0].text).toBe(text);
    }
  }
  return { events, final };
}

/** What a streamed and a non-streamed response must share (ids and timestamps differ). */
const comparable = (r: OpenAI.Responses.Response) => ({
  status: r.status,
  incomplete_details: r.incomplete_details,
  usage: r.usage,
  output: r.output.map((item: Item) => {
    const { id: _id, ...rest } = item as Item & { id: string };
    return item.type === 'function_call' ? { ...rest, call_id: undefined } : rest;
  }),
});

const weather = {
  type: 'object',
  properties: { city: { type: 'string', minLength: 1, maxLength: 8 }, unit: { enum: ['celsius', 'fahrenheit'] } },
  required: ['city', 'unit'],
  additionalProperties: false,
};
const add = { type: 'object', properties: { a: { type: 'integer', minimum: -50, maximum: 50 }, b: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['a', 'b'] };
const tools: OpenAI.Responses.FunctionTool[] = [
  { type: 'function', name: 'get_weather', description: 'Weather in a city', parameters: weather, strict: true },
  { type: 'function', name: 'add', description: 'Adds', parameters: add, strict: false },
];
const argsValid: Record<string, (v: unknown) => boolean> = { get_weather: validator(weather), add: validator(add) };

describe('POST /v1/responses over the real engine', () => {
  it('a string input: text comes back, usage counts the rendered prompt, and it is the chat route’s greedy reply', async () => {
    const r = await client.responses.create({ ...greedy, input: 'Say something in 日本語 🎉', max_output_tokens: 20 });
    checkResponse(r);
    expect(r.output_text.length).toBeGreaterThan(0);
    const chatMessages = [{ role: 'user', content: 'Say something in 日本語 🎉' }];
    expect(r.usage!.input_tokens).toBe(await chatPromptTokens({ messages: chatMessages }));
    expect(r.usage!.output_tokens).toBeGreaterThan(0);
    expect(r.usage!.output_tokens).toBeLessThanOrEqual(20);
    // The same request through /v1/chat/completions: the same tokens, the same text.
    const chat = await client.chat.completions.create({ ...greedy, messages: chatMessages as OpenAI.ChatCompletionMessageParam[], max_completion_tokens: 20 });
    expect(r.usage!.input_tokens).toBe(chat.usage!.prompt_tokens);
    expect(r.usage!.output_tokens).toBe(chat.usage!.completion_tokens);
    expect(r.output_text).toBe(chat.choices[0].message.content ?? '');
    expect(r.status).toBe(chat.choices[0].finish_reason === 'length' ? 'incomplete' : 'completed');
    // Echoed request fields.
    expect(r.temperature).toBe(0);
    expect(r.max_output_tokens).toBe(20);
    expect(r.tools).toEqual([]);
    expect(r.tool_choice).toBe('auto');
    expect(r.parallel_tool_calls).toBe(true);
    expect(r.text).toEqual({ format: { type: 'text' } });
    expect(r.instructions).toBeNull();
  });

  it('instructions and message items (developer, input_text and output_text parts) render as the chat messages they map to', async () => {
    const r = await client.responses.create({
      ...greedy,
      instructions: 'You are a test.',
      input: [
        { role: 'developer', content: 'Be brief.' },
        { role: 'user', content: [{ type: 'input_text', text: 'Hi' }, { type: 'input_text', text: 'there' }] },
        { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'Hello!', annotations: [] }], id: 'msg_1', status: 'completed' },
        { type: 'message', role: 'user', content: 'Again' },
      ],
      max_output_tokens: 4,
      store: true,
      metadata: { run: 'e2e' },
      user: 'someone',
      reasoning: { effort: 'low' },
      top_p: 0.9,
    } as OpenAI.Responses.ResponseCreateParamsNonStreaming);
    checkResponse(r);
    expect(r.instructions).toBe('You are a test.');
    expect(r.metadata).toEqual({ run: 'e2e' });
    expect(r.top_p).toBe(0.9);
    const expected = await chatPromptTokens({
      messages: [
        { role: 'system', content: 'You are a test.' },
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi\nthere' },
        { role: 'assistant', content: 'Hello!' },
        { role: 'user', content: 'Again' },
      ],
    });
    expect(r.usage!.input_tokens).toBe(expected);
  });

  it('max_output_tokens small: status incomplete, reason max_output_tokens, the message item incomplete', async () => {
    const r = await client.responses.create({ ...greedy, input: 'Write a long story.', max_output_tokens: 3 });
    checkResponse(r);
    expect(r.status).toBe('incomplete');
    expect(r.incomplete_details).toEqual({ reason: 'max_output_tokens' });
    expect(r.usage!.output_tokens).toBe(3);
    expect((r.output.at(-1) as { status: string }).status).toBe('incomplete');
  });

  it('a function tool with tool_choice required: function_call items whose arguments validate; the next turn sends them back', async () => {
    const input = [{ role: 'user' as const, content: 'What is the weather in Paris?' }];
    for (let seed = 1; seed <= 3; seed++) {
      const r = await client.responses.create({ model: MODEL, temperature: 1, seed, input, tools, tool_choice: 'required', max_output_tokens: 300 } as OpenAI.Responses.ResponseCreateParamsNonStreaming);
      checkResponse(r);
      expect(r.status).toBe('completed');
      expect(r.tool_choice).toBe('required');
      expect(r.tools.map((t) => (t as OpenAI.Responses.FunctionTool).name)).toEqual(['get_weather', 'add']);
      const made = calls(r);
      expect(made.length).toBeGreaterThan(0);
      for (const c of made) {
        expect(Object.keys(argsValid)).toContain(c.name);
        expect(argsValid[c.name](JSON.parse(c.arguments))).toBe(true);
      }
      // Second turn: the calls and their outputs go back as items, rendered as the chat route renders
      // an assistant message with tool_calls and tool messages.
      const outputs = made.map((c, i) => ({ type: 'function_call_output' as const, call_id: c.call_id, output: `{"result": ${i}}` }));
      const next = await client.responses.create({ ...greedy, input: [...input, ...r.output, ...outputs] as OpenAI.Responses.ResponseInput, tools, max_output_tokens: 4 });
      checkResponse(next);
      const expected = await chatPromptTokens({
        tools: tools.map(({ type, name, description, parameters, strict }) => ({ type, function: { name, description, parameters, strict } })),
        messages: [
          ...input,
          { role: 'assistant', content: '', tool_calls: made.map((c) => ({ id: c.call_id, type: 'function', function: { name: c.name, arguments: c.arguments } })) },
          ...made.map((c, i) => ({ role: 'tool', tool_call_id: c.call_id, content: `{"result": ${i}}` })),
        ],
      });
      expect(next.usage!.input_tokens).toBe(expected);
    }
  });

  it('a named function and parallel_tool_calls false: exactly one call of that function', async () => {
    const r = await client.responses.create({
      model: MODEL, temperature: 1, seed: 4, input: 'Add 2 and 3.', tools, tool_choice: { type: 'function', name: 'add' }, parallel_tool_calls: false, max_output_tokens: 200,
    } as OpenAI.Responses.ResponseCreateParamsNonStreaming);
    checkResponse(r);
    expect(calls(r).map((c) => c.name)).toEqual(['add']);
    expect(argsValid.add(JSON.parse(calls(r)[0].arguments))).toBe(true);
    expect(r.tool_choice).toEqual({ type: 'function', name: 'add' });
    expect(r.parallel_tool_calls).toBe(false);
  });

  it('text.format json_schema: output_text parses and validates (streamed and not); json_object gives an object', async () => {
    const schema = {
      type: 'object',
      properties: { name: { type: 'string', minLength: 1, maxLength: 8 }, age: { type: 'integer', minimum: 0, maximum: 130 }, tags: { type: 'array', items: { enum: ['a', 'b'] }, maxItems: 3 } },
      required: ['name', 'age', 'tags'],
      additionalProperties: false,
    };
    const validate = validator(schema);
    const text = { format: { type: 'json_schema' as const, name: 'person', schema, strict: true } };
    for (let seed = 1; seed <= 2; seed++) {
      const params = { model: MODEL, temperature: 1, seed, input: 'A person, as JSON.', text, max_output_tokens: 300 } as OpenAI.Responses.ResponseCreateParamsNonStreaming;
      const r = await client.responses.create(params);
      checkResponse(r);
      expect(r.status).toBe('completed');
      expect(validate(JSON.parse(r.output_text))).toBe(true);
      expect(r.text).toEqual(text);
      const { final } = await collect(await client.responses.create({ ...params, stream: true }));
      expect(comparable(final)).toEqual(comparable(r));
    }
    const obj = await client.responses.create({ model: MODEL, temperature: 1, seed: 3, input: 'JSON please.', text: { format: { type: 'json_object' } }, max_output_tokens: 60 } as OpenAI.Responses.ResponseCreateParamsNonStreaming);
    expect(obj.output_text.startsWith('{')).toBe(true);
    if (obj.status === 'completed') expect(typeof JSON.parse(obj.output_text)).toBe('object');
  });
});

describe('streaming (stream: true)', () => {
  it('text: the Responses event sequence, numbered; deltas concatenate to the final text; the same as the non-streamed greedy reply', async () => {
    const params = { ...greedy, input: 'Tell me a story.', max_output_tokens: 24 } as const;
    const full = await client.responses.create(params);
    const { events, final } = await collect(await client.responses.create({ ...params, stream: true }));
    checkResponse(final);
    expect(comparable(final)).toEqual(comparable(full));
    const types = events.map((e) => e.type);
    expect(types.slice(2, 4)).toEqual(['response.output_item.added', 'response.content_part.added']);
    expect(types).toContain('response.output_text.delta');
    expect(types.slice(-4, -1)).toEqual(['response.output_text.done', 'response.content_part.done', 'response.output_item.done']);
    expect(types.at(-1)).toBe(full.status === 'incomplete' ? 'response.incomplete' : 'response.completed');
    const created = events[0] as OpenAI.Responses.ResponseCreatedEvent;
    expect(created.response.status).toBe('in_progress');
    expect(created.response.output).toEqual([]);
    expect(created.response.id).toBe(final.id);
    const deltas = events.filter((e): e is OpenAI.Responses.ResponseTextDeltaEvent => e.type === 'response.output_text.delta');
    expect(deltas.map((d) => d.delta).join('')).toBe(full.output_text);
  });

  it('client.responses.stream: function call argument deltas concatenate to the done arguments; finalResponse has the calls', async () => {
    const stream = client.responses.stream({ model: MODEL, temperature: 1, seed: 2, input: 'Weather in Oslo?', tools, tool_choice: 'required', max_output_tokens: 300 } as unknown as OpenAI.Responses.ResponseCreateParamsStreaming);
    const { events, final } = await collect(stream);
    const types = events.map((e) => e.type);
    expect(types).toContain('response.function_call_arguments.delta');
    expect(types).toContain('response.function_call_arguments.done');
    const finalResponse = await stream.finalResponse();
    // The helper adds parsed_arguments (null: the tools are not zod-made).
    expect(finalResponse.output.map((item) => ({ ...item, parsed_arguments: undefined }))).toEqual(final.output.map((item) => ({ ...item, parsed_arguments: undefined })));
    expect(calls(finalResponse).length).toBeGreaterThan(0);
    for (const c of calls(finalResponse)) expect(argsValid[c.name](JSON.parse(c.arguments))).toBe(true);
  });

  it('reasoning: with the qwen3 parser, <think> text is a reasoning item (reasoning_text deltas), counted as reasoning tokens', async () => {
    // logit_bias (a vLLM extra) makes the model open <think> and keep writing it: all reasoning.
    const params = { ...greedy, input: 'Think.', max_output_tokens: 6, logit_bias: { '151667': 100 } } as unknown as OpenAI.Responses.ResponseCreateParamsNonStreaming;
    const full = await client.responses.create(params);
    checkResponse(full);
    expect(full.output.map((i) => i.type)).toEqual(['reasoning']);
    const reasoning = full.output[0] as OpenAI.Responses.ResponseReasoningItem;
    expect(reasoning.id).toMatch(/^rs_/);
    expect(reasoning.summary).toEqual([]);
    expect(reasoning.content).toEqual([{ type: 'reasoning_text', text: '<think>'.repeat(5) }]);
    expect(full.status).toBe('incomplete');
    expect(full.output_text).toBe('');
    expect(full.usage!.output_tokens_details.reasoning_tokens).toBe(6);
    const { events, final } = await collect(await client.responses.create({ ...params, stream: true } as OpenAI.Responses.ResponseCreateParamsStreaming));
    expect(comparable(final)).toEqual(comparable(full));
    expect(events.map((e) => e.type)).toContain('response.reasoning_text.delta');
  });

  it('output logprobs (include message.output_text.logprobs, top_logprobs) on the text, streamed and not', async () => {
    const params = { ...greedy, input: 'Hi', max_output_tokens: 5, include: ['message.output_text.logprobs'], top_logprobs: 2 } as OpenAI.Responses.ResponseCreateParamsNonStreaming;
    const full = await client.responses.create(params);
    const part = messages(full)[0].content[0] as OpenAI.Responses.ResponseOutputText;
    expect(part.logprobs!.length).toBe(full.usage!.output_tokens);
    for (const lp of part.logprobs!) {
      expect(lp.logprob).toBeLessThanOrEqual(0);
      expect(lp.top_logprobs).toHaveLength(2);
    }
    const { final } = await collect(await client.responses.create({ ...params, stream: true } as OpenAI.Responses.ResponseCreateParamsStreaming));
    expect(comparable(final)).toEqual(comparable(full));
  });
});

describe('errors: OpenAI-shaped, naming the parameter', () => {
  async function refused(body: Record<string, unknown>, param: string, status = 400, at = origin) {
    const res = await fetch(`${at}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: MODEL, ...body }) });
    const json = (await res.json()) as { error: { message: string; type: string; param: string | null; code: number } };
    expect({ status: res.status, param: json.error.param }, json.error.message).toEqual({ status, param });
    expect(json.error.code).toBe(status);
    return json.error;
  }

  it('with the store off, previous_response_id and item_reference are 400s naming them, through the openai client too', async () => {
    const err = await refused({ input: 'Hi', previous_response_id: 'resp_123' }, 'previous_response_id', 400, statelessOrigin);
    expect(err.message).toMatch(/response store is off/);
    await refused({ input: [{ type: 'item_reference', id: 'msg_1' }] }, 'input[0].type', 400, statelessOrigin);
    const off = new OpenAI({ baseURL: `${statelessOrigin}/v1`, apiKey: 'unused', maxRetries: 0 });
    await expect(off.responses.create({ model: MODEL, input: 'Hi', previous_response_id: 'resp_123' })).rejects.toMatchObject({
      status: 400,
      param: 'previous_response_id',
    });
    const r = await off.responses.create({ ...greedy, input: 'Hi', max_output_tokens: 2 });
    expect((r as unknown as { store: boolean }).store).toBe(false);
  });

  it('unknown stored ids are 404s naming the parameter', async () => {
    await refused({ input: 'Hi', previous_response_id: 'resp_123' }, 'previous_response_id', 404);
    await refused({ input: [{ type: 'item_reference', id: 'msg_never_stored' }] }, 'input[0].id', 404);
    const res = await fetch(`${origin}/v1/responses/resp_nope`);
    expect(res.status).toBe(404);
  });

  it('unknown tool types, tool_choice for them, unsupported items and parts, bad formats', async () => {
    await refused({ input: 'Hi', tools: [{ type: 'web_search_preview' }] }, 'tools[0].type');
    await refused({ input: 'Hi', tools: [{ type: 'function', name: 'f' }, { type: 'mcp', server_label: 'x' }] }, 'tools[1].type');
    await refused({ input: 'Hi', tools: [{ type: 'function' }] }, 'tools[0].name');
    await refused({ input: 'Hi', tools: [{ type: 'function', name: 'f' }], tool_choice: { type: 'file_search' } }, 'tool_choice');
    await refused({ input: 'Hi', tools: [{ type: 'function', name: 'f' }], tool_choice: { type: 'function', name: 'g' } }, 'tool_choice.name');
    await refused({ input: 'Hi', tool_choice: 'required' }, 'tool_choice');
    await refused({ input: 'Hi', tools: [{ type: 'function', name: 'f' }], tool_choice: 'any' }, 'tool_choice');
    await refused({ input: 'Hi', tools: [{ type: 'function', name: 'f', parameters: 'x' }] }, 'tools[0].parameters');
    await refused({ input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'http://x/y.png' }] }] }, 'input[0].content[0].type');
    await refused({ input: [{ type: 'web_search_call', id: 'ws_1' }] }, 'input[0].type');
    await refused({ input: [{ role: 'tool', content: 'x' }] }, 'input[0].role');
    await refused({ input: [{ type: 'function_call', call_id: 'c', name: 'f', arguments: '{oops' }] }, 'input[0].arguments');
    await refused({ input: [{ type: 'function_call_output', output: 'x' }] }, 'input[0].call_id');
    await refused({ input: 'Hi', text: { format: { type: 'json_schema', name: 'x', schema: 'nope' } } }, 'text.format.schema');
    await refused({ input: 'Hi', text: { format: { type: 'yaml' } } }, 'text.format.type');
    await refused({ input: 'Hi', background: true }, 'background');
    await refused({ input: 'Hi', conversation: 'conv_1' }, 'conversation');
    await refused({ input: 'Hi', truncation: 'auto' }, 'truncation');
    await refused({ input: 'Hi', max_output_tokens: 5000 }, 'max_output_tokens');
    await refused({ input: 'Hi', temperature: '1' }, 'temperature');
    await refused({}, 'input');
    await refused({ input: [] }, 'input');
    await refused({ input: 'Hi', model: 'other' }, 'model', 404);
    const get = await fetch(`${origin}/v1/responses`);
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
  });

  it('an engine failure: a 503 before the stream starts; after, an error event the openai client raises', async () => {
    const failingClient = new OpenAI({ baseURL: `${failingOrigin}/v1`, apiKey: 'unused', maxRetries: 0 });
    await expect(failingClient.responses.create({ ...greedy, input: 'Hi', max_output_tokens: 10 })).rejects.toMatchObject({ status: 503 });
    const seen: string[] = [];
    const run = async () => {
      for await (const event of await failingClient.responses.create({ ...greedy, input: 'Hi', max_output_tokens: 10, stream: true })) seen.push(event.type);
    };
    await expect(run()).rejects.toThrow(/shutting down \(test\)/);
    expect(seen.slice(0, 2)).toEqual(['response.created', 'response.in_progress']);
    expect(seen).not.toContain('response.completed');
    // The raw stream: the last event is `error`, numbered like the rest.
    const res = await fetch(`${failingOrigin}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...greedy, input: 'Hi', max_output_tokens: 10, stream: true }) });
    const blocks = (await res.text()).trim().split('\n\n');
    const last = blocks.at(-1)!.split('\n');
    expect(last[0]).toBe('event: error');
    const data = JSON.parse(last[1].slice('data: '.length)) as { type: string; code: string; message: string; sequence_number: number };
    expect(data).toMatchObject({ type: 'error', code: '503', sequence_number: blocks.length - 1 });
    expect(blocks.every((b, i) => b.startsWith('event: ') && b.includes(`"sequence_number":${i}`))).toBe(true);
  });

  it('the API key is required when the server has one (401 without it), as on every /v1 route', async () => {
    const res = await fetch(`${keyedOrigin}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: MODEL, input: 'Hi' }) });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { code: number } }).error.code).toBe(401);
    const wrong = new OpenAI({ baseURL: `${keyedOrigin}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
    await expect(wrong.responses.create({ model: MODEL, input: 'Hi', max_output_tokens: 2 })).rejects.toMatchObject({ status: 401 });
    const right = new OpenAI({ baseURL: `${keyedOrigin}/v1`, apiKey: API_KEY, maxRetries: 0 });
    const r = await right.responses.create({ model: MODEL, input: 'Hi', max_output_tokens: 2 });
    expect(r.usage!.output_tokens).toBeGreaterThan(0);
  });
});

describe('stored responses (store: true, the default; --response-store-size)', () => {
  const text = (r: OpenAI.Responses.Response) => messages(r).map((m) => m.content.map((c) => (c.type === 'output_text' ? c.text : '')).join('')).join('');

  it('previous_response_id and item_reference continue the stored conversation exactly as if it were sent', async () => {
    const first = await client.responses.create({ ...greedy, instructions: 'Be brief.', input: 'Hi', max_output_tokens: 6 });
    expect((first as unknown as { store: boolean }).store).toBe(true);
    const explicit = await client.responses.create({
      ...greedy, store: false, max_output_tokens: 6,
      input: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: text(first) }, { role: 'user', content: 'More' }],
    });
    // instructions are not carried over (OpenAI's rule): the continuation has none unless it gives them.
    const continued = await client.responses.create({ ...greedy, previous_response_id: first.id, input: 'More', max_output_tokens: 6 });
    expect(continued.previous_response_id).toBe(first.id);
    expect(continued.usage!.input_tokens).toBe(explicit.usage!.input_tokens);
    expect(text(continued)).toBe(text(explicit));
    const referenced = await client.responses.create({
      ...greedy, max_output_tokens: 6,
      input: [{ role: 'user', content: 'Hi' }, { type: 'item_reference', id: messages(first)[0]!.id }, { role: 'user', content: 'More' }],
    });
    expect(referenced.usage!.input_tokens).toBe(explicit.usage!.input_tokens);
    expect(text(referenced)).toBe(text(explicit));
    // A chain: the third turn sees all of the first two.
    const third = await client.responses.create({ ...greedy, previous_response_id: continued.id, input: 'Again', max_output_tokens: 4 });
    expect(third.usage!.input_tokens).toBeGreaterThan(continued.usage!.input_tokens + continued.usage!.output_tokens);
  });

  it('GET and DELETE /v1/responses/{id}; store: false keeps nothing', async () => {
    const r = await client.responses.create({ ...greedy, input: 'Hi', max_output_tokens: 3 });
    expect(await client.responses.retrieve(r.id)).toEqual(r);
    await client.responses.delete(r.id);
    await expect(client.responses.retrieve(r.id)).rejects.toMatchObject({ status: 404 });
    const unstored = await client.responses.create({ ...greedy, input: 'Hi', max_output_tokens: 3, store: false });
    expect((unstored as unknown as { store: boolean }).store).toBe(false);
    await expect(client.responses.retrieve(unstored.id)).rejects.toMatchObject({ status: 404 });
    // A streamed response is stored when it completes, before its last event.
    const stream = await client.responses.create({ ...greedy, input: 'Hi', max_output_tokens: 3, stream: true });
    let id = '';
    for await (const event of stream) if (event.type === 'response.completed' || event.type === 'response.incomplete') id = event.response.id;
    expect((await client.responses.retrieve(id)).id).toBe(id);
  });

  it('the AI SDK with its defaults (store on: earlier output sent back as item_reference) runs a tool loop', async () => {
    const openai = createOpenAI({ baseURL: `${origin}/v1`, apiKey: 'unused' });
    const steps: string[] = [];
    const result = await generateText({
      model: openai(MODEL), prompt: 'Add 2 and 3.', temperature: 0, maxOutputTokens: 200, maxRetries: 0, toolChoice: 'required',
      tools: { add: tool({ description: 'Adds', inputSchema: z.object({ a: z.number().int().min(0).max(9), b: z.number().int().min(0).max(9) }), execute: async ({ a, b }) => { steps.push('add'); return a + b; } }) },
      stopWhen: stepCountIs(2),
    });
    expect(steps.length).toBeGreaterThan(0);
    expect(result.steps.length).toBe(2);
  });
});

// The Vercel AI SDK's default OpenAI model (`openai('model')`) calls /v1/responses.
describe('the AI SDK (@ai-sdk/openai, its default Responses model)', () => {
  const model = () => createOpenAI({ baseURL: `${origin}/v1`, apiKey: 'unused' })(MODEL);

  it('generateText and streamText: the same greedy text and usage as client.responses.create', async () => {
    const direct = await client.responses.create({ ...greedy, input: 'Hello there', max_output_tokens: 12 });
    const generated = await generateText({ model: model(), prompt: 'Hello there', maxOutputTokens: 12, temperature: 0, maxRetries: 0 });
    expect(generated.text).toBe(direct.output_text);
    expect(generated.usage.inputTokens).toBe(direct.usage!.input_tokens);
    expect(generated.usage.outputTokens).toBe(direct.usage!.output_tokens);
    expect(generated.finishReason).toBe(direct.status === 'incomplete' ? 'length' : 'stop');
    const streamed = streamText({ model: model(), prompt: 'Hello there', maxOutputTokens: 12, temperature: 0, maxRetries: 0 });
    expect(await streamed.text).toBe(direct.output_text);
    expect((await streamed.usage).outputTokens).toBe(direct.usage!.output_tokens);
  });

  it('a zod tool with toolChoice required: a tool call whose input the SDK validates; Output.object with a zod schema', async () => {
    const weatherInput = z.object({ city: z.string().min(1).max(8), unit: z.enum(['celsius', 'fahrenheit']) });
    const getWeather = tool({ description: 'Weather in a city', inputSchema: weatherInput, execute: async () => ({ temperature: 20 }) });
    // Two steps: the forced call, its result sent back (function_call + function_call_output items), then text.
    const called = await generateText({
      model: model(), prompt: 'Weather in Paris?', tools: { get_weather: getWeather }, toolChoice: 'required', maxOutputTokens: 200, maxRetries: 0,
      stopWhen: stepCountIs(2), prepareStep: ({ stepNumber }) => (stepNumber === 1 ? { toolChoice: 'none' } : {}),
    });
    expect(called.steps).toHaveLength(2);
    const first = called.steps[0];
    expect(first.toolCalls.length).toBeGreaterThan(0);
    for (const c of first.toolCalls) {
      expect(c.toolName).toBe('get_weather');
      expect(c.invalid ?? false).toBe(false);
      expect(weatherInput.safeParse(c.input).success).toBe(true);
    }
    expect(first.toolResults.map((r) => r.output)).toEqual(first.toolCalls.map(() => ({ temperature: 20 })));
    expect(called.steps[1].toolCalls).toEqual([]);
    expect(called.steps[1].usage.inputTokens).toBeGreaterThan(first.usage.inputTokens!);
    const person = z.object({ name: z.string().min(1).max(8), age: z.number().int().min(0).max(130) });
    const structured = await generateText({ model: model(), prompt: 'A person.', output: Output.object({ schema: person }), maxOutputTokens: 300, maxRetries: 0 });
    expect(person.safeParse(structured.output).success).toBe(true);
  });
});

describe('output items from the parsed reply (the builder alone, scripted text)', () => {
  it('reasoning, content, a call and more content: four items in order, the same whatever the delta sizes', () => {
    const text = '<think>\nplan\n</think>\n\nHello <tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>\nbye';
    const run = (step: number) => {
      const out = new ResponseOutput({ parsing: { reasoning: true, startInReasoning: false, toolCalls: true }, maxToolCalls: Infinity, logprobs: null, reasoningEndToken: null });
      const types: string[] = [];
      for (let i = 0; i < text.length; i += step) {
        const finish = i + step >= text.length ? { finish: { reason: 'stop' as const, stopReason: null, promptTokens: 1, completionTokens: 9 } } : {};
        for (const e of out.push({ index: 0, text: text.slice(i, i + step), tokens: [], ...finish })) types.push(e.type);
      }
      return { items: out.items.map((item) => ({ ...item, id: undefined, call_id: undefined })), types: types.filter((t, i) => t !== types[i - 1]) };
    };
    const whole = run(text.length);
    expect(run(1)).toEqual(whole);
    expect(run(7)).toEqual(whole);
    expect(whole.items).toEqual([
      { type: 'reasoning', summary: [], content: [{ type: 'reasoning_text', text: 'plan' }], status: 'completed' },
      { type: 'message', role: 'assistant', status: 'completed', content: [{ type: 'output_text', text: 'Hello', annotations: [], logprobs: [] }] },
      { type: 'function_call', name: 'f', arguments: '{"x": 1}', status: 'completed' },
      { type: 'message', role: 'assistant', status: 'completed', content: [{ type: 'output_text', text: '\nbye', annotations: [], logprobs: [] }] },
    ].map((item) => ({ ...item, id: undefined, call_id: undefined })));
    const part = ['response.output_item.added', 'response.content_part.added'];
    const close = ['response.content_part.done', 'response.output_item.done'];
    expect(whole.types).toEqual([
      ...part, 'response.reasoning_text.delta', 'response.reasoning_text.done', ...close,
      ...part, 'response.output_text.delta', 'response.output_text.done', ...close,
      'response.output_item.added', 'response.function_call_arguments.delta', 'response.function_call_arguments.done', 'response.output_item.done',
      ...part, 'response.output_text.delta', 'response.output_text.done', ...close,
    ]);
  });
});
