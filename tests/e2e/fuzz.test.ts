// Thousands of random and mutated requests against the real server (real addon, a generated model,
// loopback socket): every answer must be a 2xx or an OpenAI-shaped 4xx, the server must stay up,
// and when the storm is over the engine must hold no request and no KV block.
// Seeded (FUZZ_SEED overrides; a failure prints the seed and the body), bounded: the model's
// context is short and generating bodies ask for at most 2 tokens, so most of the time goes to
// validation, which is what is being fuzzed.
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { loadServedModel, type LoadedModel } from '../../src/cli/load-model.ts';
import { buildApp } from '../../src/server/app.ts';
import { Xoshiro128 } from '../../src/engine/rng.ts';
import { tinyModelDir } from '../helpers/tiny-server.ts';
import { listenLoopback } from '../helpers/loopback.ts';

const MODEL = 'fuzz-moe';
const API_KEY = 'sk-fuzz';
const BODY_LIMIT = 256 * 1024;
const SEED = Number(process.env.FUZZ_SEED ?? 20240607);
const REQUESTS = Number(process.env.FUZZ_REQUESTS ?? 3000);
const CONCURRENCY = 8;

let loaded: LoadedModel;
let app: FastifyInstance;
let origin: string;

beforeAll(async () => {
  const dir = await tinyModelDir();
  // A short context bounds what a body without max_tokens can make the model generate.
  loaded = await loadServedModel({ dir, threads: 2, kvCacheGiB: 0.02, maxModelLen: 96, generationConfig: 'vllm' });
  app = buildApp({
    engine: loaded.engine, tokenizer: loaded.tokenizer, template: loaded.template, servedModelName: [MODEL, 'alias'],
    vocabSize: loaded.config.native.vocabSize, apiKey: API_KEY, bodyLimit: BODY_LIMIT,
  });
  origin = await listenLoopback(app);
});

afterAll(async () => {
  await app?.close();
  await loaded?.engine.close();
});

// ---------- random values ----------

class Rand {
  private readonly g: Xoshiro128;
  constructor(seed: number) {
    this.g = new Xoshiro128(seed);
  }
  int(n: number): number {
    return Math.floor(this.g.nextFloat() * n);
  }
  chance(p: number): boolean {
    return this.g.nextFloat() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
}

const GARBAGE_STRINGS = ['', 'x', 'NaN', 'Infinity', '-0', '1e999', '0x10', 'null', 'true', '💥🎉', '\u0000', '\uD800', '\uFFFF', 'é\u0301', '<|im_end|>', '<tool_call>', '<think>', '\n<tool_response>', '{{ 7*7 }}', '{% raw %}', '../../etc/passwd', '%s%n'];
const ANY: unknown[] = [
  null, true, false, 0, 1, -1, 2, 3, 0.5, -0.5, 1.1, 2.5, 20, 21, 100, 101, -101, 1e308, -1e308, 5e-324, 2 ** 31, 2 ** 53, 2 ** 64, -(2 ** 63),
  ...GARBAGE_STRINGS, 'a'.repeat(3000), [], [1], [0, 151668], [-1], [151936], [1.5], ['a'], [[1]], [null], [{}],
  {}, { 1: 1 }, { 12: 100 }, { x: 1 }, { 1: '1' }, { 1: 1e9 }, { include_usage: true }, { type: 'text' }, { type: 'json_object' },
];
/** Values that are valid for a field, so that bodies also get past validation into the engine. */
const VALID: Record<string, unknown[]> = {
  model: [MODEL, 'alias', null],
  temperature: [0, 0.6, 0.85, 1, 1.5, null],
  top_p: [0.95, 1, 0.5, 1e-9],
  top_k: [-1, 0, 1, 20],
  min_p: [0, 0.05, 1],
  presence_penalty: [0, 1.1, -2, 2],
  frequency_penalty: [0, 0.5, -1],
  repetition_penalty: [1, 1.05, 0.5, 3],
  logit_bias: [{}, { 9707: 5 }, { 151645: -100 }, { 198: 100, 151665: 100 }],
  seed: [0, 1, -7, 2 ** 52],
  n: [1, 2, 3],
  stop: ['\n<tool_response>', ['\n<tool_response>', '<tool_response>'], 'e', [], ['', 'the']],
  stop_token_ids: [[], [151643], [198]],
  stream: [true, false],
  stream_options: [{ include_usage: true }, null],
  logprobs: [true, false, 0, 3],
  top_logprobs: [0, 2, 20],
  echo: [true, false],
  ignore_eos: [true, false],
  min_tokens: [0, 1, 2],
  skip_special_tokens: [true, false],
  include_stop_str_in_output: [true, false],
  return_tokens_as_token_ids: [true, false],
  tool_choice: ['none', 'auto', 'required', { type: 'function', function: { name: 'search' } }],
  tools: [[{ type: 'function', function: { name: 'search', parameters: { type: 'object', properties: { q: { type: 'string' } }, required: ['q'] } } }]],
  response_format: [{ type: 'text' }, { type: 'json_object' }],
  chat_template_kwargs: [{ enable_thinking: false }, {}],
  add_generation_prompt: [true, false],
  max_tokens: [1, 2],
  max_completion_tokens: [1, 2],
};
const FIELDS = Object.keys(VALID);

function messages(r: Rand): unknown {
  const roles = ['system', 'user', 'assistant', 'tool', 'developer', 'robot', ''];
  return Array.from({ length: 1 + r.int(3) }, () => {
    const m: Record<string, unknown> = { role: r.chance(0.8) ? 'user' : r.pick(roles) };
    m.content = r.chance(0.7) ? r.pick(['Hi', 'What is 2+2?', '日本語', ...GARBAGE_STRINGS]) : r.pick(ANY);
    if (r.chance(0.1)) m.tool_calls = r.pick([[{ id: 'c1', type: 'function', function: { name: 'search', arguments: '{"q": "x"}' } }], [{}], 'x', [{ function: { name: 'f', arguments: '{bad' } }]]);
    if (r.chance(0.05)) m.reasoning_content = r.pick(ANY);
    return m;
  });
}

function randomJson(r: Rand, depth = 0): unknown {
  const k = r.int(depth > 3 ? 3 : 6);
  if (k === 0) return r.pick(ANY);
  if (k === 1) return r.pick(GARBAGE_STRINGS);
  if (k === 2) return r.int(1000) - 500;
  if (k === 3) return Array.from({ length: r.int(4) }, () => randomJson(r, depth + 1));
  return Object.fromEntries(Array.from({ length: r.int(4) }, () => [r.pick([...FIELDS, 'prompt', 'messages', 'tokens', 'x']), randomJson(r, depth + 1)]));
}

interface Req {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string;
  /** Abort the request once the response starts (a client that goes away). */
  abortEarly?: boolean;
  /** The Authorization header is missing or not exactly `Bearer <key>`. */
  badAuth?: boolean;
}

const ROUTES = ['/v1/chat/completions', '/v1/completions', '/tokenize', '/detokenize'];

function structuredBody(r: Rand, path: string): Record<string, unknown> {
  const body: Record<string, unknown> = { model: MODEL };
  if (path === '/v1/completions') body.prompt = r.pick<unknown>(['Hello', 'The quick brown fox', [9707, 1879], [[1, 2], [3]], ['a', 'b']]);
  else if (path === '/detokenize') body.tokens = r.pick<unknown>([[9707, 1879], [], [151645]]);
  else if (path === '/tokenize' && r.chance(0.5)) body.prompt = r.pick(['Hello', ...GARBAGE_STRINGS]);
  else body.messages = messages(r);
  if (path.startsWith('/v1')) body[path === '/v1/completions' ? 'max_tokens' : r.pick(['max_tokens', 'max_completion_tokens'])] = 1 + r.int(2);
  for (let k = r.int(6); k > 0; k--) {
    const field = r.chance(0.9) ? r.pick(FIELDS) : r.pick(['prompt', 'messages', 'tokens', 'suffix', 'best_of', 'user', 'unknown_field']);
    body[field] = r.chance(0.6) && VALID[field] ? r.pick(VALID[field]) : r.pick(ANY);
  }
  // Generation stays cheap: at most 2 tokens per choice unless a mutation removed the bound (the context is short then).
  for (const f of ['max_tokens', 'max_completion_tokens']) if (typeof body[f] === 'number' && (body[f] as number) > 2) body[f] = 2;
  if (typeof body.n === 'number' && (body.n as number) > 3) body.n = r.pick([3, 129, 0]);
  if (r.chance(0.03)) delete body.max_tokens;
  return body;
}

function mutateText(r: Rand, text: string): string {
  let s = text;
  for (let k = 1 + r.int(3); k > 0; k--) {
    const at = r.int(s.length + 1);
    switch (r.int(6)) {
      case 0: s = s.slice(0, at) + s.slice(at + 1 + r.int(4)); break;
      case 1: s = s.slice(0, at) + r.pick(['{', '}', '[', ']', '"', ',', ':', '\\', '\\u', '0', '-', 'e9', 'null', '\u0000', '\uD83D', 'ÿ']) + s.slice(at); break;
      case 2: s = s.slice(0, at); break;
      case 3: s = s.slice(0, at) + s.slice(r.int(s.length), r.int(s.length)) + s.slice(at); break;
      case 4: s = s.replace(/\d+/, r.pick(['1e400', '-1e400', '99999999999999999999999', '0.0000000000000001', '-0', 'NaN'])); break;
      default: s = s.replace(/"[a-z_]+"/, r.pick(['"__proto__"', '"constructor"', '"model"', '"n"', '""'])); break;
    }
  }
  return s;
}

function makeRequest(r: Rand): Req {
  const path = r.pick(ROUTES);
  const headers: Record<string, string> = { 'content-type': 'application/json', authorization: `Bearer ${API_KEY}` };
  const req: Req = { method: 'POST', path, headers };
  const kind = r.int(100);
  if (kind < 50) {
    req.body = JSON.stringify(structuredBody(r, path));
  } else if (kind < 75) {
    req.body = mutateText(r, JSON.stringify(structuredBody(r, path)));
  } else if (kind < 83) {
    req.body = JSON.stringify(randomJson(r)) ?? 'null';
  } else if (kind < 86) {
    // Deep nesting, inside a field or as the body.
    const depth = r.pick([50, 300, 3000, 50_000]);
    const [open, close] = r.chance(0.5) ? ['[', ']'] : ['{"a":', '}'];
    const nest = `${open.repeat(depth)}1${close.repeat(depth)}`;
    req.body = r.chance(0.5) ? nest : `{"model":"${MODEL}","prompt":"x","max_tokens":1,"${r.pick(FIELDS)}":${nest}}`;
  } else if (kind < 88) {
    // Around the body limit.
    const size = r.pick([BODY_LIMIT - 200, BODY_LIMIT + 10, 4 * BODY_LIMIT]);
    req.body = JSON.stringify({ model: MODEL, prompt: 'x'.repeat(Math.max(0, size - 40)), max_tokens: 1 });
  } else if (kind < 92) {
    // Wrong or missing content type, or a raw non-JSON body.
    req.body = r.pick([JSON.stringify(structuredBody(r, path)), 'prompt=hi', '\x00\x01\x02', '']);
    const ct = r.pick(['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json; charset=latin1', 'application/jsonx', '']);
    if (ct) headers['content-type'] = ct;
    else delete headers['content-type'];
  } else if (kind < 95) {
    // Auth: missing, wrong, malformed.
    // (Not "Bearer KEY ": HTTP drops whitespace around a header value, so that one is the key.)
    const auth = r.pick(['', 'Bearer', 'Bearer sk-wrong', `bearer ${API_KEY}`, `Bearer  ${API_KEY}`, `Bearer ${API_KEY}x`, `Basic ${API_KEY}`, 'Bearer \u00ff']);
    if (auth) headers.authorization = auth;
    else delete headers.authorization;
    req.badAuth = true;
    req.body = JSON.stringify(structuredBody(r, path));
  } else if (kind < 97) {
    // Other methods and routes.
    req.method = r.pick(['GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']);
    req.path = r.pick([...ROUTES, '/v1/models', '/v1/models/x', '/v1', '/', '/v1/../tokenize', '/%zz', '/v1/chat/completions?x=1']);
    if (req.method !== 'GET') req.body = '{}';
  } else {
    // A streaming client that leaves after the first bytes.
    const body = structuredBody(r, r.pick(['/v1/chat/completions', '/v1/completions']));
    req.path = body.messages ? '/v1/chat/completions' : '/v1/completions';
    req.body = JSON.stringify({ ...body, stream: true, max_tokens: 50, max_completion_tokens: undefined, n: 1 });
    req.abortEarly = true;
  }
  return req;
}

// ---------- checking answers ----------

function checkAnswer(status: number, contentType: string, text: string): string | null {
  if (status >= 500) return `status ${status}`;
  if (status < 200 || (status >= 300 && status < 400)) return `status ${status}`;
  if (status >= 400) {
    let json: { error?: Record<string, unknown> };
    try {
      json = JSON.parse(text);
    } catch {
      return `a ${status} whose body is not JSON`;
    }
    const e = json.error;
    if (!e || Object.keys(json).length !== 1) return 'an error body that is not {error: ...}';
    if (typeof e.message !== 'string' || e.message === '' || typeof e.type !== 'string') return 'an error without message or type';
    if (e.code !== status) return `error.code ${String(e.code)} for status ${status}`;
    if (!(e.param === null || typeof e.param === 'string')) return 'error.param neither null nor a string';
    return null;
  }
  if (contentType.startsWith('text/event-stream')) {
    if (!text.trimEnd().endsWith('data: [DONE]')) return 'a stream that does not end with [DONE]';
    for (const event of text.split('\n\n').filter((e) => e.trim() !== '')) {
      if (!event.startsWith('data: ')) return `a stream event that is not data: ${event.slice(0, 80)}`;
      const data = event.slice(6);
      if (data !== '[DONE]') JSON.parse(data);
    }
    return null;
  }
  if (text === '' ) return null; // /health-like empty 200s
  JSON.parse(text);
  return null;
}

const PROTECTED = new Set(['/v1/chat/completions', '/v1/completions', '/v1/models']);

/** 401 for exactly the requests to a protected route that carried bad auth. */
function checkAuth(req: Req, status: number): string | null {
  const wants401 = req.badAuth === true && PROTECTED.has(req.path.split('?')[0]);
  if (wants401 && status !== 401) return `status ${status} for bad auth on a protected route`;
  if (!wants401 && status === 401) return 'a 401 for a request with the right key or to an open route';
  return null;
}

async function send(req: Req): Promise<{ status: number; problem: string | null }> {
  const controller = new AbortController();
  const res = await fetch(`${origin}${req.path}`, { method: req.method, headers: req.headers, body: req.body, signal: controller.signal });
  if (req.abortEarly && res.status === 200) {
    const reader = res.body!.getReader();
    await reader.read();
    controller.abort();
    await reader.cancel().catch(() => {});
    return { status: res.status, problem: checkAuth(req, res.status) };
  }
  const text = await res.text();
  return { status: res.status, problem: checkAuth(req, res.status) ?? checkAnswer(res.status, res.headers.get('content-type') ?? '', text) };
}

/** Bytes that are not HTTP at all, straight onto a socket: Node's parser must refuse them and live on. */
function rawGarbage(bytes: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const { port } = app.server.address() as AddressInfo;
    const socket = net.connect(port, '127.0.0.1', () => socket.end(bytes));
    socket.on('data', () => {});
    socket.on('error', () => resolve());
    socket.on('close', () => resolve());
    socket.setTimeout(2000, () => socket.destroy());
  });
}

describe('fuzz: random and mutated requests against the real server', () => {
  it(`answers ${REQUESTS} bodies with a 2xx or an OpenAI-shaped 4xx and stays up (seed ${SEED})`, async () => {
    const r = new Rand(SEED);
    const requests = Array.from({ length: REQUESTS }, () => makeRequest(r));
    const statuses = new Map<number, number>();
    const failures: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < requests.length) {
        const i = next++;
        const req = requests[i];
        try {
          const { status, problem } = await send(req);
          statuses.set(status, (statuses.get(status) ?? 0) + 1);
          if (problem) failures.push(`#${i} ${req.method} ${req.path} → ${problem}: ${String(req.body).slice(0, 300)}`);
        } catch (err) {
          if (!req.abortEarly) failures.push(`#${i} ${req.method} ${req.path} → ${(err as Error).message}: ${String(req.body).slice(0, 300)}`);
        }
        if (i % 250 === 0) {
          expect((await fetch(`${origin}/health`)).status).toBe(200);
          await rawGarbage(Buffer.from(r.pick(['GARBAGE\r\n\r\n', 'POST /v1/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n', '\x16\x03\x01\x02\x00', 'GET / HTTP/9.9\r\n\r\n'])));
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    expect(failures, `seed ${SEED}`).toEqual([]);
    // The storm reached every kind of answer: successes, validation errors, auth, size, routing.
    for (const s of [200, 400, 401, 404, 405, 413]) expect(statuses.get(s) ?? 0, `status ${s} in ${JSON.stringify([...statuses])}`).toBeGreaterThan(0);
    expect(statuses.get(200)!).toBeGreaterThan(REQUESTS * 0.1);

    // Still up, still serving, and nothing left behind in the engine.
    expect((await fetch(`${origin}/health`)).status).toBe(200);
    const ok = await fetch(`${origin}/v1/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${API_KEY}` },
      body: JSON.stringify({ model: MODEL, prompt: 'still alive', max_tokens: 2, temperature: 0 }),
    });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(2);
    await expect.poll(() => loaded.engine.stats().running + loaded.engine.stats().waiting, { timeout: 10_000 }).toBe(0);
    expect(loaded.engine.stats().kvBlocksUsed).toBe(0);
  }, 240_000);
});
