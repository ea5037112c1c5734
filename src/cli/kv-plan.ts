// Sizing the paged KV cache: before the load, the budget LoadOptions gets (bytes, or on a device backend a
// share of its memory); after it, the check of the pool the backend made with its own figures (one
// max-model-len sequence must fit), and the context limits that follow. Pure functions of numbers, so the
// policy is unit-tested.
import type { ModelConfig } from '../model/config.ts';
import type { BackendName, NativeModelConfig } from '../native/addon-types.ts';
import type { KvCacheDtype } from './precision.ts';

export const DEFAULT_BLOCK_SIZE = 16;
/** Without --kv-cache-memory: at most this share of the free memory... */
export const KV_FREE_MEMORY_SHARE = 0.5;
/** ...and never more than leaves the (memory-mapped, paged-in) weights room within this share of it. */
export const MEMORY_UTILIZATION = 0.9;
/** ...and no more than this many tokens (or one max-model-len sequence): a bigger default pool only idles. */
export const KV_DEFAULT_MAX_TOKENS = 256 * 1024;

const GiB = 1024 ** 3;

/**
 * KV bytes per token, all layers, K and V: what the backend stores, layers × 2 × kv heads × head_dim × the
 * element size of the KV dtype (bf16: 2, f32: 4). The loaded model reports the exact figure
 * (NativeModel.kvBytesPerToken), which the pool is checked with after the load.
 */
export function estimateKvBytesPerToken(config: ModelConfig, dtype: KvCacheDtype): number {
  const c = config.native;
  return c.numLayers * 2 * c.numKvHeads * c.headDim * (dtype === 'f32' ? 4 : 2);
}

/**
 * The checkpoint's size from its shapes alone, at `bytesPerWeight` (2: bf16, what --load-format dummy
 * generates): for the CPU's default KV budget where there are no files to measure.
 */
export function estimateWeightBytes(c: NativeModelConfig, bytesPerWeight = 2): number {
  const h = c.hiddenSize;
  const attn = h * c.numHeads * c.headDim * 2 + h * c.numKvHeads * c.headDim * 2 + 2 * c.headDim + 2 * h;
  const moe = c.numExperts * h + c.numExperts * 3 * h * c.moeIntermediateSize;
  const dense = 3 * h * c.intermediateSize;
  let params = c.vocabSize * h * (c.tieWordEmbeddings ? 1 : 2) + h;
  for (let l = 0; l < c.numLayers; l++) params += attn + (c.moeLayers[l] ? moe : dense);
  return params * bytesPerWeight;
}

/**
 * The context length the model was trained for, as vLLM derives it: max_position_embeddings, or
 * for rope_scaling (yarn, linear) the original length times the scaling factor.
 */
export function derivedMaxModelLen(config: ModelConfig): number {
  const r = config.raw.rope_scaling;
  if (r === null || typeof r !== 'object') return config.maxPositionEmbeddings;
  const scaling = r as Record<string, unknown>;
  const type = scaling.rope_type ?? scaling.type ?? 'default';
  const factor = typeof scaling.factor === 'number' && scaling.factor > 0 ? scaling.factor : 1;
  if (type !== 'yarn' && type !== 'linear') return config.maxPositionEmbeddings;
  const original = typeof scaling.original_max_position_embeddings === 'number' ? scaling.original_max_position_embeddings : null;
  return Math.floor((type === 'yarn' && original !== null ? original : config.maxPositionEmbeddings) * factor);
}

export interface KvPlanInput {
  bytesPerToken: number;
  blockSize: number;
  maxModelLen: number;
  /** --kv-cache-memory; undefined: the default from free memory. */
  kvCacheGiB?: number;
  /** os.freemem() (MemAvailable on Linux) and the weights' size on disk; used for the default only. */
  freeBytes: number;
  weightBytes: number;
}

export interface KvPlan {
  blocks: number;
  blockSize: number;
  bytesPerToken: number;
  /** blocks × blockSize: the longest context one sequence can hold. */
  tokens: number;
  bytes: number;
  /** How the size was chosen, for the start-up log. */
  source: string;
}

/** The default budget in bytes and how it was reached. */
export function defaultKvCacheBytes(i: Omit<KvPlanInput, 'kvCacheGiB' | 'blockSize'>): { bytes: number; source: string } {
  const share = KV_FREE_MEMORY_SHARE * i.freeBytes;
  const fit = MEMORY_UTILIZATION * i.freeBytes - i.weightBytes;
  const worth = Math.max(i.maxModelLen, KV_DEFAULT_MAX_TOKENS) * i.bytesPerToken;
  const bytes = Math.max(0, Math.min(share, fit, worth));
  const free = `${gib(i.freeBytes)} GiB free`;
  const source =
    bytes === worth
      ? `default: ${Math.max(i.maxModelLen, KV_DEFAULT_MAX_TOKENS)} tokens, enough for this model`
      : bytes === share
        ? `default: ${KV_FREE_MEMORY_SHARE * 100}% of ${free}`
        : `default: ${MEMORY_UTILIZATION * 100}% of ${free} less ${gib(i.weightBytes)} GiB of weights`;
  return { bytes, source };
}

/** The pool for these settings (the CPU backend's sizing, from bytes); throws, naming the flags to change, when one max-model-len sequence does not fit. */
export function planKvCache(i: KvPlanInput): KvPlan {
  checkPositive({ bytesPerToken: i.bytesPerToken, blockSize: i.blockSize, maxModelLen: i.maxModelLen });
  const budget = kvBudget({ ...i, backend: 'cpu' });
  if (budget.kind !== 'bytes') throw new Error('the CPU backend sizes its KV cache in bytes');
  return checkKvBudget(budget, i);
}

// ---- the pool in two halves: a budget chosen before the load, a check of what the backend made of it ----

export interface KvBudgetInput {
  backend: BackendName;
  /** The backend's KV bytes per token as estimated before the load (estimateKvBytesPerToken). */
  bytesPerToken: number;
  maxModelLen: number;
  /** --kv-cache-memory in GiB: sizes the pool exactly on either backend. */
  kvCacheGiB?: number;
  /** --gpu-memory-utilization (a device backend; default DEFAULT_GPU_MEMORY_UTILIZATION). */
  gpuMemoryUtilization?: number;
  /** The CPU default only: os.freemem() and the weights' size in RAM (files, or the generated dummy weights). */
  freeBytes: number;
  weightBytes: number;
}

/** What LoadOptions gets: exactly one of kvCacheBytes | gpuMemoryUtilization. */
export type KvBudget = KvBytesBudget | KvShareBudget;
export interface KvBytesBudget {
  kind: 'bytes';
  bytes: number;
  /** --kv-cache-memory (else the CPU default). */
  explicit: boolean;
  /** How the size was chosen, for the start-up log. */
  source: string;
  /** The pool as an error message names it. */
  label: string;
}
export interface KvShareBudget {
  kind: 'share';
  gpuMemoryUtilization: number;
  /** --gpu-memory-utilization given (else its default). */
  explicit: boolean;
  source: string;
}

/** vLLM's --gpu-memory-utilization default: weights, workspace and KV may take this share of the device. */
export const DEFAULT_GPU_MEMORY_UTILIZATION = 0.9;

export function checkGpuMemoryUtilization(v: number): number {
  if (!(Number.isFinite(v) && v > 0 && v <= 1)) throw new Error(`--gpu-memory-utilization must be a number in (0, 1], got ${v}`);
  return v;
}

/**
 * The KV budget before the load: --kv-cache-memory as bytes on either backend; otherwise on the CPU the
 * default from free memory (defaultKvCacheBytes), on CUDA a share of the device's memory, sized natively
 * once the weights and workspace are placed.
 */
export function kvBudget(i: KvBudgetInput): KvBudget {
  if (i.kvCacheGiB !== undefined) {
    if (!(Number.isFinite(i.kvCacheGiB) && i.kvCacheGiB > 0)) throw new Error(`--kv-cache-memory must be a positive number of GiB, got ${i.kvCacheGiB}`);
    return { kind: 'bytes', bytes: Math.floor(i.kvCacheGiB * GiB), explicit: true, source: '--kv-cache-memory', label: `the KV cache (${i.kvCacheGiB} GiB)` };
  }
  if (i.backend === 'cuda') {
    const share = checkGpuMemoryUtilization(i.gpuMemoryUtilization ?? DEFAULT_GPU_MEMORY_UTILIZATION);
    const explicit = i.gpuMemoryUtilization !== undefined;
    return { kind: 'share', gpuMemoryUtilization: share, explicit, source: `${explicit ? '' : 'default: '}--gpu-memory-utilization ${share}` };
  }
  const { bytes: raw, source } = defaultKvCacheBytes(i);
  const bytes = Math.floor(raw);
  return { kind: 'bytes', bytes, explicit: false, source, label: `the default KV cache (${gib(bytes)} GiB, ${source.replace(/^default: /, '')})` };
}

/** The LoadOptions fields for a budget. */
export function kvLoadOptions(b: KvBudget): { kvCacheBytes: number } | { gpuMemoryUtilization: number } {
  return b.kind === 'bytes' ? { kvCacheBytes: b.bytes } : { gpuMemoryUtilization: b.gpuMemoryUtilization };
}

/**
 * Before the load, for a budget in bytes: the pool that many bytes buy at the estimated bytes per token,
 * checked as after the load (so a pool too small fails before minutes of weight loading).
 */
export function checkKvBudget(budget: KvBytesBudget, i: { bytesPerToken: number; blockSize: number; maxModelLen: number }): KvPlan {
  const blocks = Math.floor(Math.floor(budget.bytes / i.bytesPerToken) / i.blockSize);
  return checkKvPool({ ...i, blocks, budget });
}

export interface KvPoolInput {
  /** What the backend made: NativeModel.kvBlocks, blockSize and kvBytesPerToken. */
  blocks: number;
  blockSize: number;
  bytesPerToken: number;
  maxModelLen: number;
  budget: KvBudget;
  /** The device's total memory (NativeModel.deviceMemory), for the --gpu-memory-utilization that would fit. */
  deviceTotalBytes?: number;
}

/** After the load, with the backend's own figures: the pool as made; throws, naming the flags to change, when one max-model-len sequence does not fit. */
export function checkKvPool(i: KvPoolInput): KvPlan {
  checkPositive({ bytesPerToken: i.bytesPerToken, blockSize: i.blockSize, maxModelLen: i.maxModelLen });
  if (!Number.isInteger(i.blocks) || i.blocks < 0) throw new Error(`blocks must be an integer >= 0, got ${i.blocks}`);
  const tokens = i.blocks * i.blockSize;
  const needed = Math.ceil(i.maxModelLen / i.blockSize);
  if (i.blocks < needed) {
    const needBytes = needed * i.blockSize * i.bytesPerToken;
    const needGiB = needBytes / GiB;
    const need = `(needs ${needGiB >= 0.01 ? needGiB.toFixed(2) : needGiB.toPrecision(2)} GiB)`;
    const b = i.budget;
    if (b.kind === 'bytes') {
      throw new Error(
        `${b.label} holds ${tokens} tokens but max-model-len is ${i.maxModelLen} ${need}: ` +
          `pass --kv-cache-memory ${Math.ceil(needGiB)} or a smaller --max-model-len`,
      );
    }
    const poolBytes = tokens * i.bytesPerToken;
    const what = `the KV cache (${gib(poolBytes)} GiB: what --gpu-memory-utilization ${b.gpuMemoryUtilization} left after the weights and workspace)`;
    let fix = `pass a larger --gpu-memory-utilization, --kv-cache-memory ${Math.ceil(needGiB)}, or a smaller --max-model-len`;
    if (i.deviceTotalBytes !== undefined && i.deviceTotalBytes > 0) {
      // One block more than the shortfall, for the rounding of the share into bytes.
      const share = Math.ceil((b.gpuMemoryUtilization + (needBytes - poolBytes + i.blockSize * i.bytesPerToken) / i.deviceTotalBytes) * 100) / 100;
      fix = share <= 1
        ? `pass --gpu-memory-utilization ${share} or a smaller --max-model-len`
        : `the device's ${gib(i.deviceTotalBytes)} GiB cannot hold it beside the weights: pass a smaller --max-model-len`;
    }
    throw new Error(`${what} holds ${tokens} tokens but max-model-len is ${i.maxModelLen} ${need}: ${fix}`);
  }
  return { blocks: i.blocks, blockSize: i.blockSize, bytesPerToken: i.bytesPerToken, tokens, bytes: tokens * i.bytesPerToken, source: i.budget.source };
}

function checkPositive(values: Record<string, number>): void {
  for (const [name, v] of Object.entries(values)) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer, got ${v}`);
  }
}

/** The start-up log line: size, blocks, the storage dtype (when given) and the longest context that fits. */
export function describeKvPlan(plan: KvPlan, maxModelLen: number, dtype?: KvCacheDtype): string {
  const concurrent = Math.floor(plan.blocks / Math.ceil(maxModelLen / plan.blockSize));
  return (
    `KV cache: ${gib(plan.bytes)} GiB (${plan.source}), ${plan.blocks} blocks of ${plan.blockSize} tokens, ${plan.tokens} tokens ` +
    `(${dtype ? `${dtype}, ` : ''}${plan.bytesPerToken} bytes per token); longest context that fits: ${plan.tokens} tokens; ` +
    `max-model-len ${maxModelLen}: ${concurrent} such sequence${concurrent === 1 ? '' : 's'} at once`
  );
}

function gib(bytes: number): string {
  return (bytes / GiB).toFixed(2);
}
