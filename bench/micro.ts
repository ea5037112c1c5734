// Micro-benchmarks of the native kernel families through the public addon API (loadModel + step), on the
// slice checkpoint (Tongyi DeepResearch 30B-A3B's real layer shapes, 2 layers; generated once into
// bench/.cache/): GEMV and GEMM on bf16 weights (the projections and the lm_head), expert-grouped MoE
// (1…64 tokens of distinct streams in one step), paged attention (one token at long contexts, a chunk).
//
//   npm run bench:micro [-- --threads 2]
//
// Kernel times come from the addon's own per-phase step timing (MOESERVE_PROFILE=1, one stderr line per
// step: qkv / attn / out / ffn / logits, summed over layers), so the steps run in a child process whose
// stderr is read here. Each figure: median phase time over the repetitions, turned into GB/s or GFLOP/s
// by the formula printed beside it, and GB/s as a fraction of this machine's measured read bandwidth.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { intArg } from '../src/cli/options.ts';
import { loadModelConfig } from '../src/model/config.ts';
import { loadAddon } from '../src/native/load-addon.ts';
import { buildBatch } from '../tests/helpers/native-steps.ts';
import { describeBandwidth, measureMachineBandwidth } from './peer/bandwidth.ts';
import { bf16RowBytes, codedRowBytes } from './peer/decode-bytes.ts';
import { ContentionMeter, loadAverage, machineInfo } from './peer/machine.ts';
import { BLOCK, figures, KV_BLOCKS, microCases, type Figure, type Phases, type Shape } from './peer/micro-cases.ts';
import { updateResultsFile } from './peer/results-file.ts';
import { microMarkdown, type MicroReport } from './peer/results-md.ts';
import { ensureSlice } from './peer/slice-model.ts';
import { median } from './peer/workload.ts';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const PROFILE_LINE = /^\[moeserve step\] tokens (\d+) seqs (\d+) \| qkv ([\d.]+) attn ([\d.]+) out ([\d.]+) ffn ([\d.]+) logits ([\d.]+) ms/;

interface StepRecord {
  case: string;
  warm: boolean;
  wallMs: number;
  tokens: number;
}

/** Child: runs every case on the model, one JSON line per step on stdout. */
async function child(dir: string, threads: number, codeWeights: boolean): Promise<void> {
  const cfg = loadModelConfig(dir);
  const model = await loadAddon().loadModel({ files: cfg.files, config: cfg.native, threads, kvBlocks: KV_BLOCKS, blockSize: BLOCK, codeWeights });
  try {
    process.stdout.write(JSON.stringify({ codedMatrices: model.codedWeights.matrices }) + '\n');
    for (const c of microCases()) {
      for (let r = 0; r < c.warmups + c.repeats; r++) {
        const batch = buildBatch(c.batch(r));
        const t0 = performance.now();
        await model.step(batch);
        const rec: StepRecord = { case: c.id, warm: r < c.warmups, wallMs: performance.now() - t0, tokens: batch.tokens.length };
        process.stdout.write(JSON.stringify(rec) + '\n');
      }
    }
  } finally {
    model.close();
  }
}

async function runChild(dir: string, threads: number, codeWeights: boolean): Promise<{ steps: StepRecord[]; phases: (Phases & { tokens: number })[]; foreignCores: number; coded: boolean }> {
  const script = fileURLToPath(import.meta.url);
  const args = [path.join(BENCH_DIR, '..', 'bin/run-ts.js'), script, '--child', dir, '--threads', String(threads), ...(codeWeights ? [] : ['--no-weight-coding'])];
  const proc = spawn(process.execPath, args, {
    env: { ...process.env, MOESERVE_PROFILE: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const meter = new ContentionMeter(() => [process.pid, proc.pid!]);
  meter.start();
  const steps: StepRecord[] = [];
  const phases: (Phases & { tokens: number })[] = [];
  const other: string[] = [];
  let coded = false;
  readline.createInterface({ input: proc.stdout! }).on('line', (line) => {
    const first = JSON.parse(line) as StepRecord | { codedMatrices: number };
    if ('codedMatrices' in first) return void (coded = first.codedMatrices > 0);
    const rec = first;
    steps.push(rec);
    meter.refresh();
    if (steps.length % 10 === 0) process.stdout.write(`  ${steps.length} steps (${rec.case})\n`);
  });
  readline.createInterface({ input: proc.stderr! }).on('line', (line) => {
    const m = PROFILE_LINE.exec(line);
    if (!m) return void other.push(line);
    const n = m.slice(1).map(Number);
    phases.push({ tokens: n[0]!, qkv: n[2]!, attn: n[3]!, out: n[4]!, ffn: n[5]!, logits: n[6]! });
  });
  const code = await new Promise<number | null>((resolve) => proc.once('close', resolve));
  const foreignCores = meter.stop(); // the child's CPU as last read, after its last step
  if (code !== 0) throw new Error(`micro-benchmark child exited with code ${code}:\n${other.join('\n')}`);
  if (phases.length !== steps.length) {
    throw new Error(`expected one MOESERVE_PROFILE line per step (${steps.length} steps, ${phases.length} lines): does this addon build support MOESERVE_PROFILE?\n${other.join('\n')}`);
  }
  steps.forEach((s, i) => {
    if (phases[i]!.tokens !== s.tokens) throw new Error(`profile line ${i} is for ${phases[i]!.tokens} tokens, step ${i} had ${s.tokens}`);
  });
  return { steps, phases, foreignCores, coded };
}

function table(figs: Figure[]): string {
  const head = ['family', 'case', 'ms', 'GB/s', 'of bandwidth', 'GFLOP/s'];
  const f = (x: number | undefined, d: number) => (x === undefined || !Number.isFinite(x) ? '' : x.toFixed(d));
  const rows = figs.map((x) => [x.family, x.what, f(x.ms, 2), f(x.gbPerS, 1), x.ofBandwidth === undefined ? '' : `${(x.ofBandwidth * 100).toFixed(0)}%`, f(x.gflopPerS, 1)]);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [head, ...rows].map((r) => r.map((c, i) => (i < 2 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ')).join('\n');
}

async function main(threads: number, codeWeights: boolean): Promise<void> {
  const date = new Date().toISOString();
  const machine = machineInfo();
  const loadBefore = loadAverage();
  console.log(`${machine.cpuModel}, ${machine.cores} cores, moeserve SIMD ${machine.moeserveSimd}, ${threads} threads; load average ${loadBefore.join(' ')}`);
  const slice = await ensureSlice(path.join(BENCH_DIR, '.cache'), 2);
  console.log('measuring memory read bandwidth');
  const bandwidth = await measureMachineBandwidth(threads);
  console.log(`  ${describeBandwidth(bandwidth)}`);
  console.log('running the cases (MOESERVE_PROFILE=1, child process)');
  const { steps, phases, foreignCores, coded } = await runChild(slice.dir, threads, codeWeights);
  console.log(coded ? '  the model coded its bf16 weights at load: GB/s count the coded bytes read' : '  bf16 weights as stored (not coded)');
  const byCase = new Map<string, Phases>();
  const wallByCase = new Map<string, number>();
  for (const id of new Set(steps.map((s) => s.case))) {
    const idx = steps.flatMap((s, i) => (s.case === id && !s.warm ? [i] : []));
    const med = (k: keyof Phases) => median(idx.map((i) => phases[i]![k]));
    byCase.set(id, { qkv: med('qkv'), attn: med('attn'), out: med('out'), ffn: med('ffn'), logits: med('logits') });
    wallByCase.set(id, median(idx.map((i) => steps[i]!.wallMs)));
  }
  const shape = slice.options as Required<Shape>;
  const figs = figures(shape, byCase, bandwidth.gbPerS, coded ? codedRowBytes : bf16RowBytes);
  console.log(`\n${table(figs)}\n`);
  console.log('Formulas:');
  for (const formula of new Set(figs.map((x) => `${x.family}: ${x.formula}`))) console.log(`  ${formula}`);
  console.log(`Read bandwidth (the "of bandwidth" reference): ${describeBandwidth(bandwidth)}. Other processes used ${foreignCores.toFixed(2)} cores meanwhile; load average ${loadAverage().join(' ')} at the end.`);
  const outDir = path.join(BENCH_DIR, 'results');
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `micro-${date.replace(/[:.]/g, '-')}.json`);
  const perCase = Object.fromEntries([...byCase].map(([id, ph]) => [id, { phasesMs: ph, stepWallMs: wallByCase.get(id) }]));
  const report: MicroReport = { date, machine, threads, load: { before: loadBefore, after: loadAverage(), foreignCores }, bandwidth, figures: figs };
  fs.writeFileSync(file, JSON.stringify({ ...report, shape, cases: perCase }, null, 2) + '\n');
  const resultsMd = path.join(BENCH_DIR, 'RESULTS.md');
  updateResultsFile(resultsMd, 'micro', microMarkdown(report, path.relative(BENCH_DIR, file)));
  console.log(`wrote ${path.relative(process.cwd(), file)} and ${path.relative(process.cwd(), resultsMd)}`);
}

const program = new Command('bench:micro')
  .description('per-kernel-family micro-benchmarks through the addon (GEMV/GEMM bf16, grouped MoE, paged attention)')
  .option('--threads <n>', 'threads of the model', intArg(1), 2)
  .option('--no-weight-coding', "keep the bf16 weights as stored (the server's --no-weight-coding)")
  .option('--child <dir>', '(internal) run the cases on DIR and print one JSON line per step');
program.parse(process.argv);
const opts = program.opts<{ threads: number; child?: string; weightCoding: boolean }>();
if (opts.threads > os.availableParallelism()) console.warn(`warning: --threads ${opts.threads} is more than the ${os.availableParallelism()} cores`);
if (opts.child) await child(opts.child, opts.threads, opts.weightCoding);
else await main(opts.threads, opts.weightCoding);
