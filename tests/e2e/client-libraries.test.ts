// The client libraries users point at a self-hosted server, driven as their docs show, against a real server on
// loopback (generated random-weight model, real addon, tokenizer, template and grammar worker): the openai SDK
// (Chat Completions and the Responses API), LangChain JS (@langchain/openai), the Vercel AI SDK (@ai-sdk/openai,
// whose default model speaks the Responses API, and @ai-sdk/openai-compatible) and LlamaIndex (@llamaindex/openai),
// all with zod 4 schemas. A random model says nothing sensible, so structure comes from guided decoding: schemas
// are bounded (maxLength, maxItems) so replies finish within max_tokens, and tools are forced where a call must come.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import { zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';
import { ChatOpenAI } from '@langchain/openai';
import { tool as lcTool } from '@langchain/core/tools';
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { generateObject, generateText, jsonSchema, streamText, tool as aiTool } from 'ai';
import { OpenAI as LlamaOpenAI } from '@llamaindex/openai';
import type { FastifyInstance } from 'fastify';
import { loadServedModel, type LoadedModel } from '../../src/cli/load-model.ts';
import { buildApp } from '../../src/server/app.ts';
import type { GuidedDecoding } from '../../src/guided/guided-decoding.ts';
import { warmGuidedDecoding } from '../helpers/tiny-server.ts';
import { testModel } from '../helpers/model-fixtures.ts';
import { listenLoopback } from '../helpers/loopback.ts';

const MODEL = 'compat-moe';
const KEY = 'sk-compat-test';
let loaded: LoadedModel;
let app: FastifyInstance;
let guidedDecoding: GuidedDecoding;
let baseURL = '';

beforeAll(async () => {
  const dir = await testModel({ seed: 21, layers: 2, hidden: 64, heads: 4, kvHeads: 2, headDim: 16, experts: 8, topK: 2, mlpOnlyLayers: [0], maxPositionEmbeddings: 4096 });
  loaded = await loadServedModel({ dir, threads: 2, kvCacheGiB: 0.25, generationConfig: 'vllm' });
  const vocabSize = loaded.config.native.vocabSize;
  guidedDecoding = await warmGuidedDecoding(loaded);
  app = buildApp({
    engine: loaded.engine, tokenizer: loaded.tokenizer, template: loaded.template, servedModelName: MODEL, vocabSize, guidedDecoding, apiKey: KEY,
  });
  baseURL = `${await listenLoopback(app)}/v1`;
}, 120_000);

afterAll(async () => {
  await app?.close();
  await loaded?.engine.close();
  await guidedDecoding?.close();
});

// zod 4 schemas as applications write them (bounded so a random model's reply ends within max_tokens).
const Person = z.object({
  name: z.string().min(1).max(12),
  age: z.number().int().min(0).max(120),
  // Formats are enforced by the grammar; bounded ones (fixed-length uuid, dates) keep a random model's reply short.
  id: z.uuid(),
  born: z.iso.date(),
  tags: z.array(z.enum(['a', 'b', 'c'])).max(3),
});
const Shape = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('circle'), radius: z.number().min(0).max(10) }),
  z.object({ kind: z.literal('square'), side: z.number().min(0.5).max(9.5) }),
]);
const Weather = z.object({ city: z.string().max(16), unit: z.enum(['c', 'f']) });

function expectValid<T>(schema: z.ZodType<T>, value: unknown): T {
  const r = schema.safeParse(value);
  if (!r.success) throw new Error(`invalid against the schema: ${JSON.stringify(value)}: ${r.error.message}`);
  return r.data;
}

describe('openai SDK 6', () => {
  const client = () => new OpenAI({ baseURL, apiKey: KEY, maxRetries: 0, timeout: 120_000 });

  it('chat.completions.parse with zodResponseFormat', async () => {
    const r = await client().chat.completions.parse({
      model: MODEL, temperature: 1, max_tokens: 400, messages: [{ role: 'user', content: 'A person, as JSON.' }],
      response_format: zodResponseFormat(Person, 'person'),
    });
    expectValid(Person, r.choices[0]!.message.parsed);
  });

  it('responses.create: text, a forced function call, and structured output', async () => {
    const c = client();
    const text = await c.responses.create({ model: MODEL, input: 'Hello', max_output_tokens: 8, temperature: 1 });
    expect(typeof text.output_text).toBe('string');
    expect(text.usage?.output_tokens).toBeGreaterThan(0);
    const call = await c.responses.create({
      model: MODEL, input: 'Weather in Paris?', max_output_tokens: 200, temperature: 1, tool_choice: 'required',
      tools: [{ type: 'function', name: 'get_weather', description: 'Weather of a city', strict: true, parameters: z.toJSONSchema(Weather) }],
    });
    const fc = call.output.find((o) => o.type === 'function_call');
    expect(fc?.type === 'function_call' && fc.name).toBe('get_weather');
    if (fc?.type === 'function_call') expectValid(Weather, JSON.parse(fc.arguments));
    const structured = await c.responses.create({
      model: MODEL, input: 'A shape.', max_output_tokens: 200, temperature: 1,
      text: { format: { type: 'json_schema', name: 'shape', strict: true, schema: z.toJSONSchema(Shape) } },
    });
    expectValid(Shape, JSON.parse(structured.output_text));
  });
});

describe('LangChain JS (@langchain/openai 1)', () => {
  const model = () =>
    new ChatOpenAI({ model: MODEL, apiKey: KEY, temperature: 1, maxTokens: 300, maxRetries: 0, configuration: { baseURL } });

  it('invoke', async () => {
    const m = await model().invoke('Hi');
    expect(typeof m.content).toBe('string');
  });

  it('withStructuredOutput(zod schema), json_schema and function calling', async () => {
    expectValid(Person, await model().withStructuredOutput(Person, { method: 'jsonSchema' }).invoke('A person.'));
    expectValid(Shape, await model().withStructuredOutput(Shape, { method: 'jsonSchema', name: 'shape' }).invoke('A shape.'));
    expectValid(Weather, await model().withStructuredOutput(Weather, { method: 'functionCalling', name: 'weather' }).invoke('Weather?'));
  });

  it('bindTools with a forced tool', async () => {
    const weather = lcTool(async () => 'sunny', { name: 'get_weather', description: 'Weather of a city', schema: Weather });
    const m = await model().bindTools([weather], { tool_choice: 'get_weather' }).invoke('Weather in Paris?');
    expect(m.tool_calls?.[0]?.name).toBe('get_weather');
    expectValid(Weather, m.tool_calls?.[0]?.args);
  });
});

describe('Vercel AI SDK 6', () => {
  it('openai(model): the Responses API, generateText and generateObject', async () => {
    const openai = createOpenAI({ baseURL, apiKey: KEY });
    const t = await generateText({ model: openai(MODEL), prompt: 'Hello', maxOutputTokens: 8, temperature: 1, maxRetries: 0 });
    expect(typeof t.text).toBe('string');
    expect(t.usage.outputTokens).toBeGreaterThan(0);
    const o = await generateObject({ model: openai(MODEL), schema: Person, prompt: 'A person.', maxOutputTokens: 400, temperature: 1, maxRetries: 0 });
    expectValid(Person, o.object);
  });

  it('openai.chat(model) and the openai-compatible provider: streamText, tools, generateObject', async () => {
    const openai = createOpenAI({ baseURL, apiKey: KEY });
    const compat = createOpenAICompatible({ name: 'moeserve', baseURL, apiKey: KEY, supportsStructuredOutputs: true });
    const s = streamText({ model: compat(MODEL), prompt: 'Count', maxOutputTokens: 12, temperature: 1, maxRetries: 0 });
    let streamed = '';
    for await (const piece of s.textStream) streamed += piece;
    expect(streamed).toBe(await s.text);
    const called = await generateText({
      model: openai.chat(MODEL), prompt: 'Weather in Paris?', maxOutputTokens: 200, temperature: 1, maxRetries: 0, toolChoice: 'required',
      tools: { get_weather: aiTool({ description: 'Weather of a city', inputSchema: Weather }) },
    });
    expect(called.toolCalls[0]?.toolName).toBe('get_weather');
    expectValid(Weather, called.toolCalls[0]?.input);
    const o = await generateObject({
      model: compat(MODEL), schema: jsonSchema<z.infer<typeof Shape>>(z.toJSONSchema(Shape) as Parameters<typeof jsonSchema>[0]),
      prompt: 'A shape.', maxOutputTokens: 200, temperature: 1, maxRetries: 0,
    });
    expectValid(Shape, o.object);
  });
});

describe('LlamaIndex (@llamaindex/openai)', () => {
  it('chat, streamed and not', async () => {
    const llm = new LlamaOpenAI({ model: MODEL, apiKey: KEY, baseURL, temperature: 1, maxTokens: 12, maxRetries: 0 });
    const r = await llm.chat({ messages: [{ role: 'user', content: 'Hi' }] });
    expect(typeof r.message.content).toBe('string');
    let streamed = '';
    for await (const chunk of await llm.chat({ messages: [{ role: 'user', content: 'Hi' }], stream: true })) streamed += chunk.delta;
    expect(typeof streamed).toBe('string');
  });
});

describe('the API key', () => {
  it('is required by every library (a 401 surfaces as its error)', async () => {
    const bad = new OpenAI({ baseURL, apiKey: 'wrong', maxRetries: 0 });
    await expect(bad.responses.create({ model: MODEL, input: 'x', max_output_tokens: 2 })).rejects.toMatchObject({ status: 401 });
    await expect(
      new ChatOpenAI({ model: MODEL, apiKey: 'wrong', maxRetries: 0, configuration: { baseURL } }).invoke('x'),
    ).rejects.toThrow(/401|auth/i);
    await expect(
      generateText({ model: createOpenAI({ baseURL, apiKey: 'wrong' })(MODEL), prompt: 'x', maxRetries: 0 }),
    ).rejects.toThrow(/401|auth|key/i);
  });
});
