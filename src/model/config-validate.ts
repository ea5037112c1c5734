// config.json's fields checked at load, one rule per field the forward pass depends on. A value the
// server cannot run exactly as transformers would is refused with the file, the key and the value:
// never served approximately, never left to fail later (natively, or as a 400 on every request).
// A null value counts as absent, as the existing configs use it (transformers: the default applies).
import type { RopeScaling, RopeTables } from './rope.ts';
import type { NativeModelConfig } from '../native/addon-types.ts';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export const SUPPORTED_ARCHITECTURES = ['Qwen3MoeForCausalLM'];

/**
 * Upper bounds several times those of the largest released models. They exist so that a typo such as
 * `vocab_size: 1e12` fails here, naming the key, not as an allocation failure or as the native side's
 * int32 overflow; products of two of them (heads × head_dim, vocab × hidden) stay within 2^40.
 */
export const LIMITS = {
  vocab: 1 << 24,
  hidden: 1 << 16,
  layers: 1024,
  heads: 1024,
  headDim: 1024,
  intermediate: 1 << 20,
  experts: 1 << 14,
  positions: 1 << 24,
  ropeFactor: 1024,
} as const;

type Raw = Record<string, unknown>;

/** A value as error messages show it: its JSON, cut short. */
export function show(value: unknown): string {
  if (value === undefined) return 'missing';
  const s = JSON.stringify(value) ?? String(value);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** Typed reads of one JSON object's keys; every failure names file, key (with `prefix`) and value. */
class Fields {
  constructor(readonly raw: Raw, readonly file: string, readonly prefix = '') {}

  get(key: string): unknown {
    return this.raw[key] ?? undefined;
  }

  fail(key: string, rule: string): never {
    throw new ConfigError(`${this.file}: "${this.prefix}${key}" ${rule} (got ${show(this.raw[key])})`);
  }

  int(key: string, min: number, max: number, fallback?: number): number {
    const v = this.get(key) ?? fallback;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) this.fail(key, `must be an integer in [${min}, ${max}]`);
    return v;
  }

  /** A finite number for which `ok` holds; `rule` says which. */
  num(key: string, fallback: number | undefined, ok: (v: number) => boolean, rule: string): number {
    const v = this.get(key) ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) this.fail(key, `must be ${rule}`);
    return v;
  }

  optNum(key: string, ok: (v: number) => boolean, rule: string): number | undefined {
    return this.get(key) === undefined ? undefined : this.num(key, undefined, ok, rule);
  }

  /** A JSON boolean: the string "false" is an error, not a truthy value. */
  bool(key: string, fallback = false): boolean {
    const v = this.get(key) ?? fallback;
    if (typeof v !== 'boolean') this.fail(key, 'must be true or false (a JSON boolean)');
    return v;
  }
}

/**
 * config.json as validated numbers: the native config's fields (less the rope's, computed from
 * these) and what the rope tables are built from. 0 for intermediateSize / moeIntermediateSize when no
 * layer is dense / sparse (the key may then be absent).
 */
export interface ModelFields extends Omit<NativeModelConfig, 'ropeInvFreq' | 'ropeAttentionFactor'> {
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
}

function checkArchitecture(raw: Raw, file: string): void {
  const archs = Array.isArray(raw.architectures) ? (raw.architectures as unknown[]).map(String) : [];
  if (!archs.some((a) => SUPPORTED_ARCHITECTURES.includes(a))) {
    throw new ConfigError(`${file}: "architectures" names no supported architecture (supported: ${SUPPORTED_ARCHITECTURES.join(', ')}) (got ${show(raw.architectures)})`);
  }
}

/** Features Qwen3-MoE configs may switch on that the native forward pass does not implement. */
function refuseUnimplemented(f: Fields): void {
  // transformers' ACT2FN maps both names to SiLU, the only activation the native MLP computes.
  const act = f.get('hidden_act') ?? 'silu';
  if (act !== 'silu' && act !== 'swish') f.fail('hidden_act', 'must be "silu" (the only activation implemented)');
  if (f.bool('attention_bias')) f.fail('attention_bias', 'must be false: attention projection biases are not implemented');
  // Qwen3-MoE configs ship a sliding_window with use_sliding_window false: only the pair switches it on.
  const window = f.get('sliding_window');
  if (f.bool('use_sliding_window') && window !== undefined) {
    f.fail('use_sliding_window', `is true with "sliding_window" ${show(window)}, and sliding-window attention is not implemented`);
  }
  const layerTypes = f.get('layer_types');
  if (layerTypes !== undefined && (!Array.isArray(layerTypes) || layerTypes.some((t) => t !== 'full_attention'))) {
    f.fail('layer_types', 'must list only "full_attention" (sliding-window attention is not implemented)');
  }
  if (f.get('partial_rotary_factor') !== undefined && f.get('partial_rotary_factor') !== 1) {
    f.fail('partial_rotary_factor', 'must be 1: partial rotary embeddings are not implemented');
  }
}

/** transformers' rope_scaling as far as rope.ts and kv-plan.ts use it: default, linear or yarn. */
function parseRopeScaling(f: Fields): RopeScaling | null {
  const v = f.get('rope_scaling');
  if (v === undefined) return null;
  if (typeof v !== 'object' || Array.isArray(v)) f.fail('rope_scaling', 'must be an object or null');
  const r: Fields = new Fields(v as Raw, f.file, 'rope_scaling.');
  const typeKey = r.get('rope_type') !== undefined ? 'rope_type' : 'type';
  const type = r.get(typeKey) ?? 'default';
  if (type !== 'default' && type !== 'linear' && type !== 'yarn') r.fail(typeKey, 'is not supported (supported: default, linear, yarn)');
  if (type === 'default') return { type, factor: 1 };
  // transformers refuses factors below 1 for both; the bound keeps the derived context length sane.
  const factor = r.num('factor', undefined, (x) => x >= 1 && x <= LIMITS.ropeFactor, `a number in [1, ${LIMITS.ropeFactor}]`);
  if (type === 'linear') return { type, factor };
  const truncate = r.get('truncate');
  if (truncate !== undefined && typeof truncate !== 'boolean') r.fail('truncate', 'must be true or false (a JSON boolean)');
  const orig = r.get('original_max_position_embeddings');
  return {
    type,
    factor,
    originalMaxPositionEmbeddings: orig === undefined ? undefined : r.int('original_max_position_embeddings', 1, LIMITS.positions),
    betaFast: r.optNum('beta_fast', (x) => x > 0, 'a number > 0'),
    betaSlow: r.optNum('beta_slow', (x) => x > 0, 'a number > 0'),
    // yarn's mscale is 0.1·m·ln(factor) + 1: m >= 0 keeps it >= 1, so the ratio of two stays finite.
    mscale: r.optNum('mscale', (x) => x >= 0, 'a number >= 0'),
    mscaleAllDim: r.optNum('mscale_all_dim', (x) => x >= 0, 'a number >= 0'),
    attentionFactor: r.optNum('attention_factor', (x) => x > 0, 'a number > 0'),
    truncate,
  };
}

/** Layer i is sparse iff not in mlp_only_layers, experts exist and (i+1) % step == 0 (transformers). */
function parseMoeLayers(f: Fields, numLayers: number, numExperts: number): boolean[] {
  const step = f.int('decoder_sparse_step', 1, LIMITS.layers, 1);
  const list = f.get('mlp_only_layers') ?? [];
  if (!Array.isArray(list) || list.some((l) => !Number.isInteger(l) || l < 0 || l >= numLayers)) {
    f.fail('mlp_only_layers', `must be a list of layer indices in [0, ${numLayers - 1}]`);
  }
  const mlpOnly = new Set(list as number[]);
  return Array.from({ length: numLayers }, (_, i) => !mlpOnly.has(i) && numExperts > 0 && (i + 1) % step === 0);
}

export function validateModelFields(raw: Raw, file: string): ModelFields {
  checkArchitecture(raw, file);
  const f = new Fields(raw, file);
  refuseUnimplemented(f);
  const vocabSize = f.int('vocab_size', 1, LIMITS.vocab);
  const hiddenSize = f.int('hidden_size', 1, LIMITS.hidden);
  const numLayers = f.int('num_hidden_layers', 1, LIMITS.layers);
  const numHeads = f.int('num_attention_heads', 1, LIMITS.heads);
  const numKvHeads = f.int('num_key_value_heads', 1, numHeads, numHeads);
  if (numHeads % numKvHeads !== 0) f.fail('num_key_value_heads', `must divide "num_attention_heads" (${numHeads})`);
  // transformers' fallback when head_dim is absent; Qwen3 configs give it explicitly (128, not hidden/heads).
  const derived = Math.floor(hiddenSize / numHeads);
  const headDim = f.get('head_dim') === undefined && (derived < 2 || derived % 2 !== 0)
    ? f.fail('head_dim', `is needed: hidden_size / num_attention_heads = ${derived} is not an even head size`)
    : f.int('head_dim', 2, LIMITS.headDim, derived);
  if (headDim % 2 !== 0) f.fail('head_dim', 'must be even (rotary embeddings pair the two halves of a head)');
  const numExperts = f.int('num_experts', 0, LIMITS.experts, 0);
  const numExpertsPerTok = numExperts > 0 ? f.int('num_experts_per_tok', 1, numExperts) : 0;
  const moeLayers = parseMoeLayers(f, numLayers, numExperts);
  // Each width is required only where a layer uses it.
  const width = (key: string, usedBy: string | false): number => {
    if (f.get(key) !== undefined) return f.int(key, 1, LIMITS.intermediate);
    return usedBy ? f.fail(key, `is needed by the ${usedBy} layers: an integer in [1, ${LIMITS.intermediate}]`) : 0;
  };
  return {
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    intermediateSize: width('intermediate_size', moeLayers.includes(false) && 'dense MLP'),
    moeIntermediateSize: width('moe_intermediate_size', moeLayers.includes(true) && 'MoE'),
    numExperts,
    numExpertsPerTok,
    moeLayers,
    normTopkProb: f.bool('norm_topk_prob'),
    tieWordEmbeddings: f.bool('tie_word_embeddings'),
    // The native side holds eps as float32: it must not round to 0 there.
    rmsNormEps: f.num('rms_norm_eps', 1e-6, (x) => x > 0 && x < 1 && Math.fround(x) > 0, 'a number in (0, 1)'),
    // theta <= 1 gives frequencies that do not decrease, and yarn divides by ln(theta).
    ropeTheta: f.num('rope_theta', 10000, (x) => x > 1, 'a number > 1'),
    ropeScaling: parseRopeScaling(f),
    maxPositionEmbeddings: f.int('max_position_embeddings', 1, LIMITS.positions, 32768),
  };
}

/** The tables as float32 must be usable: catches any theta/scaling combination that under- or overflows. */
export function checkRopeTables(tables: RopeTables, raw: Raw, file: string): void {
  const bad = [...tables.invFreq].some((x) => !(Number.isFinite(x) && x > 0)) || !(Number.isFinite(tables.attentionFactor) && tables.attentionFactor > 0);
  if (bad) {
    throw new ConfigError(`${file}: "rope_theta" ${show(raw.rope_theta)} with "rope_scaling" ${show(raw.rope_scaling)} gives rotary frequencies that are not finite and positive in float32`);
  }
}

/** Where a list of token ids came from, for the messages. */
export interface TokenIdSource {
  file: string;
  key: string;
  value: unknown;
  ids: number[];
}

/** An id or a list of ids (transformers allows both for eos_token_id); absent or null: none. */
export function parseTokenIds(raw: Raw, key: string, file: string): TokenIdSource {
  const value = raw[key] ?? undefined;
  const list = value === undefined ? [] : Array.isArray(value) ? value : [value];
  if (list.some((id) => !Number.isSafeInteger(id) || (id as number) < 0)) {
    throw new ConfigError(`${file}: "${key}" must be a token id or a list of token ids (non-negative integers) (got ${show(value)})`);
  }
  return { file, key, value, ids: list as number[] };
}

/**
 * Every id must be one the model can produce. An id outside the vocabulary would join every request's
 * stop ids, and the request checks would then blame the client (a 400 on stop_token_ids).
 */
export function checkTokenIdsInVocab(sources: readonly TokenIdSource[], vocabSize: number, vocabFile: string): void {
  for (const s of sources) {
    const bad = s.ids.find((id) => id >= vocabSize);
    if (bad !== undefined) {
      throw new ConfigError(`${s.file}: "${s.key}" ${show(s.value)} holds ${bad}, not a token id of this model ("vocab_size" is ${vocabSize} in ${vocabFile})`);
    }
  }
}
