// The end-to-end GPU check (issue 12), from the command line; bench/gpu/check.sh runs it after the op checks.
//
//   node bin/run-ts.js bench/gpu/gpu-check.ts                          # CUDA against the CPU and transformers
//   node bin/run-ts.js bench/gpu/gpu-check.ts --backends cpu,cpu:scalar --engine-shape tiny --long-tokens 4096
//                                                                      # the same flow with no GPU (a dry run)
//
// Generates checkpoints with src/model/make-model.ts (cached in bench/.cache/gpu-check/), then: teacher-forced
// top-5 logprobs of a fixed token sequence on backend A and backend B, and against transformers
// (bench/gpu/hf_logprobs.py; skipped, with the reason, where python3 lacks torch or transformers); 32 concurrent
// greedy requests through the engine on A against the same one at a time; a 32K-token prompt served on A. Prints
// a table last; exit status 1 when any check fails. --rows FILE appends the rows (tab-separated) for check.sh.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { makeModel } from '../../src/model/make-model.ts';
import { loadAddon } from '../../src/native/load-addon.ts';
import { checkBatchInvariance, checkLongPrompt, compareBackends, compareWithTransformers, type ShapeRun } from './check-rows.ts';
import { cudaStatus, formatTable, parseBackend, ROOT, rowLine, SHAPES, shapeByName, type CheckShape, type Row } from './checks.ts';

const HELP = `usage: node bin/run-ts.js bench/gpu/gpu-check.ts [options]
  --backends A,B        backend under test, reference backend (cuda,cpu); cpu:KERNELS picks a CPU kernel set
                        (cpu:scalar), cuda:N a device
  --shapes LIST         checkpoints to compare (${SHAPES.map((s) => s.name).join(',')})
  --positions N         tokens of the teacher-forced sequence (200)
  --engine-shape NAME   checkpoint of the engine checks (slice)
  --concurrent N        requests of the batch-invariance check (32; 0 skips it)
  --long-tokens N       prompt of the long-context check (32768; 0 skips it)
  --no-hf               skip the transformers comparison
  --python PATH         interpreter with torch + transformers (MOESERVE_PYTHON, else python3)
  --cache DIR           where generated checkpoints are kept (bench/.cache/gpu-check)
  --rows FILE           also append the rows, tab-separated, to FILE
  --json FILE           write every figure as JSON
  --prepare-only        generate the checkpoints these options need, then exit (check.sh runs it in the
                        background while the op checks run)`;

const { values: flags } = parseArgs({
  options: {
    backends: { type: 'string', default: 'cuda,cpu' },
    shapes: { type: 'string', default: SHAPES.map((s) => s.name).join(',') },
    positions: { type: 'string', default: '200' },
    'engine-shape': { type: 'string', default: 'slice' },
    concurrent: { type: 'string', default: '32' },
    'long-tokens': { type: 'string', default: '32768' },
    'no-hf': { type: 'boolean', default: false },
    python: { type: 'string', default: process.env.MOESERVE_PYTHON || 'python3' },
    cache: { type: 'string', default: path.join(ROOT, 'bench/.cache/gpu-check') },
    rows: { type: 'string' },
    json: { type: 'string' },
    'prepare-only': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (flags.help) {
  console.log(HELP);
  process.exit(0);
}
const int = (name: string, v: string, min: number) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min} (got ${v})`);
  return n;
};
const positions = int('positions', flags.positions, 16);
const concurrent = int('concurrent', flags.concurrent, 0);
const longTokens = int('long-tokens', flags['long-tokens'], 0);
const specs = flags.backends.split(',').map((s) => parseBackend(s.trim()));
if (specs.length !== 2) throw new Error('--backends takes two backends: the one under test, then the reference');
const [a, b] = specs as [ReturnType<typeof parseBackend>, ReturnType<typeof parseBackend>];
const shapes = flags.shapes.split(',').filter(Boolean).map(shapeByName);
const engineShape = shapeByName(flags['engine-shape']);

const log = (msg: string) => console.log(`[gpu-check ${new Date().toISOString().slice(11, 19)}] ${msg}`);

/** A generated checkpoint for this shape, reused while its options and the generator's code are unchanged. */
async function ensureModel(shape: CheckShape): Promise<string> {
  const h = crypto.createHash('sha256').update(JSON.stringify(shape.opts));
  for (const f of ['src/model/make-model.ts', 'src/model/safetensors-writer.ts']) h.update(fs.readFileSync(path.join(ROOT, f)));
  const key = h.digest('hex').slice(0, 12);
  const dir = path.join(flags.cache, `${shape.name}-${key}`);
  if (fs.existsSync(path.join(dir, '.complete'))) return dir;
  fs.mkdirSync(flags.cache, { recursive: true });
  // Older versions of this shape (another key) are dropped: the slice is 3.7 GB.
  for (const old of fs.readdirSync(flags.cache)) {
    if (old.startsWith(`${shape.name}-`)) fs.rmSync(path.join(flags.cache, old), { recursive: true, force: true });
  }
  const t0 = performance.now();
  const tmp = `${dir}.tmp-${process.pid}`;
  await makeModel(tmp, shape.opts);
  fs.writeFileSync(path.join(tmp, '.complete'), JSON.stringify(shape.opts));
  fs.renameSync(tmp, dir);
  log(`generated ${shape.name} (${shape.what}) in ${((performance.now() - t0) / 1000).toFixed(0)} s: ${dir}`);
  return dir;
}

const rows: Row[] = [];
/** Rows reach --rows as they are decided, so that a run stopped by check.sh's time limit still reports them. */
function add(...rs: Row[]): void {
  rows.push(...rs);
  if (flags.rows) fs.appendFileSync(flags.rows, rs.map((r) => rowLine(r) + '\n').join(''));
}

async function main(): Promise<number> {
  if (flags['prepare-only']) {
    const needed = new Set([...shapes, ...(concurrent > 0 || longTokens > 0 ? [engineShape] : [])]);
    for (const shape of needed) log(`${shape.name}: ${await ensureModel(shape)}`);
    return 0;
  }
  const addon = loadAddon();
  const details: Record<string, unknown> = { backends: [a.label, b.label], positions };
  const cuda = cudaStatus(addon);
  log(`addon ${addon.version}; cuda: ${cuda.available ? 'available' : cuda.compiled ? 'compiled, not usable' : 'not compiled'} (${cuda.detail})`);
  details.cuda = cuda;
  if ((a.backend === 'cuda' || b.backend === 'cuda') && !cuda.available) {
    add({ check: 'CUDA backend usable', figure: cuda.detail, limit: 'available', status: 'FAIL' });
    return finish(details);
  }

  const runs: ShapeRun[] = [];
  for (const shape of shapes) {
    const dir = await ensureModel(shape);
    const { row, run } = await compareBackends(addon, a, b, shape, dir, positions);
    add(row);
    runs.push(run);
    details[`logprobs ${shape.name}`] = { what: shape.what, names: Object.fromEntries(run.names), comparison: run.comparison };
  }
  if (flags['no-hf']) add({ check: 'logprobs vs transformers', figure: 'not run: --no-hf', limit: '', status: 'skip' });
  else add(...(await compareWithTransformers(runs.filter((r) => r.tops.size > 0), flags.python)));

  const engineDir = concurrent > 0 || longTokens > 0 ? await ensureModel(engineShape) : '';
  if (concurrent > 0) {
    const { row, result } = await checkBatchInvariance(addon, a, engineShape, engineDir, concurrent);
    add(row);
    details.batchInvariance = result;
  }
  if (longTokens > 0) {
    const { row, result } = await checkLongPrompt(addon, a, engineShape, engineDir, longTokens);
    add(row);
    details.longPrompt = result;
  }
  return finish(details);
}

function finish(details: Record<string, unknown>): number {
  if (flags.json) fs.writeFileSync(flags.json, JSON.stringify({ ...details, rows }, (_, v) => (v === Infinity ? 'Infinity' : v), 2) + '\n');
  console.log(`\n${formatTable(rows)}`);
  const failed = rows.filter((r) => r.status === 'FAIL').length;
  console.log(failed ? `\n${failed} check(s) failed` : '\nall checks passed');
  return failed ? 1 : 0;
}

// Exits explicitly: a backend's worker threads or a stuck step must not keep a failed check alive.
process.exit(
  await main().catch((e: unknown) => {
    console.error(e);
    return 1;
  }),
);
