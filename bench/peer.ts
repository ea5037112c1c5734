// moeserve vs llama.cpp, side by side on the same weights, machine and threads (issue 5).
//
//   npm run bench:peer [-- --runs 4] [-- --layers 8] [-- --quick] [-- --help]
//
// Generates (once, into bench/.cache/) a checkpoint with Tongyi DeepResearch 30B-A3B's real layer
// shapes but few layers, and its BF16 GGUF; serves it with `moeserve serve` (child process, HTTP,
// streaming, the openai client) and loads it into llama.cpp (node-llama-cpp, in-process); then, run
// after run, alternating the engines: prefill, single-stream decode, and N concurrent streams. Prints
// the medians and the moeserve / llama.cpp ratios, writes bench/results/peer-<date>.{json,svg}, and
// (full runs) bench/RESULTS.md with the machine it ran on. See bench/RESULTS.md for what each figure is.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { choiceArg, intArg, intListArg } from '../src/cli/options.ts';
import { describeBandwidth, measureMachineBandwidth } from './peer/bandwidth.ts';
import { bf16RowBytes, codedRowBytes, decodeBytesPerToken, type DecodeShape } from './peer/decode-bytes.ts';
import type { PeerEngine } from './peer/engine.ts';
import { startLlama } from './peer/llama-engine.ts';
import { ContentionMeter, loadAverage, machineInfo } from './peer/machine.ts';
import { startMoeserve } from './peer/moeserve-engine.ts';
import { writeReport, type EngineBandwidth, type PeerReport } from './peer/report.ts';
import { ensureSlice } from './peer/slice-model.ts';
import { summarize, textTable, type EngineKey, type MetricSpec, type Sample } from './peer/summary.ts';
import { DEFAULT_WORKLOAD, median, promptKey, promptTokens, type Workload } from './peer/workload.ts';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.dirname(BENCH_DIR);

interface Flags {
  layers: number;
  runs: number;
  quick: boolean;
  threads: number;
  concurrency: number[];
  prefillTokens: number;
  decodeTokens: number;
  concurrentTokens: number;
  llamaFlashAttention: 'auto' | 'on' | 'off';
  sequential: boolean;
  /** commander's --no-mlock. */
  mlock: boolean;
  /** moeserve's --dtype. */
  dtype: 'auto' | 'bfloat16' | 'float32';
}

interface Phase {
  spec: MetricSpec;
  run(e: PeerEngine, run: number): Promise<Omit<Sample, 'cpuMs' | 'foreignCores' | 'run'>>;
}

function phases(w: Workload): Phase[] {
  const list: Phase[] = [
    {
      spec: {
        id: 'prefill', label: `prefill ${w.prefillTokens}`, unit: 'prompt tok/s', target: 1.2,
        definition: `one ${w.prefillTokens}-token prompt, one output token: ${w.prefillTokens} ÷ the time from sending the prompt to receiving the first token (HTTP request included for moeserve).`,
      },
      run: async (e, run) => {
        const s = await e.prefill(promptTokens(promptKey('prefill', run), w.prefillTokens));
        return { value: (w.prefillTokens * 1000) / s.ms, wallMs: s.ms, tokens: w.prefillTokens };
      },
    },
    {
      spec: {
        id: 'decode', label: 'decode 1 stream', unit: 'output tok/s', target: 1.25,
        definition: `one stream, a ${w.shortPromptTokens}-token prompt then ${w.decodeTokens} tokens: (${w.decodeTokens} − 1) ÷ the time from the first output token to the last (prefill excluded).`,
      },
      run: async (e, run) => {
        const s = await e.decode(promptTokens(promptKey('decode', run), w.shortPromptTokens), w.decodeTokens);
        return { value: ((s.tokens - 1) * 1000) / s.decodeMs, wallMs: s.decodeMs, tokens: s.tokens - 1, notes: { firstTokenMs: Math.round(s.firstTokenMs) } };
      },
    },
  ];
  for (const n of w.concurrency) {
    list.push({
      spec: {
        id: `c${n}`, label: `${n} streams`, unit: 'output tok/s, all streams', target: n === 16 ? 2.0 : undefined,
        definition: `${n} streams at once, each a distinct ${w.shortPromptTokens}-token prompt + ${w.concurrentTokens} tokens: ${n} × ${w.concurrentTokens} output tokens ÷ the time from starting all to the end of the last (their prompts included).`,
      },
      run: async (e, run) => {
        const prompts = Array.from({ length: n }, (_, i) => promptTokens(promptKey('concurrent', run, i, n), w.shortPromptTokens));
        const s = await e.concurrent(prompts, w.concurrentTokens);
        return { value: (s.tokens * 1000) / s.ms, wallMs: s.ms, tokens: s.tokens, notes: s.notes };
      },
    });
  }
  return list;
}

async function warmUp(e: PeerEngine, w: Workload): Promise<void> {
  // Page in every expert (a long prompt routes to all of them) and let each engine size its buffers
  // for the largest batch, outside the measurements.
  await e.prefill(promptTokens(promptKey('warmup', 0), w.prefillTokens));
  await e.decode(promptTokens(promptKey('warmup', 1), w.shortPromptTokens), 4);
  const n = Math.max(...w.concurrency, 1);
  await e.concurrent(Array.from({ length: n }, (_, i) => promptTokens(promptKey('warmup', 2, i), w.shortPromptTokens)), 2);
}

/** Untimed, right before each sample: a short prompt that routes to most experts (64 tokens × top-8). */
const TOUCH_TOKENS = 64;

/**
 * Serves an untimed prompt of TOUCH_TOKENS, so that no sample is measured cold after its engine sat idle
 * while the other one ran. On the VM of RESULTS.md, after 30 s idle moeserve's next 512-token prefill took
 * 645-718 ms against 500-540 ms (its lm_head 30 ms against 10): the OS's proactive reclaim (DAMON) had aged its
 * pages. After this touch it took 544-578 ms, as without the idle time. Without it, the alternation put one
 * engine's prefill after the other's long 32-stream sample in every other run.
 */
async function touch(e: PeerEngine, run: number, phase: number): Promise<void> {
  await e.prefill(promptTokens(promptKey('touch', run, phase), TOUCH_TOKENS));
}

function llamaVersion(): string {
  try {
    // Its exports map hides package.json from require(); read it beside the resolved entry point.
    let dir = path.dirname(createRequire(import.meta.url).resolve('node-llama-cpp'));
    while (!fs.existsSync(path.join(dir, 'package.json')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
    return (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

async function main(f: Flags): Promise<void> {
  const started = performance.now();
  const date = new Date().toISOString();
  const loadBefore = loadAverage();
  const machine = machineInfo();
  console.log(`${machine.cpuModel}, ${machine.cores} cores, ${machine.memGiB} GiB, node ${machine.node}, moeserve SIMD ${machine.moeserveSimd}; load average ${loadBefore.join(' ')}`);
  const workload: Workload = {
    ...DEFAULT_WORKLOAD,
    concurrency: f.concurrency,
    prefillTokens: f.prefillTokens,
    decodeTokens: f.decodeTokens,
    concurrentTokens: f.concurrentTokens,
  };
  const slice = await ensureSlice(path.join(BENCH_DIR, '.cache'), f.layers);
  const shape = slice.options as Required<DecodeShape>;

  console.log('measuring memory read bandwidth');
  const bandwidth = await measureMachineBandwidth(f.threads);
  console.log(`  ${describeBandwidth(bandwidth)}`);

  const maxTokensPerSeq = Math.max(workload.prefillTokens + 1, workload.shortPromptTokens + Math.max(workload.decodeTokens, workload.concurrentTokens));
  const maxModelLen = Math.max(2048, Math.ceil(maxTokensPerSeq / 1024) * 1024);
  // f32 K and V per layer; room for every stream of the largest level several times over (prefix cache).
  const kvBytesPerToken = shape.layers * 2 * shape.kvHeads * shape.headDim * 4;
  const kvTokens = Math.max(4 * maxModelLen, 4 * Math.max(...workload.concurrency, 1) * (workload.shortPromptTokens + workload.concurrentTokens));
  const kvCacheGiB = Math.ceil(((kvTokens * kvBytesPerToken) / 2 ** 30) * 100) / 100;

  const flashAttention = f.llamaFlashAttention === 'auto' ? 'auto' : f.llamaFlashAttention === 'on';
  const batchSize = Math.max(512, workload.prefillTokens);
  const start: Record<EngineKey, () => Promise<PeerEngine>> = {
    moeserve: () => startMoeserve({ repoRoot: REPO_ROOT, modelDir: slice.dir, threads: f.threads, kvCacheGiB, maxModelLen, extraArgs: [...(f.mlock ? ['--mlock'] : []), '--dtype', f.dtype] }),
    llama: () => startLlama({ gguf: slice.gguf, threads: f.threads, contextSize: maxModelLen, batchSize, flashAttention, mlock: f.mlock }),
  };
  // Alternating needs both engines' weights in the page cache at once; when they would not fit, each
  // engine runs all its samples in turn instead (otherwise the figures would measure the disk).
  const weightBytes = fs.statSync(path.join(slice.dir, 'model.safetensors')).size + fs.statSync(slice.gguf).size;
  const sequential = f.sequential || weightBytes > 0.7 * os.totalmem();
  if (sequential && !f.sequential) {
    console.log(`both engines' weights (${(weightBytes / 2 ** 30).toFixed(1)} GiB) would not stay in memory together: running the engines one after the other`);
  }
  const list = phases(workload);
  const samples = list.map(() => ({ moeserve: [] as Sample[], llama: [] as Sample[] }));
  const described: Partial<Record<EngineKey, Record<string, unknown>>> = {};
  const groups: EngineKey[][] = sequential ? [['moeserve'], ['llama']] : [['moeserve', 'llama']];
  for (const keys of groups) {
    const engines: Partial<Record<EngineKey, PeerEngine>> = {};
    try {
      for (const key of keys) {
        console.log(`starting ${key} (${f.threads} threads${key === 'moeserve' ? `, KV ${kvCacheGiB} GiB` : ''})`);
        const t = performance.now();
        const e = await start[key]();
        engines[key] = e;
        described[key] = e.describe();
        console.log(`  ready after ${secs(performance.now() - t)}`);
      }
      const meter = new ContentionMeter(() => [...new Set([process.pid, ...Object.values(engines).map((e) => e.pid)])]);
      for (const key of keys) {
        const t = performance.now();
        await warmUp(engines[key]!, workload);
        console.log(`warmed up ${key} in ${secs(performance.now() - t)}`);
      }
      for (let run = 1; run <= f.runs; run++) {
        for (let p = 0; p < list.length; p++) {
          const order = (run + p) % 2 === 0 ? keys : [...keys].reverse();
          for (const key of order) {
            const e = engines[key]!;
            await touch(e, run, p);
            const cpu0 = e.cpuMs();
            meter.start();
            const s = await list[p]!.run(e, run);
            const foreignCores = meter.stop();
            const sample: Sample = { run, ...s, cpuMs: e.cpuMs() - cpu0, foreignCores };
            samples[p]![key].push(sample);
            const notes = s.notes ? ` ${JSON.stringify(s.notes)}` : '';
            console.log(`run ${run}/${f.runs} ${list[p]!.spec.label.padEnd(16)} ${e.name.padEnd(9)} ${s.value.toFixed(1).padStart(8)} tok/s  ` +
              `wall ${secs(s.wallMs)}, CPU ${secs(sample.cpuMs)}, others ${foreignCores.toFixed(2)} cores${notes}  [${secs(performance.now() - started)}]`);
          }
        }
      }
    } finally {
      for (const e of Object.values(engines)) await e.close();
    }
  }

  const metrics = list.map((ph, i) => summarize(ph.spec, samples[i]!));
  const decode = metrics.find((m) => m.id === 'decode')!;
  const bw = (bytes: ReturnType<typeof decodeBytesPerToken>, tokensPerS: number): EngineBandwidth => {
    const gbPerS = (bytes.total * tokensPerS) / 1e9;
    return { bytesPerToken: bytes.total, breakdown: bytes, tokensPerS, gbPerS, fraction: gbPerS / bandwidth.gbPerS };
  };
  const decodeBandwidth = {
    moeserve: bw(decodeBytesPerToken(shape, described.moeserve?.codedWeights ? codedRowBytes : bf16RowBytes, 2), decode.moeserve),
    llama: bw(decodeBytesPerToken(shape, bf16RowBytes, 4), decode.llama),
  };
  const allForeign = samples.flatMap((s) => [...s.moeserve, ...s.llama]).map((s) => s.foreignCores).filter(Number.isFinite);
  const batching = `llama_decode calls per run, ideal ${workload.concurrentTokens}: ` + metrics.filter((m) => m.id.startsWith('c')).map((m) => {
    const calls = m.samples.llama.map((s) => Number(s.notes?.llamaDecodeCalls)).filter(Number.isFinite);
    return `${m.label} ${calls.join(' ')}`;
  }).join('; ');
  const report: PeerReport = {
    date,
    durationS: Math.round((performance.now() - started) / 1000),
    command: process.argv.slice(2),
    quick: f.quick,
    machine,
    threads: f.threads,
    runs: f.runs,
    order: sequential ? 'sequential' : 'alternating',
    model: { ...shape, dir: path.relative(REPO_ROOT, slice.dir), gguf: path.relative(REPO_ROOT, slice.gguf) },
    workload,
    load: { before: loadBefore, after: loadAverage(), foreignCoresMedian: median(allForeign), foreignCoresMax: Math.max(...allForeign) },
    bandwidth,
    moeserve: { args: `moeserve ${((described.moeserve?.args as string[]) ?? []).map((a) => (a.startsWith('/') ? path.relative(REPO_ROOT, a) : a)).join(' ')}`, describe: described.moeserve ?? {} },
    llama: {
      version: llamaVersion(),
      systemInfo: String(described.llama?.systemInfo ?? '').trim(),
      singleContextSize: maxModelLen,
      batchSize,
      flashAttention,
      batching,
      describe: described.llama ?? {},
    },
    metrics,
    decodeBandwidth,
  };
  console.log(`\n${textTable(metrics)}\n`);
  const d = decodeBandwidth;
  console.log(`decode bandwidth: moeserve ${(d.moeserve.bytesPerToken / 1e9).toFixed(3)} GB/token × ${d.moeserve.tokensPerS.toFixed(2)} tok/s = ` +
    `${d.moeserve.gbPerS.toFixed(1)} GB/s = ${(d.moeserve.fraction * 100).toFixed(0)}% of ${bandwidth.gbPerS.toFixed(1)} GB/s measured; ` +
    `llama.cpp ${d.llama.gbPerS.toFixed(1)} GB/s = ${(d.llama.fraction * 100).toFixed(0)}%`);
  console.log(`llama.cpp batching: ${batching}`);
  console.log(`other processes: ${report.load.foreignCoresMedian.toFixed(2)} cores median, load average ${report.load.after.join(' ')} at the end`);
  const files = writeReport(BENCH_DIR, report);
  for (const file of Object.values(files)) console.log(`wrote ${path.relative(process.cwd(), file)}`);
}

const program = new Command('bench:peer')
  .description('moeserve vs llama.cpp on the same weights, machine and threads (issue 5)')
  .option('--layers <n>', 'layers of the slice checkpoint (2; 8 is the larger variant)', intArg(1), 2)
  // Even by default: the engine that runs second in a pair is often slower on this VM, and the order
  // alternates from run to run, so an even count gives each engine the first slot equally often.
  .option('--runs <n>', 'runs per figure (the median is reported; even keeps the order fair)', intArg(1), 4)
  .option('--quick', '1 run, 16 streams only; writes bench/results/ but not bench/RESULTS.md', false)
  .option('--threads <n>', 'threads of both engines', intArg(1), 2)
  .option('--concurrency <list>', 'concurrent stream counts', intListArg, DEFAULT_WORKLOAD.concurrency)
  .option('--prefill-tokens <n>', 'prefill prompt length', intArg(1), DEFAULT_WORKLOAD.prefillTokens)
  .option('--decode-tokens <n>', 'single-stream output tokens', intArg(2), DEFAULT_WORKLOAD.decodeTokens)
  .option('--concurrent-tokens <n>', 'output tokens per concurrent stream', intArg(1), DEFAULT_WORKLOAD.concurrentTokens)
  .option('--no-mlock', "leave both engines' weights unlocked (by default both lock them in RAM: moeserve --mlock, llama.cpp useMlock)")
  .option('--sequential', 'run all samples of one engine, then the other (automatic when both weight files do not fit in memory together)', false)
  .option('--dtype <dtype>', "moeserve's --dtype: auto (bfloat16 for the bf16 slice, its default), bfloat16, float32 (the exact mode)", choiceArg(['auto', 'bfloat16', 'float32'] as const), 'auto')
  .option('--llama-flash-attention <mode>', "llama.cpp's flash attention: auto (node-llama-cpp's default), on, off", choiceArg(['auto', 'on', 'off'] as const), 'auto');

program.parse(process.argv);
const flags = program.opts<Flags>();
if (flags.quick) {
  flags.runs = 1;
  if (program.getOptionValueSource('concurrency') === 'default') flags.concurrency = [16];
}
if (flags.concurrency.length === 0 || flags.concurrency.some((c) => c < 1)) program.error('--concurrency needs stream counts >= 1');
if (flags.threads > os.availableParallelism()) console.warn(`warning: --threads ${flags.threads} is more than the ${os.availableParallelism()} cores`);
await main(flags);
