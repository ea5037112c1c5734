// Sizing the paged KV cache before the model loads: bytes per token, the pool's blocks, and the
// context limits that follow. Pure functions of numbers, so the policy is unit-tested.
import type { ModelConfig } from '../model/config.ts';

export const DEFAULT_BLOCK_SIZE = 16;
/** Without --kv-cache-memory: at most this share of the free memory... */
export const KV_FREE_MEMORY_SHARE = 0.5;
/** ...and never more than leaves the (memory-mapped, paged-in) weights room within this share of it. */
export const MEMORY_UTILIZATION = 0.9;
/** ...and no more than this many tokens (or one max-model-len sequence): a bigger default pool only idles. */
export const KV_DEFAULT_MAX_TOKENS = 256 * 1024;

const GiB = 1024 ** 3;

/**
 * KV bytes per token, all layers, K and V: what the backend stores. The CPU backend keeps f32,
 * layers × 2 × kv heads × head_dim × 4 bytes. The loaded model reports the exact figure
 * (NativeModel.kvBytesPerToken); change this with the backend's storage type.
 */
export function estimateKvBytesPerToken(config: ModelConfig): number {
  const c = config.native;
  return c.numLayers * 2 * c.numKvHeads * c.headDim * 4;
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

/** The pool for these settings; throws, naming the flags to change, when one max-model-len sequence does not fit. */
export function planKvCache(i: KvPlanInput): KvPlan {
  for (const [name, v] of [['bytesPerToken', i.bytesPerToken], ['blockSize', i.blockSize], ['maxModelLen', i.maxModelLen]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer, got ${v}`);
  }
  const explicit = i.kvCacheGiB !== undefined;
  if (explicit && !(Number.isFinite(i.kvCacheGiB) && i.kvCacheGiB! > 0)) throw new Error(`--kv-cache-memory must be a positive number of GiB, got ${i.kvCacheGiB}`);
  const { bytes: budget, source } = explicit ? { bytes: i.kvCacheGiB! * GiB, source: '--kv-cache-memory' } : defaultKvCacheBytes(i);
  const blocks = Math.floor(Math.floor(budget / i.bytesPerToken) / i.blockSize);
  const needed = Math.ceil(i.maxModelLen / i.blockSize);
  if (blocks < needed) {
    const needGiB = (needed * i.blockSize * i.bytesPerToken) / GiB;
    const what = explicit ? `the KV cache (${i.kvCacheGiB} GiB)` : `the default KV cache (${gib(budget)} GiB, ${source.replace(/^default: /, '')})`;
    throw new Error(
      `${what} holds ${blocks * i.blockSize} tokens but max-model-len is ${i.maxModelLen} ` +
        `(needs ${needGiB >= 0.01 ? needGiB.toFixed(2) : needGiB.toPrecision(2)} GiB): pass --kv-cache-memory ${Math.ceil(needGiB)} or a smaller --max-model-len`,
    );
  }
  const tokens = blocks * i.blockSize;
  return { blocks, blockSize: i.blockSize, bytesPerToken: i.bytesPerToken, tokens, bytes: tokens * i.bytesPerToken, source };
}

/** The start-up log line: size, blocks, and the longest context that fits. */
export function describeKvPlan(plan: KvPlan, maxModelLen: number): string {
  const concurrent = Math.floor(plan.blocks / Math.ceil(maxModelLen / plan.blockSize));
  return (
    `KV cache: ${gib(plan.bytes)} GiB (${plan.source}), ${plan.blocks} blocks of ${plan.blockSize} tokens, ${plan.tokens} tokens ` +
    `(${plan.bytesPerToken} bytes per token); longest context that fits: ${plan.tokens} tokens; ` +
    `max-model-len ${maxModelLen}: ${concurrent} such sequence${concurrent === 1 ? '' : 's'} at once`
  );
}

function gib(bytes: number): string {
  return (bytes / GiB).toFixed(2);
}
