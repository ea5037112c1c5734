// The end-to-end GPU checks of issue 12, as functions: bench/gpu/gpu-check.ts runs them from the command line (and
// bench/gpu/check.sh around it), tests/gpu/cuda-engine.test.ts under vitest where a GPU is usable.
// - teacher-forced top-5 logprobs of a fixed token sequence on generated checkpoints (several shapes, incl. a
//   real-shape 2-layer slice): backend A against backend B (the CUDA backend against the CPU one) and each
//   against transformers (bench/gpu/hf_logprobs.py) on the same weights;
// - 32 concurrent greedy requests through the engine give the same tokens as the same requests one at a time;
// - a 32K-token prompt served through the engine (chunked prefill, paged KV), then a few greedy tokens.
// Nothing here needs a GPU: `--backends cpu,cpu:scalar` runs the whole flow on the CPU.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createEngine } from '../../src/engine/engine.ts';
import type { SamplingParams } from '../../src/engine/types.ts';
import type { ModelConfig } from '../../src/model/config.ts';
import type { MakeModelOptions } from '../../src/model/make-model.ts';
import type { Addon, BackendName, NativeModel } from '../../src/native/addon-types.ts';
import { buildBatch, promptTops, randomTokens, type PositionTop, type SeqSlice } from '../../tests/helpers/native-steps.ts';
import { SLICE_SHAPE } from '../peer/slice-model.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The criteria for two implementations of the same model on the same weights. */
export const CRITERIA = { top: 5, minTop1Agreement: 0.99, maxLogprobDiff: 0.05 } as const;
const BLOCK = 16;

// ---------------------------------------------------------------- backends

/** 'cpu', 'cpu:scalar' (a CPU kernel set by name), 'cuda' or 'cuda:1' (a device ordinal). */
export interface BackendSpec {
  label: string;
  backend: BackendName;
  cpuKernels?: string;
  device?: number;
}

export function parseBackend(spec: string): BackendSpec {
  const [name, arg] = spec.split(':', 2);
  if (name === 'cpu') return { label: spec, backend: 'cpu', ...(arg ? { cpuKernels: arg } : {}) };
  if (name === 'cuda') {
    const device = arg === undefined ? undefined : Number(arg);
    if (device !== undefined && !(Number.isInteger(device) && device >= 0)) throw new Error(`--backends: "${spec}": the device must be an ordinal`);
    return { label: spec, backend: 'cuda', ...(device !== undefined ? { device } : {}) };
  }
  throw new Error(`--backends: "${spec}" is not cpu, cpu:KERNELS, cuda or cuda:DEVICE`);
}

export interface CudaStatus {
  compiled: boolean;
  available: boolean;
  /** Why not, when not available; the device and the architectures otherwise. */
  detail: string;
}

/** What the addon says about CUDA (never throws: a CPU-only addon reports it as not compiled). */
export function cudaStatus(addon: Addon): CudaStatus {
  const c = addon.backends().find((b) => b.name === 'cuda');
  if (!c) return { compiled: false, available: false, detail: 'the addon reports no cuda backend' };
  const compiled = c.compiled === true;
  if (!c.available) return { compiled, available: false, detail: c.detail ?? (compiled ? 'no usable device' : 'not compiled in') };
  const dev = c.devices?.[0];
  const what = dev ? `${dev.name}, ${(dev.memoryBytes / 2 ** 30).toFixed(0)} GiB, sm ${dev.computeCapability}` : 'a device';
  return { compiled, available: true, detail: `${what}; compiled for ${c.archs ?? '?'}` };
}

export interface LoadSizes {
  kvBlocks: number;
  maxNumBatchedTokens: number;
}

export async function loadOn(addon: Addon, spec: BackendSpec, cfg: ModelConfig, sizes: LoadSizes): Promise<NativeModel> {
  return addon.loadModel({
    files: cfg.files,
    config: cfg.native,
    backend: spec.backend,
    ...(spec.cpuKernels ? { cpuKernels: spec.cpuKernels } : {}),
    ...(spec.device !== undefined ? { device: spec.device } : {}),
    threads: os.availableParallelism(),
    kvBlocks: sizes.kvBlocks,
    blockSize: BLOCK,
    maxNumBatchedTokens: sizes.maxNumBatchedTokens,
    // Both sides keep K and V in bf16 (CUDA's only storage), so CUDA against the CPU compares kernels, not storages.
    kvCacheDtype: 'bf16',
  });
}

/** The backend as the model names itself ('cuda/NVIDIA H100 ...'), or the spec where the addon predates that. */
export function backendName(m: NativeModel, spec: BackendSpec): string {
  return typeof m.backendName === 'string' ? m.backendName : spec.label;
}

// ---------------------------------------------------------------- shapes

export interface CheckShape {
  name: string;
  what: string;
  opts: MakeModelOptions;
}

/** The checkpoints compared. All bf16 (the dtype of the real model) with the real vocabulary. */
export const SHAPES: CheckShape[] = [
  {
    name: 'tiny',
    what: 'GQA 4/2 × 64, 8 experts top-2',
    opts: { layers: 2, hidden: 128, heads: 4, kvHeads: 2, headDim: 64, experts: 8, topK: 2, moeIntermediate: 64, seed: 21 },
  },
  {
    // Layer 0 dense by mlp_only_layers, layer 1 sparse, layer 2 dense by decoder_sparse_step 2; widths that are not
    // multiples of 64 (tails in every tile).
    name: 'dense',
    what: 'dense layers (mlp_only_layers, decoder_sparse_step 2), MQA 6/1 × 32, 16 experts top-4, odd widths',
    opts: {
      layers: 3, hidden: 192, heads: 6, kvHeads: 1, headDim: 32, experts: 16, topK: 4, moeIntermediate: 80, intermediate: 176,
      mlpOnlyLayers: [0], decoderSparseStep: 2, seed: 22,
    },
  },
  {
    // A 64-token original context puts yarn's ramp across the middle of the frequencies within the sequence.
    // max_position_embeddings = original × factor: transformers versions that derive the factor from that ratio
    // (DeepSeek-V3's convention) then agree with those that read "factor".
    name: 'yarn',
    what: 'YaRN ×4 from a 64-token original context, GQA 8/2 × 64',
    opts: {
      layers: 2, hidden: 256, heads: 8, kvHeads: 2, headDim: 64, experts: 8, topK: 2, moeIntermediate: 128, seed: 23,
      ropeTheta: 10000, ropeScaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 64 }, maxPositionEmbeddings: 256,
    },
  },
  {
    name: 'slice',
    what: 'the real layer shape, 2 layers: hidden 2048, GQA 32/4 × 128, 128 experts top-8, moe 768',
    opts: { ...SLICE_SHAPE, layers: 2, maxPositionEmbeddings: 40960, seed: 24 },
  },
];

export function shapeByName(name: string): CheckShape {
  const s = SHAPES.find((x) => x.name === name);
  if (!s) throw new Error(`unknown shape "${name}" (${SHAPES.map((x) => x.name).join(', ')})`);
  return s;
}

// ---------------------------------------------------------------- teacher-forced logprobs

/** The fixed token sequence of a shape: ordinary ids of the real vocabulary. */
export function checkTokens(n: number, seed = 5): number[] {
  return randomTokens(n, seed, 151643);
}

/**
 * Top-N logprobs at every position of `tokens` (the distribution of the next token), in two steps on scattered
 * blocks: a first chunk alone, then the rest beside a short second sequence that samples, so that attention
 * reads earlier context from the paged KV and the step holds two sequences.
 */
export async function teacherForced(model: NativeModel, tokens: number[], top = CRITERIA.top): Promise<PositionTop[]> {
  const nBlocks = Math.ceil(tokens.length / BLOCK);
  // Every block id below nBlocks + 2, in a scrambled order (a stride coprime to the count visits each once).
  const ids = Array.from({ length: nBlocks + 2 }, (_, i) => i);
  const gcd = (x: number, y: number): number => (y === 0 ? x : gcd(y, x % y));
  const stride = [7, 5, 3, 11, 13, 1].find((s) => gcd(s, ids.length) === 1)!;
  const order = ids.map((_, i) => ids[(i * stride + 3) % ids.length]!);
  const blocks = order.slice(0, nBlocks);
  const other = order.slice(nBlocks);
  if (model.kvBlocks < ids.length) throw new Error(`teacherForced needs ${ids.length} KV blocks, the model has ${model.kvBlocks}`);
  const first = Math.min(tokens.length - 1, Math.max(1, Math.floor(tokens.length * 0.37)));
  const own = (a: number, b: number): SeqSlice => ({
    tokens: tokens.slice(a, b), start: a, blocks, promptLogprobs: top, targets: tokens.slice(a + 1, b + 1),
  });
  const b1 = buildBatch([own(0, first)]);
  const r1 = await model.step(b1);
  const side: SeqSlice = { tokens: checkTokens(2 * BLOCK - 3, 99), start: 0, blocks: other, sample: true };
  const b2 = buildBatch([side, own(first, tokens.length)]);
  const r2 = await model.step(b2);
  return [...promptTops(b1, r1, 0), ...promptTops(b2, r2, 1)];
}

export interface TopComparison {
  positions: number;
  top1Same: number;
  /** Largest |Δ logprob| over the tokens both top-N lists hold, and where. */
  maxDiff: number;
  worstPosition: number;
  shared: number;
  pass: boolean;
}

export function compareTops(a: PositionTop[], b: PositionTop[]): TopComparison {
  if (a.length !== b.length) throw new Error(`compareTops: ${a.length} positions against ${b.length}`);
  let top1Same = 0;
  let maxDiff = 0;
  let worstPosition = -1;
  let shared = 0;
  a.forEach((pa, i) => {
    const pb = b[i]!;
    if (pa.ids[0] === pb.ids[0]) top1Same++;
    pa.ids.forEach((id, j) => {
      const k = pb.ids.indexOf(id);
      if (id < 0 || k < 0) return;
      shared++;
      const d = Math.abs(pa.logprobs[j]! - pb.logprobs[k]!);
      // NaN (a logprob missing on one side) counts as a failure.
      if (!(d <= maxDiff)) {
        maxDiff = Number.isNaN(d) ? Infinity : d;
        worstPosition = i;
      }
    });
  });
  const positions = a.length;
  const pass = positions > 0 && top1Same >= CRITERIA.minTop1Agreement * positions && maxDiff <= CRITERIA.maxLogprobDiff;
  return { positions, top1Same, maxDiff, worstPosition, shared, pass };
}

export function describeComparison(c: TopComparison): string {
  return `top-1 ${c.top1Same}/${c.positions} (${((100 * c.top1Same) / c.positions).toFixed(1)}%), max Δ ${c.maxDiff.toExponential(1)} nats`;
}

export const COMPARISON_LIMIT = `top-1 ≥ ${CRITERIA.minTop1Agreement * 100}%, Δ ≤ ${CRITERIA.maxLogprobDiff} nats`;

// ---------------------------------------------------------------- transformers (bench/gpu/hf_logprobs.py)

export interface HfJob {
  name: string;
  dir: string;
  tokens: number[];
}

export type HfResult = { ok: true; tops: Map<string, PositionTop[]>; errors: Map<string, string>; info: string } | { ok: false; skip: string };

/**
 * Runs transformers' Qwen3MoeForCausalLM (float32, on CUDA when torch sees a GPU) over every job in one Python
 * process. A missing python3, torch or transformers is a skip with its reason; so is a crash of the whole
 * script. A job that fails alone (its shape) is reported in `errors`.
 */
export async function hfTeacherForced(jobs: HfJob[], python: string, top = CRITERIA.top, timeoutMs = 600_000): Promise<HfResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moeserve-hf-'));
  try {
    const jobsFile = path.join(dir, 'jobs.json');
    const outFile = path.join(dir, 'out.json');
    fs.writeFileSync(jobsFile, JSON.stringify({ top, jobs }));
    const script = path.join(ROOT, 'bench/gpu/hf_logprobs.py');
    const run = await new Promise<{ code: number | null; stderr: string; error?: Error }>((resolve) => {
      execFile(python, [script, '--jobs', jobsFile, '--out', outFile], { timeout: timeoutMs, maxBuffer: 64 << 20, env: { ...process.env, PYTHONUNBUFFERED: '1' } },
        (error, _stdout, stderr) => resolve({ code: error ? ((error as { code?: unknown }).code === 'ENOENT' ? null : (typeof error.code === 'number' ? error.code : 1)) : 0, stderr, error: error ?? undefined }));
    });
    const lastLine = (s: string) => s.trim().split('\n').filter(Boolean).pop() ?? '';
    if (run.code === null) return { ok: false, skip: `${python} not found` };
    if (run.code === 3) return { ok: false, skip: lastLine(run.stderr) || 'torch or transformers missing' };
    if (run.code !== 0 || !fs.existsSync(outFile)) {
      const why = run.error?.message.includes('timed out') || (run.error as { killed?: boolean } | undefined)?.killed ? `timed out after ${timeoutMs / 1000} s` : lastLine(run.stderr);
      return { ok: false, skip: `hf_logprobs.py failed (exit ${run.code}): ${why}` };
    }
    const out = JSON.parse(fs.readFileSync(outFile, 'utf8')) as {
      info: string;
      results: Record<string, { top_ids?: number[][]; top_logprobs?: number[][]; error?: string }>;
    };
    const tops = new Map<string, PositionTop[]>();
    const errors = new Map<string, string>();
    for (const job of jobs) {
      const r = out.results[job.name];
      if (!r || r.error || !r.top_ids || !r.top_logprobs) {
        errors.set(job.name, r?.error ?? 'no result');
        continue;
      }
      tops.set(job.name, r.top_ids.map((ids, i) => ({ ids, logprobs: r.top_logprobs![i]! })));
    }
    return { ok: true, tops, errors, info: out.info };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- engine checks

const greedy = (maxTokens: number, logprobs: number): SamplingParams => ({
  maxTokens, temperature: 0, topP: 1, topK: 0, stopTokenIds: [], ignoreEos: true, logprobs, promptLogprobs: null,
});

export interface BatchInvariance {
  requests: number;
  differing: number;
  /** Largest |Δ logprob| of the sampled tokens, up to each pair's first differing token. */
  maxLogprobDiff: number;
  aloneMs: number;
  concurrentMs: number;
  pass: boolean;
}

/** Prompt lengths from 1 to 100 tokens, so concurrent requests mix prefill chunks and decodes in one step. */
const PROMPT_LENGTHS = [3, 40, 17, 1, 90, 8, 33, 5, 64, 2, 12, 100, 7, 25, 50, 4];

export function batchInvarianceKvBlocks(requests: number, maxTokens: number): number {
  const longest = Math.max(...PROMPT_LENGTHS) + maxTokens;
  return requests * Math.ceil(longest / BLOCK) + 8;
}

/**
 * `requests` greedy completions through the engine one at a time, then all at once (chunked prefill under a small
 * token budget, so steps mix prompt chunks with decodes), on the same model. The tokens must be the same.
 */
export async function batchInvariance(model: NativeModel, cfg: ModelConfig, requests = 32, maxTokens = 16): Promise<BatchInvariance> {
  const prompts = Array.from({ length: requests }, (_, i) => checkTokens(PROMPT_LENGTHS[i % PROMPT_LENGTHS.length]!, 300 + i));
  const runAll = async (concurrent: boolean) => {
    const engine = createEngine({
      model, maxModelLen: 512, eosTokenIds: cfg.eosTokenIds, vocabSize: cfg.native.vocabSize, ownsModel: false, maxNumSeqs: requests,
      maxNumBatchedTokens: 128,
      enablePrefixCaching: false,
    });
    const one = async (p: number[]) => {
      const toks: number[] = [];
      const lps: number[] = [];
      for await (const e of engine.generate({ promptTokens: p, params: greedy(maxTokens, 1) })) {
        if (e.type === 'token') {
          toks.push(e.token);
          lps.push(e.logprob?.logprob ?? NaN);
        }
      }
      return { toks, lps };
    };
    const t0 = performance.now();
    const outs = concurrent ? await Promise.all(prompts.map(one)) : [];
    if (!concurrent) for (const p of prompts) outs.push(await one(p));
    const ms = performance.now() - t0;
    await engine.close();
    return { outs, ms };
  };
  const alone = await runAll(false);
  const together = await runAll(true);
  let differing = 0;
  let maxLogprobDiff = 0;
  alone.outs.forEach((a, i) => {
    const b = together.outs[i]!;
    if (a.toks.length !== maxTokens || a.toks.join() !== b.toks.join()) differing++;
    for (let k = 0; k < a.toks.length; k++) {
      const d = Math.abs(a.lps[k]! - b.lps[k]!);
      maxLogprobDiff = Math.max(maxLogprobDiff, Number.isNaN(d) ? Infinity : d);
      if (a.toks[k] !== b.toks[k]) break;
    }
  });
  return { requests, differing, maxLogprobDiff, aloneMs: alone.ms, concurrentMs: together.ms, pass: differing === 0 };
}

export interface LongPrompt {
  promptTokens: number;
  generated: number[];
  finishReason: string;
  prefillMs: number;
  decodeMsPerToken: number;
  /** Each greedy token is the top-1 of its own logprobs. */
  consistent: boolean;
  pass: boolean;
}

export const LONG_PROMPT_GENERATED = 4;

export function longPromptKvBlocks(promptTokens: number): number {
  return Math.ceil((promptTokens + 64) / BLOCK) + 4;
}

/** One `promptTokens`-token prompt through the engine (2048-token chunks), then LONG_PROMPT_GENERATED greedy tokens. */
export async function longPrompt(model: NativeModel, cfg: ModelConfig, promptTokens: number): Promise<LongPrompt> {
  const maxModelLen = promptTokens + 64;
  const engine = createEngine({
    model, maxModelLen, eosTokenIds: cfg.eosTokenIds, vocabSize: cfg.native.vocabSize, ownsModel: false, maxNumBatchedTokens: 2048,
  });
  const prompt = checkTokens(promptTokens, 7);
  const t0 = performance.now();
  let prefillMs = 0;
  const generated: number[] = [];
  let consistent = true;
  let finishReason = 'none';
  try {
    for await (const e of engine.generate({ promptTokens: prompt, params: greedy(LONG_PROMPT_GENERATED, 5) })) {
      if (e.type === 'token') {
        if (generated.length === 0) prefillMs = performance.now() - t0;
        generated.push(e.token);
        if (e.logprob?.top[0]?.token !== e.token) consistent = false;
      } else if (e.type === 'finish') {
        finishReason = e.reason;
      }
    }
  } finally {
    await engine.close();
  }
  const decodeMsPerToken = (performance.now() - t0 - prefillMs) / Math.max(1, generated.length - 1);
  const pass = finishReason === 'length' && generated.length === LONG_PROMPT_GENERATED && consistent;
  return { promptTokens, generated, finishReason, prefillMs, decodeMsPerToken, consistent, pass };
}

// ---------------------------------------------------------------- the table

export type Status = 'pass' | 'FAIL' | 'skip';

export interface Row {
  check: string;
  figure: string;
  limit: string;
  status: Status;
}

export function formatTable(rows: Row[]): string {
  const head: [string, string, string, string] = ['check', 'figure', 'limit', 'result'];
  const cells = rows.map((r) => [r.check, r.figure, r.limit, r.status] as const);
  const w = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: readonly string[]) => `| ${c.map((x, i) => x.padEnd(w[i]!)).join(' | ')} |`;
  return [line(head), `|${w.map((n) => '-'.repeat(n + 2)).join('|')}|`, ...cells.map(line)].join('\n');
}

/** One row as a tab-separated line (check.sh gathers these into its table). */
export function rowLine(r: Row): string {
  return [r.check, r.figure, r.limit, r.status].map((x) => x.replace(/[\t\n]/g, ' ')).join('\t');
}
