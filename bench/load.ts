// Load test: many streaming clients at once, per concurrency level: requests/s, output tokens/s,
// time to first token and inter-token latency (p50/p99), printed and written to bench/results/.
//
//   node bin/run-ts.js bench/load.ts [--model DIR | --url URL] [--concurrency 1,4,16,32] [--requests N]
//                                    [--max-tokens 64] [--prompt-tokens 256]
//
// Without --model or --url it serves a generated random checkpoint (made once into bench/.cache/),
// in this process. Prompts are distinct random token ids (no prefix-cache hits); every request gets
// exactly --max-tokens tokens (ignore_eos) and asks for logprobs 0, so each token arrives in its own
// chunk and chunk gaps are inter-token latencies.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { Command } from 'commander';
import OpenAI from 'openai';
import { makeModel, type MakeModelOptions } from '../src/model/make-model.ts';
import { loadServedModel, type LoadedModel } from '../src/cli/load-model.ts';
import { describeKvPlan } from '../src/cli/kv-plan.ts';
import { buildApp } from '../src/server/app.ts';
import { intArg, intListArg, positiveNumberArg } from '../src/cli/options.ts';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
/** Small enough for two cores, big enough that the model (not HTTP) dominates a step. */
const BENCH_MODEL: MakeModelOptions = {
  seed: 1, layers: 4, hidden: 256, heads: 8, kvHeads: 2, headDim: 32, experts: 16, topK: 4, moeIntermediate: 128,
  intermediate: 512, mlpOnlyLayers: [0], maxPositionEmbeddings: 8192,
};

interface Flags {
  model?: string;
  url?: string;
  concurrency: number[];
  requests?: number;
  maxTokens: number;
  promptTokens: number;
  threads: number;
  kvCacheMemory?: number;
  maxNumSeqs?: number;
  maxNumBatchedTokens?: number;
  prefixCaching: boolean;
}

interface RequestTiming {
  ttftMs: number;
  itlMs: number[];
  outputTokens: number;
  e2eMs: number;
}

export interface LevelResult {
  concurrency: number;
  requests: number;
  durationS: number;
  requestsPerS: number;
  outputTokensPerS: number;
  ttftMs: { p50: number; p99: number; mean: number };
  itlMs: { p50: number; p99: number; mean: number };
  e2eMs: { p50: number; p99: number };
}

/** Linear interpolation between closest ranks (numpy's default). */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const x = (p / 100) * (s.length - 1);
  const lo = Math.floor(x);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (x - lo);
}

const mean = (v: number[]) => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN);

async function benchModelDir(): Promise<string> {
  const dir = path.join(BENCH_DIR, '.cache', 'load-model');
  const marker = path.join(dir, '.complete');
  if (fs.existsSync(marker) && fs.readFileSync(marker, 'utf8') === JSON.stringify(BENCH_MODEL)) return dir;
  console.log(`generating the benchmark model into ${dir}`);
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  await makeModel(tmp, BENCH_MODEL);
  fs.writeFileSync(path.join(tmp, '.complete'), JSON.stringify(BENCH_MODEL));
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
  return dir;
}

/** Deterministic distinct prompts of random ordinary token ids (below Qwen3's special tokens). */
function prompt(index: number, length: number): number[] {
  let s = (0x9e3779b9 ^ (index + 1) * 2654435761) >>> 0 || 1;
  return Array.from({ length }, () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s % 151643;
  });
}

async function oneRequest(client: OpenAI, model: string, ids: number[], maxTokens: number): Promise<RequestTiming> {
  const t0 = performance.now();
  const stream = await client.completions.create({
    model, prompt: ids, max_tokens: maxTokens, temperature: 0, stream: true, logprobs: 0,
    stream_options: { include_usage: true }, ignore_eos: true,
  } as OpenAI.CompletionCreateParamsStreaming);
  let first = NaN;
  let last = NaN;
  let usageTokens = NaN;
  let counted = 0;
  const itlMs: number[] = [];
  for await (const chunk of stream) {
    if (chunk.usage) usageTokens = chunk.usage.completion_tokens;
    const n = chunk.choices.reduce((k, c) => k + (c.logprobs?.tokens?.length ?? (c.text ? 1 : 0)), 0);
    if (n === 0) continue;
    const t = performance.now();
    if (Number.isNaN(first)) first = t;
    else itlMs.push(t - last);
    last = t;
    counted += n;
  }
  const end = performance.now();
  return { ttftMs: first - t0, itlMs, outputTokens: Number.isNaN(usageTokens) ? counted : usageTokens, e2eMs: end - t0 };
}

async function runLevel(client: OpenAI, model: string, concurrency: number, requests: number, f: Flags): Promise<LevelResult> {
  const timings: RequestTiming[] = [];
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    for (let i = next++; i < requests; i = next++) timings.push(await oneRequest(client, model, prompt(concurrency * 100_000 + i, f.promptTokens), f.maxTokens));
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, requests) }, worker));
  const durationS = (performance.now() - t0) / 1000;
  const ttft = timings.map((t) => t.ttftMs);
  const itl = timings.flatMap((t) => t.itlMs);
  const e2e = timings.map((t) => t.e2eMs);
  const r2 = (x: number) => Math.round(x * 100) / 100;
  return {
    concurrency,
    requests,
    durationS: r2(durationS),
    requestsPerS: r2(requests / durationS),
    outputTokensPerS: r2(timings.reduce((n, t) => n + t.outputTokens, 0) / durationS),
    ttftMs: { p50: r2(percentile(ttft, 50)), p99: r2(percentile(ttft, 99)), mean: r2(mean(ttft)) },
    itlMs: { p50: r2(percentile(itl, 50)), p99: r2(percentile(itl, 99)), mean: r2(mean(itl)) },
    e2eMs: { p50: r2(percentile(e2e, 50)), p99: r2(percentile(e2e, 99)) },
  };
}

function table(levels: LevelResult[]): string {
  const head = ['concurrency', 'requests', 'req/s', 'out tok/s', 'TTFT p50 ms', 'TTFT p99 ms', 'ITL p50 ms', 'ITL p99 ms'];
  const rows = levels.map((l) => [l.concurrency, l.requests, l.requestsPerS, l.outputTokensPerS, l.ttftMs.p50, l.ttftMs.p99, l.itlMs.p50, l.itlMs.p99].map(String));
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i])).join('  ');
  return [line(head), ...rows.map(line)].join('\n');
}

async function main(f: Flags): Promise<void> {
  let loaded: LoadedModel | null = null;
  let close = async () => {};
  let baseURL = f.url;
  let server: Record<string, unknown> = { url: f.url };
  if (!baseURL) {
    const dir = path.resolve(f.model ?? (await benchModelDir()));
    loaded = await loadServedModel({
      dir, threads: f.threads, kvCacheGiB: f.kvCacheMemory, maxNumSeqs: f.maxNumSeqs, maxNumBatchedTokens: f.maxNumBatchedTokens,
      enablePrefixCaching: f.prefixCaching, generationConfig: 'vllm',
    });
    console.log(describeKvPlan(loaded.kv, loaded.maxModelLen));
    const app = buildApp({ engine: loaded.engine, tokenizer: loaded.tokenizer, template: loaded.template, servedModelName: path.basename(dir), vocabSize: loaded.config.native.vocabSize });
    await app.listen({ host: '127.0.0.1', port: 0 });
    baseURL = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/v1`;
    const engine = loaded.engine;
    close = async () => {
      await app.close();
      await engine.close();
    };
    server = {
      model: dir, generated: f.model === undefined ? BENCH_MODEL : null, threads: f.threads, kvBlocks: loaded.kvBlocks,
      maxNumSeqs: loaded.maxNumSeqs, maxNumBatchedTokens: loaded.maxNumBatchedTokens, prefixCaching: loaded.enablePrefixCaching,
    };
  }
  const client = new OpenAI({ baseURL, apiKey: process.env.OPENAI_API_KEY ?? 'unused', maxRetries: 0, timeout: 600_000 });
  try {
    const model = (await client.models.list()).data[0]?.id;
    if (!model) throw new Error(`${baseURL}/models lists no model`);
    await oneRequest(client, model, prompt(-1, f.promptTokens), 4); // warm-up
    const levels: LevelResult[] = [];
    for (const c of f.concurrency) {
      const requests = f.requests ?? Math.max(16, 2 * c);
      levels.push(await runLevel(client, model, c, requests, f));
      console.log(`concurrency ${c}: ${JSON.stringify(levels.at(-1))}`);
    }
    console.log(`\n${model}: ${f.promptTokens} prompt tokens, ${f.maxTokens} output tokens per request\n${table(levels)}`);
    const outDir = path.join(BENCH_DIR, 'results');
    fs.mkdirSync(outDir, { recursive: true });
    const file = path.join(outDir, `load-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    const machine = { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memGiB: Math.round(os.totalmem() / 1024 ** 3), node: process.version };
    fs.writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), machine, server, model, promptTokens: f.promptTokens, maxTokens: f.maxTokens, levels }, null, 2) + '\n');
    console.log(`\nwrote ${path.relative(process.cwd(), file)}`);
  } finally {
    await close();
  }
}

const program = new Command('load')
  .description('drive a moeserve (or any OpenAI-compatible) server with concurrent streaming completions')
  .option('--model <dir>', 'checkpoint to serve in-process (default: a generated benchmark model)')
  .option('--url <url>', 'benchmark a running server instead, e.g. http://127.0.0.1:8000/v1')
  .option('--concurrency <list>', 'concurrency levels, comma-separated', intListArg, [1, 4, 16, 32])
  .option('--requests <n>', 'requests per level (default: max(16, 2 × concurrency))', intArg(1))
  .option('--max-tokens <n>', 'output tokens per request', intArg(1), 64)
  .option('--prompt-tokens <n>', 'prompt tokens per request', intArg(1), 256)
  .option('--threads <n>', 'CPU threads for the in-process model', intArg(1), os.availableParallelism())
  .option('--kv-cache-memory <GiB>', 'KV cache of the in-process model', positiveNumberArg)
  .option('--max-num-seqs <n>', 'in-process scheduler: most sequences per step', intArg(1))
  .option('--max-num-batched-tokens <n>', 'in-process scheduler: token budget per step', intArg(1))
  .option('--no-prefix-caching', 'in-process: turn prefix caching off');

program.parse(process.argv);
const flags = program.opts<Flags>();
if (flags.model && flags.url) program.error('pass --model or --url, not both');
if (flags.concurrency.length === 0 || flags.concurrency.some((c) => c < 1)) program.error('--concurrency needs levels >= 1');
await main(flags);
