// Guided decoding end to end: a generated random-weight checkpoint (real Qwen3 vocabulary), the real
// addon, engine and server on loopback, the official `openai` client. Sampling at temperature 1 from
// random weights, the grammar does all the work: every reply must parse and validate. Grammars are
// compiled in the grammar worker: huge schemas get 400s, and the event loop stays responsive.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import type { FastifyInstance } from 'fastify';
import { loadServedModel, type LoadedModel } from '../../src/cli/load-model.ts';
import { buildApp } from '../../src/server/app.ts';
import type { GuidedDecoding } from '../../src/guided/guided-decoding.ts';
import { warmGuidedDecoding } from '../helpers/tiny-server.ts';
import { testModel } from '../helpers/model-fixtures.ts';
import { enumLoad, quantile, validator, watchEventLoop, type EnumLoad } from '../unit/guided-helpers.ts';
import { listenLoopback } from '../helpers/loopback.ts';

const MODEL = 'guided-moe';
let loaded: LoadedModel;
let app: FastifyInstance;
let bare: FastifyInstance;
let guidedDecoding: GuidedDecoding;
let origin: string;
let client: OpenAI;
let bareClient: OpenAI;

const openai = (url: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120_000 });

beforeAll(async () => {
  const dir = await testModel({ seed: 21, layers: 2, hidden: 64, heads: 4, kvHeads: 2, headDim: 16, experts: 8, topK: 2, mlpOnlyLayers: [0], maxPositionEmbeddings: 2048 });
  loaded = await loadServedModel({ dir, threads: 2, kvCacheGiB: 0.25, generationConfig: 'vllm' });
  const vocabSize = loaded.config.native.vocabSize;
  const common = { engine: loaded.engine, tokenizer: loaded.tokenizer, template: loaded.template, servedModelName: MODEL, vocabSize };
  guidedDecoding = await warmGuidedDecoding(loaded);
  app = buildApp({ ...common, guidedDecoding });
  bare = buildApp(common);
  origin = await listenLoopback(app);
  client = openai(origin);
  bareClient = openai(await listenLoopback(bare));
}, 120_000);

afterAll(async () => {
  await app?.close();
  await bare?.close();
  await loaded?.engine.close();
  await guidedDecoding?.close();
});

const sampling = { model: MODEL, temperature: 1, max_tokens: 300 } as const;
const messages = [{ role: 'user' as const, content: 'Answer in JSON.' }];

const schemas: Record<string, Record<string, unknown>> = {
  person: {
    type: 'object',
    properties: { name: { type: 'string', minLength: 1, maxLength: 8 }, age: { type: 'integer', minimum: 0, maximum: 130 }, email: { type: 'string', maxLength: 10 } },
    required: ['name', 'age'],
    additionalProperties: false,
  },
  order: {
    type: 'object',
    properties: {
      id: { type: 'integer' },
      status: { enum: ['open', 'shipped', 'closed'] },
      items: { type: 'array', items: { type: 'object', properties: { sku: { type: 'string', maxLength: 6 }, qty: { type: 'integer', minimum: 1, maximum: 9 }, price: { type: 'number', minimum: 0, maximum: 1000 } }, required: ['sku', 'qty', 'price'] }, minItems: 1, maxItems: 3 },
      paid: { type: 'boolean' },
    },
    required: ['id', 'status', 'items', 'paid'],
  },
  nested: {
    $defs: { point: { type: 'object', properties: { x: { type: 'number', minimum: -100, maximum: 100 }, y: { type: 'number', minimum: -100, maximum: 100 } }, required: ['x', 'y'] } },
    type: 'object',
    properties: { from: { $ref: '#/$defs/point' }, to: { $ref: '#/$defs/point' }, label: { anyOf: [{ type: 'string', maxLength: 5 }, { type: 'null' }] } },
    required: ['from', 'to', 'label'],
  },
  list: { type: 'array', items: { enum: ['red', 'green', 'blue', 1, null] }, minItems: 2, maxItems: 5 },
};

/** A streamed chat reply put back together: content and tool calls by index. */
async function streamed(body: OpenAI.Chat.ChatCompletionCreateParamsStreaming) {
  let content = '';
  let finish: string | null = null;
  const calls: { id?: string; name: string; arguments: string }[] = [];
  for await (const chunk of await client.chat.completions.create(body)) {
    for (const c of chunk.choices) {
      content += c.delta.content ?? '';
      for (const tc of c.delta.tool_calls ?? []) {
        calls[tc.index] ??= { name: '', arguments: '' };
        if (tc.id) calls[tc.index].id = tc.id;
        calls[tc.index].name += tc.function?.name ?? '';
        calls[tc.index].arguments += tc.function?.arguments ?? '';
      }
      finish = c.finish_reason ?? finish;
    }
  }
  return { content, finish, calls };
}

describe('guided decoding over the real engine and server', () => {
  for (const [name, schema] of Object.entries(schemas)) {
    it(`response_format json_schema '${name}': valid JSON, streamed and not`, async () => {
      const validate = validator(schema);
      const response_format = { type: 'json_schema' as const, json_schema: { name, schema, strict: true } };
      for (let seed = 1; seed <= 3; seed++) {
        const full = await client.chat.completions.create({ ...sampling, messages, response_format, seed });
        const choice = full.choices[0];
        expect(choice.finish_reason).toBe('stop');
        const value = JSON.parse(choice.message.content!) as unknown;
        if (!validate(value)) throw new Error(`${choice.message.content} is invalid: ${JSON.stringify(validate.errors)}`);
        const stream = await streamed({ ...sampling, messages, response_format, seed, stream: true });
        expect(stream).toEqual({ content: choice.message.content, finish: 'stop', calls: [] });
      }
    });
  }

  it('response_format json_object on chat, and json_schema on completions (n = 2)', async () => {
    const obj = await client.chat.completions.create({ ...sampling, max_tokens: 40, messages, response_format: { type: 'json_object' }, seed: 5 });
    const text = obj.choices[0].message.content!;
    expect(text.startsWith('{')).toBe(true);
    if (obj.choices[0].finish_reason === 'stop') expect(typeof JSON.parse(text)).toBe('object');
    const validate = validator(schemas.person);
    const done = await client.completions.create({
      model: MODEL, prompt: 'JSON:', temperature: 1, max_tokens: 200, n: 2, seed: 9,
      // @ts-expect-error response_format is a vLLM extension on completions
      response_format: { type: 'json_schema', json_schema: { name: 'person', schema: schemas.person } },
    });
    expect(done.choices).toHaveLength(2);
    for (const c of done.choices) {
      expect(c.finish_reason).toBe('stop');
      expect(validate(JSON.parse(c.text))).toBe(true);
    }
  });

  const weather = { type: 'object', properties: { city: { type: 'string', minLength: 1, maxLength: 8 }, unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city', 'unit'] };
  const add = { type: 'object', properties: { a: { type: 'integer', minimum: -50, maximum: 50 }, b: { type: 'number', minimum: 0, maximum: 10 } }, required: ['a', 'b'] };
  const tools: OpenAI.Chat.ChatCompletionTool[] = [
    { type: 'function', function: { name: 'get_weather', description: 'Weather in a city', parameters: weather } },
    { type: 'function', function: { name: 'add', description: 'Adds', parameters: add } },
  ];
  const argsValid: Record<string, (v: unknown) => boolean> = { get_weather: validator(weather), add: validator(add) };
  const toolMessages = [{ role: 'user' as const, content: 'What is the weather in Paris?' }];

  function checkCalls(calls: { name: string; arguments: string }[], only?: string) {
    expect(calls.length).toBeGreaterThanOrEqual(1);
    for (const call of calls) {
      if (only) expect(call.name).toBe(only);
      expect(argsValid[call.name]?.(JSON.parse(call.arguments))).toBe(true);
    }
  }

  it("tool_choice 'required': schema-valid tool_calls, streamed and not", async () => {
    for (let seed = 1; seed <= 4; seed++) {
      const full = await client.chat.completions.create({ ...sampling, messages: toolMessages, tools, tool_choice: 'required', seed });
      const choice = full.choices[0];
      expect(choice.finish_reason).toBe('tool_calls');
      const calls = choice.message.tool_calls!.map((c) => (c.type === 'function' ? c.function : { name: '', arguments: '' }));
      checkCalls(calls);
      expect(choice.message.tool_calls!.every((c) => c.type === 'function' && typeof c.id === 'string')).toBe(true);
      const stream = await streamed({ ...sampling, messages: toolMessages, tools, tool_choice: 'required', seed, stream: true });
      expect(stream.finish).toBe('tool_calls');
      expect(stream.calls.map(({ name, arguments: a }) => ({ name, arguments: a }))).toEqual(calls.map(({ name, arguments: a }) => ({ name, arguments: a })));
    }
  });

  it('a named function: exactly one call of it; parallel_tool_calls false: one call', async () => {
    for (let seed = 1; seed <= 3; seed++) {
      const tool_choice = { type: 'function' as const, function: { name: 'add' } };
      const full = await client.chat.completions.create({ ...sampling, messages: toolMessages, tools, tool_choice, seed });
      const calls = full.choices[0].message.tool_calls!.map((c) => (c.type === 'function' ? c.function : { name: '', arguments: '' }));
      expect(calls).toHaveLength(1);
      checkCalls(calls, 'add');
      const stream = await streamed({ ...sampling, messages: toolMessages, tools, tool_choice, seed, stream: true });
      expect(stream.calls).toHaveLength(1);
      checkCalls(stream.calls, 'add');
      const single = await client.chat.completions.create({ ...sampling, messages: toolMessages, tools, tool_choice: 'required', parallel_tool_calls: false, seed });
      expect(single.choices[0].message.tool_calls).toHaveLength(1);
    }
  });

  it("max_tokens cutting a constrained reply: finish 'length', the text a valid prefix", async () => {
    const response_format = { type: 'json_schema' as const, json_schema: { name: 'order', schema: schemas.order } };
    const cut = await client.chat.completions.create({ ...sampling, max_tokens: 6, messages, response_format, seed: 2 });
    expect(cut.choices[0].finish_reason).toBe('length');
    const text = cut.choices[0].message.content!;
    expect(text.startsWith('{"id": ')).toBe(true);
    expect(() => JSON.parse(text)).toThrow();
  });

  it('refuses unsupported schemas and unavailable guided decoding with 400s naming the parameter', async () => {
    const bad = { type: 'json_schema' as const, json_schema: { name: 'x', schema: { type: 'string', pattern: '^(?=[a-z])' } } };
    await expect(client.chat.completions.create({ ...sampling, messages, response_format: bad })).rejects.toMatchObject({
      status: 400,
      param: 'response_format.json_schema.schema',
    });
    const badTool: OpenAI.Chat.ChatCompletionTool[] = [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { a: { type: 'integer', multipleOf: 2 } } } } }];
    await expect(client.chat.completions.create({ ...sampling, messages, tools: badTool, tool_choice: 'required' })).rejects.toMatchObject({
      status: 400,
      param: 'tools[0].function.parameters',
    });
    await expect(client.chat.completions.create({ ...sampling, messages, response_format: { type: 'json_object' } })).resolves.toBeDefined();
    await expect(bareClient.chat.completions.create({ ...sampling, messages, response_format: { type: 'json_object' } })).rejects.toMatchObject({ status: 400, param: 'response_format' });
    // The server is still serving.
    const ok = await client.chat.completions.create({ ...sampling, max_tokens: 4, messages });
    expect(ok.choices[0].finish_reason).toBe('length');
  });

  interface Responsiveness {
    /** The event loop's longest stall (ms). */
    maxGap: number;
    /** /health's p99 latency (ms). */
    p99: number;
    /** The longest guidedDecoding.guides() ran on the event loop before returning its promise (ms): cloning the spec to the worker. */
    guidesSync: number;
  }

  /**
   * How responsive the server stays while `enums` requests run, best of up to three attempts: other
   * processes share this machine's cores and stall any thread for tens of ms now and then, while
   * blocking by the server's own work (the issue: 24 s) shows in every attempt.
   */
  async function responsiveness(enums: number[], check: (r: EnumLoad) => void): Promise<Responsiveness> {
    const guides = guidedDecoding.guides.bind(guidedDecoding);
    let guidesSync = 0;
    guidedDecoding.guides = (...args) => {
      const t0 = performance.now();
      const guided = guides(...args);
      guidesSync = Math.max(guidesSync, performance.now() - t0);
      return guided;
    };
    let best: Responsiveness = { maxGap: Infinity, p99: Infinity, guidesSync: Infinity };
    try {
      for (let attempt = 0; attempt < 3 && (best.maxGap >= 50 || best.p99 >= 50); attempt++) {
        guidesSync = 0;
        const t0 = performance.now();
        const r = await enumLoad(origin, MODEL, enums, watchEventLoop, `${attempt}:`);
        check(r);
        const now = { maxGap: r.maxGap, p99: quantile(r.health, 0.99), guidesSync };
        console.log(
          `${enums.length} requests with ${enums[0]}-value enums, attempt ${attempt + 1}: ${(performance.now() - t0).toFixed(0)} ms; longest event-loop stall ` +
            `${now.maxGap.toFixed(1)} ms; /health p99 ${now.p99.toFixed(1)} ms over ${r.health.length} checks; guides() on the loop ${now.guidesSync.toFixed(1)} ms at most`,
        );
        if (Math.max(now.maxGap, now.p99) < Math.max(best.maxGap, best.p99)) best = now;
      }
    } finally {
      guidedDecoding.guides = guides;
    }
    return best;
  }

  it('issue 11: four concurrent 60,000-value enums are refused (400 naming the parameter) without blocking the event loop', async () => {
    const best = await responsiveness([60_000, 60_000, 60_000, 60_000], (r) => {
      for (const { status, body } of r.replies) {
        expect(status).toBe(400);
        expect(body.error).toMatchObject({ param: 'response_format.json_schema.schema', message: expect.stringContaining('too large for guided decoding') });
      }
    });
    // Guided decoding's share of the loop: cloning each 60,000-value schema to the worker.
    expect(best.guidesSync).toBeLessThan(25);
    // What else stalls the loop is the server parsing the four 700 KB JSON bodies (10-20 ms each on
    // an idle core, back to back when they arrive together): src/server's, bounded by its bodyLimit.
    expect(best.maxGap).toBeLessThan(250);
  });

  it('grammars that take the worker a second to compile leave the event loop and /health responsive', async () => {
    // 4,000-value enums (just under the limit), compiled one after another in the grammar worker: on
    // the event loop (as before issue 11) each blocked it for 0.15-0.4 s.
    const best = await responsiveness([4_000, 4_000, 4_000, 4_000], (r) => {
      for (const { status } of r.replies) expect(status).toBe(200);
    });
    expect(best.maxGap).toBeLessThan(50);
    expect(best.p99).toBeLessThan(50);
  });

  it('no matcher outlives its request: finished and aborted requests free theirs in the grammar worker', async () => {
    const long = { type: 'json_schema' as const, json_schema: { name: 'words', schema: { type: 'array', items: { type: 'string', maxLength: 6 }, minItems: 40 } } };
    let alive = 0;
    const aborted = [1, 2, 3].map(async (seed) => {
      const controller = new AbortController();
      const stream = await client.chat.completions.create({ ...sampling, messages, response_format: long, seed, stream: true }, { signal: controller.signal });
      let chunks = 0;
      try {
        for await (const chunk of stream) {
          void chunk;
          if (++chunks === 2) alive = Math.max(alive, (await guidedDecoding.stats()).matchers);
          if (chunks === 3) controller.abort();
        }
      } catch (err) {
        if (!controller.signal.aborted) throw err;
      }
      return chunks;
    });
    const finished = client.completions.create({
      model: MODEL, prompt: 'JSON:', temperature: 1, max_tokens: 20, n: 3, seed: 4,
      // @ts-expect-error response_format is a vLLM extension on completions
      response_format: long,
    });
    expect(await Promise.all(aborted)).toEqual([3, 3, 3]);
    expect(alive).toBeGreaterThanOrEqual(1);
    expect((await finished).choices).toHaveLength(3);
    for (let i = 0; ; i++) {
      const { matchers } = await guidedDecoding.stats();
      if (matchers === 0) break;
      if (i === 100) throw new Error(`${matchers} matchers still alive in the grammar worker`);
      await new Promise((r) => setTimeout(r, 20));
    }
  });
});
