// Long-context prefill: one prompt of --tokens tokens (default 32K; 131072 for 128K) through the real
// engine on a small generated model (max_position_embeddings 131072, or more when prompt + generated
// tokens need it; chunked prefill under the engine's token budget, paged KV), or with --model slice on the
// real layer shapes (bench:peer's 2-layer slice), then a few decode steps. Prints prefill time, tokens/s, CPU
// time, peak RSS, the KV pool's bytes and the decode step times; --compare-llama runs llama.cpp
// (node-llama-cpp's CPU build) on the same weights for a time ratio, in the same arithmetic: --dtype bfloat16
// (the server's default) against a BF16 GGUF with a BF16 KV cache and flash attention, --dtype float32 (the
// exact mode) against an F32 GGUF (the tiny model) with an F32 KV cache and flash attention off.
//
//   node bin/run-ts.js bench/long-context.ts [--tokens 131072] [--model tiny|slice] [--dtype bfloat16|float32]
//                                            [--decode-steps 8] [--threads N] [--max-num-batched-tokens 2048]
//                                            [--compare-llama]
//
// The model (and its GGUF) is generated once into bench/.cache/ (git-ignored). Prefill time grows with
// the square of the prompt: 128K takes one to two minutes on two cores (see bench/README.md).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { getLlama, LlamaLogLevel, type ControlledEvaluateInputItem, type Token } from 'node-llama-cpp';
import { choiceArg, intArg } from '../src/cli/options.ts';
import { createEngine, DEFAULT_MAX_NUM_BATCHED_TOKENS } from '../src/engine/engine.ts';
import { convertToGguf } from '../src/gguf/convert.ts';
import { loadModelConfig } from '../src/model/config.ts';
import { makeModel, type MakeModelOptions } from '../src/model/make-model.ts';
import { loadAddon } from '../src/native/load-addon.ts';
import { ensureSlice } from './peer/slice-model.ts';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const BLOCK = 16;
/** Tongyi DeepResearch 30B-A3B's context; a longer prompt + generation gets a model with a longer one. */
const CONTEXT = 131072;
/** Fits the machine's time budget (prefill time grows with the square of the prompt). */
const DEFAULT_TOKENS = 32768;
/** The long-context test's shape: attention over the context dominates, as it does at 128K for the real model. */
const MODEL: MakeModelOptions = {
  seed: 1, layers: 2, hidden: 64, heads: 4, kvHeads: 2, headDim: 16, experts: 8, topK: 2, moeIntermediate: 32,
};
/** Tongyi DeepResearch 30B-A3B: layers × (K, V) × KV heads × head_dim, for extrapolating the KV pool. */
const REAL_KV_ELEMENTS_PER_TOKEN = 48 * 2 * 4 * 128;

interface Flags {
  tokens: number;
  decodeSteps: number;
  threads: number;
  maxNumBatchedTokens: number;
  compareLlama: boolean;
  llamaBatch: number;
  model: 'tiny' | 'slice';
  dtype: 'bfloat16' | 'float32';
  llamaKv?: 'bf16' | 'f32';
}

const MiB = 2 ** 20;
const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const peakRss = () => process.resourceUsage().maxRSS * 1024;
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function cachedModel(context: number): Promise<{ dir: string; gguf: string }> {
  const opts: MakeModelOptions = { ...MODEL, maxPositionEmbeddings: context };
  const dir = path.join(BENCH_DIR, '.cache', `long-context-${context}`);
  const marker = path.join(dir, '.complete');
  if (!fs.existsSync(marker) || fs.readFileSync(marker, 'utf8') !== JSON.stringify(opts)) {
    console.log(`generating the benchmark model (max_position_embeddings ${context}) into ${dir}`);
    const tmp = `${dir}.tmp-${process.pid}`;
    fs.rmSync(tmp, { recursive: true, force: true });
    await makeModel(tmp, opts);
    fs.writeFileSync(path.join(tmp, '.complete'), JSON.stringify(opts));
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
  }
  return { dir, gguf: path.join(dir, 'model.gguf') };
}

async function cachedGguf(dir: string, gguf: string, weightType: 'f32' | 'bf16'): Promise<void> {
  if (fs.existsSync(gguf)) return;
  console.log(`converting to ${gguf} (${weightType.toUpperCase()})`);
  const tmp = `${gguf}.tmp-${process.pid}`;
  await convertToGguf(dir, tmp, { weightType });
  fs.renameSync(tmp, gguf);
}

/** Deterministic random ordinary token ids (below Qwen3's special tokens). */
function promptTokens(n: number): number[] {
  let s = 0x2545f491;
  return Array.from({ length: n }, () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s % 151643;
  });
}

interface OurRun {
  prefillMs: number;
  prefillCpuMs: number;
  decodeMs: number[];
  tokens: number[];
}

async function runEngine(f: Flags, dir: string, prompt: number[]): Promise<OurRun> {
  const cfg = loadModelConfig(dir);
  const maxModelLen = f.tokens + f.decodeSteps + 1;
  const kvBlocks = Math.ceil(maxModelLen / BLOCK);
  const rssBefore = process.memoryUsage().rss;
  const precision = f.dtype === 'bfloat16' ? 'bf16' : 'f32';
  const model = await loadAddon().loadModel({
    files: cfg.files, config: cfg.native, threads: f.threads, kvBlocks, blockSize: BLOCK, maxNumBatchedTokens: f.maxNumBatchedTokens,
    activations: precision, kvCacheDtype: precision,
  });
  const rssLoaded = process.memoryUsage().rss;
  const engine = createEngine({
    model, maxModelLen, eosTokenIds: cfg.eosTokenIds, vocabSize: cfg.native.vocabSize, maxNumBatchedTokens: f.maxNumBatchedTokens,
  });
  const kvBytesPerToken = model.kvBytesPerToken;
  const elementBytes = kvBytesPerToken / (cfg.native.numLayers * 2 * cfg.native.numKvHeads * cfg.native.headDim);
  console.log(
    `model: ${cfg.native.numLayers} layers, ${cfg.native.numHeads}/${cfg.native.numKvHeads} heads × ${cfg.native.headDim}, ` +
      `weights ${mib(model.weightBytes)}; KV pool ${kvBlocks} blocks × ${BLOCK} = ${mib(kvBytesPerToken * kvBlocks * BLOCK)} ` +
      `(${kvBytesPerToken} B/token, ${elementBytes} B/element); RSS ${mib(rssBefore)} → ${mib(rssLoaded)} after load`,
  );
  const t0 = performance.now();
  const c0 = cpuMs();
  const run: OurRun = { prefillMs: 0, prefillCpuMs: 0, decodeMs: [], tokens: [] };
  const progress = setInterval(() => {
    const done = Math.min(f.tokens, engine.stats().steps * f.maxNumBatchedTokens);
    console.log(`  prefill ${done}/${f.tokens} tokens, ${secs(performance.now() - t0)}`);
  }, 30_000);
  let last = t0;
  try {
    const params = {
      maxTokens: f.decodeSteps + 1, temperature: 0, topP: 1, topK: 0, stopTokenIds: [], ignoreEos: true, logprobs: null, promptLogprobs: null,
    };
    for await (const e of engine.generate({ promptTokens: prompt, params })) {
      if (e.type !== 'token') continue;
      const now = performance.now();
      if (run.tokens.length === 0) {
        clearInterval(progress);
        run.prefillMs = now - t0;
        run.prefillCpuMs = cpuMs() - c0;
      } else run.decodeMs.push(now - last);
      last = now;
      run.tokens.push(e.token);
    }
  } finally {
    clearInterval(progress);
    await engine.close();
  }
  const kvBytes = kvBytesPerToken * f.tokens;
  console.log(`ours:  prefill ${f.tokens} tokens in ${secs(run.prefillMs)} = ${((f.tokens * 1000) / run.prefillMs).toFixed(0)} tok/s ` +
    `(CPU ${secs(run.prefillCpuMs)}, ${f.threads} threads, ${f.maxNumBatchedTokens}-token chunks, --dtype ${f.dtype})`);
  console.log(`       decode steps at ~${f.tokens} tokens: ${run.decodeMs.map((m) => m.toFixed(0)).join(', ')} ms ` +
    `(mean ${(run.decodeMs.reduce((a, b) => a + b, 0) / Math.max(1, run.decodeMs.length)).toFixed(0)} ms)`);
  console.log(`       KV for the prompt ${mib(kvBytes)}; peak RSS ${mib(peakRss())}; ` +
    `the real model's KV at ${elementBytes} B/element would be ${(REAL_KV_ELEMENTS_PER_TOKEN * elementBytes * f.tokens / 2 ** 30).toFixed(1)} GiB`);
  return run;
}

async function runLlama(f: Flags, gguf: string, heads: number, prompt: number[], ours: OurRun): Promise<void> {
  const contextSize = Math.ceil((f.tokens + f.decodeSteps + 1) / 256) * 256;
  // Our arithmetic's counterpart by default: bf16 → BF16 KV with flash attention (which widens K/V rows to f32, q
  // rounded to bf16); float32 → F32 KV without it (the parity tests' reference). --llama-kv f32 picks the latter
  // for bf16 too: llama.cpp's CPU flash attention runs one query row at a time (2.8× the time of its f32 path on
  // the tiny model at 32K), so at the real shapes only its f32 KQ matmuls finish in minutes.
  const bf16 = (f.llamaKv ?? (f.dtype === 'bfloat16' ? 'bf16' : 'f32')) === 'bf16';
  // Without flash attention llama.cpp holds a batch × context × heads f32 score matrix per layer graph.
  const scoreBytes = bf16 ? 0 : f.llamaBatch * contextSize * heads * 4;
  if (scoreBytes > 0.5 * os.freemem()) {
    console.log(`llama.cpp: skipped, its ${mib(scoreBytes)} attention scores for a ${f.llamaBatch}-token batch do not fit in free memory (${mib(os.freemem())}); try a smaller --llama-batch`);
    return;
  }
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, progressLogs: false });
  const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0, useMmap: true });
  try {
    const context = await model.createContext({
      contextSize, batchSize: f.llamaBatch, sequences: 1, threads: f.threads, flashAttention: bf16,
      experimentalKvCacheKeyType: bf16 ? 'BF16' : 'F32', experimentalKvCacheValueType: bf16 ? 'BF16' : 'F32',
    });
    try {
      const seq = context.getSequence();
      const c0 = cpuMs();
      const t0 = performance.now();
      const input: ControlledEvaluateInputItem[] = prompt.map((t, i) => (i < prompt.length - 1 ? (t as Token) : [t as Token, { generateNext: { token: true } }]));
      const res = await seq.controlledEvaluate(input);
      const prefillMs = performance.now() - t0;
      const prefillCpuMs = cpuMs() - c0;
      const tokens = [res[prompt.length - 1]?.next.token ?? -1];
      const decodeMs: number[] = [];
      // Teacher-forced on our tokens, so both decode over the same context.
      for (const tok of ours.tokens.slice(0, f.decodeSteps)) {
        const s = performance.now();
        const r = await seq.controlledEvaluate([[tok as Token, { generateNext: { token: true } }]]);
        decodeMs.push(performance.now() - s);
        tokens.push(r[0]?.next.token ?? -1);
      }
      const same = tokens.filter((t, i) => t === ours.tokens[i]).length;
      const meanDecode = decodeMs.reduce((a, b) => a + b, 0) / Math.max(1, decodeMs.length);
      const ourMeanDecode = ours.decodeMs.reduce((a, b) => a + b, 0) / Math.max(1, ours.decodeMs.length);
      console.log(`llama: prefill ${secs(prefillMs)} = ${((f.tokens * 1000) / prefillMs).toFixed(0)} tok/s (CPU ${secs(prefillCpuMs)}, ` +
        `${bf16 ? 'BF16 KV, flash attention on' : 'F32 KV, flash attention off'}, ${f.llamaBatch}-token batches); decode mean ${meanDecode.toFixed(0)} ms (one controlledEvaluate call each); peak RSS ${mib(peakRss())}`);
      console.log(`ratio ours/llama.cpp: prefill ${(ours.prefillMs / prefillMs).toFixed(2)}× (CPU ${(ours.prefillCpuMs / prefillCpuMs).toFixed(2)}×), ` +
        `decode ${(ourMeanDecode / meanDecode).toFixed(2)}×; greedy tokens agree at ${same}/${tokens.length} positions`);
    } finally {
      await context.dispose();
    }
  } finally {
    await model.dispose();
  }
}

async function main(): Promise<void> {
  const program = new Command()
    .name('long-context')
    .description('prefill time and memory of one long prompt on a generated model')
    .option('--tokens <n>', 'prompt length, e.g. 131072 for 128K', intArg(1), DEFAULT_TOKENS)
    .option('--decode-steps <n>', 'decode steps timed after the prefill', intArg(0), 8)
    .option('--threads <n>', 'compute threads', intArg(1), os.availableParallelism())
    .option('--max-num-batched-tokens <n>', 'the engine\'s per-step token budget (prefill chunk)', intArg(1), DEFAULT_MAX_NUM_BATCHED_TOKENS)
    .option('--compare-llama', 'also time llama.cpp on the same weights in the same arithmetic (see the top)', false)
    .option('--llama-batch <n>', 'llama.cpp batch (= ubatch) size', intArg(1), 1024)
    .option('--llama-kv <dtype>', "llama.cpp's KV cache: bf16 (flash attention on; the default with --dtype bfloat16) or f32 (flash attention off)", choiceArg(['bf16', 'f32'] as const))
    .option('--model <model>', "tiny (attention dominates) or slice (bench:peer's real layer shapes, 2 layers)", choiceArg(['tiny', 'slice'] as const), 'tiny')
    .option('--dtype <dtype>', "our arithmetic: bfloat16 (the server's default) or float32 (the exact mode)", choiceArg(['bfloat16', 'float32'] as const), 'bfloat16')
    .parse();
  const f = program.opts<Flags>();
  // Every position, generated ones included, must lie within max_position_embeddings.
  const needed = f.tokens + f.decodeSteps + 1;
  let dir: string, gguf: string, heads: number;
  if (f.model === 'slice') {
    if (f.dtype === 'float32' && f.compareLlama) throw new Error('--model slice has a BF16 GGUF only: compare it with --dtype bfloat16');
    const slice = await ensureSlice(path.join(BENCH_DIR, '.cache'), 2);
    if (needed > slice.options.maxPositionEmbeddings!) throw new Error(`the slice's context is ${slice.options.maxPositionEmbeddings} tokens`);
    ({ dir, gguf } = slice);
    heads = slice.options.heads!;
  } else {
    ({ dir, gguf } = await cachedModel(needed <= CONTEXT ? CONTEXT : Math.ceil(needed / 1024) * 1024));
    if (f.dtype === 'bfloat16') gguf = gguf.replace(/\.gguf$/, '-bf16.gguf');
    if (f.compareLlama) await cachedGguf(dir, gguf, f.dtype === 'bfloat16' ? 'bf16' : 'f32');
    heads = MODEL.heads!;
  }
  const prompt = promptTokens(f.tokens);
  const ours = await runEngine(f, dir, prompt);
  if (f.compareLlama) await runLlama(f, gguf, heads, prompt, ours);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
