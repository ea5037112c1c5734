// config.json (Qwen3MoeForCausalLM, as transformers reads it) → the shape the engine and the native side use.
import fs from 'node:fs';
import path from 'node:path';
import type { NativeModelConfig, WeightDType } from '../native/addon-types.ts';
import { ropeTables, type RopeScaling } from './rope.ts';

export const SUPPORTED_ARCHITECTURES = ['Qwen3MoeForCausalLM'];

export interface ModelConfig {
  dir: string;
  native: NativeModelConfig;
  /** Absolute paths of the safetensors files, from the index when sharded. */
  files: string[];
  maxPositionEmbeddings: number;
  eosTokenIds: number[];
  bosTokenId: number | null;
  /** torch_dtype as declared (informational: each tensor carries its own dtype). */
  dtype: WeightDType;
  raw: Record<string, unknown>;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

function readJson(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read ${file}: ${(e as Error).message}`);
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new ConfigError(`${file}: invalid JSON (${(e as Error).message})`);
  }
}

function int(raw: Record<string, unknown>, key: string, file: string, fallback?: number): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    throw new ConfigError(`${file}: "${key}" must be a non-negative integer (got ${JSON.stringify(raw[key])})`);
  }
  return v;
}

function num(raw: Record<string, unknown>, key: string, file: string, fallback: number): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(`${file}: "${key}" must be a number`);
  return v;
}

function idList(v: unknown): number[] {
  if (typeof v === 'number') return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === 'number');
  return [];
}

function parseRopeScaling(v: unknown, file: string): RopeScaling | null {
  if (v === null || v === undefined) return null;
  if (typeof v !== 'object') throw new ConfigError(`${file}: "rope_scaling" must be an object or null`);
  const r = v as Record<string, unknown>;
  const type = (r.rope_type ?? r.type ?? 'default') as string;
  if (type !== 'default' && type !== 'yarn' && type !== 'linear') {
    throw new ConfigError(`${file}: rope_scaling type "${type}" is not supported (supported: default, linear, yarn)`);
  }
  const opt = (k: string) => (typeof r[k] === 'number' ? (r[k] as number) : undefined);
  const factor = opt('factor') ?? 1;
  return {
    type,
    factor,
    originalMaxPositionEmbeddings: opt('original_max_position_embeddings'),
    betaFast: opt('beta_fast'),
    betaSlow: opt('beta_slow'),
    mscale: opt('mscale'),
    mscaleAllDim: opt('mscale_all_dim'),
    attentionFactor: opt('attention_factor'),
    truncate: typeof r.truncate === 'boolean' ? r.truncate : undefined,
  };
}

function safetensorsFiles(dir: string): string[] {
  const index = path.join(dir, 'model.safetensors.index.json');
  if (fs.existsSync(index)) {
    const raw = readJson(index);
    const map = raw.weight_map;
    if (typeof map !== 'object' || map === null) throw new ConfigError(`${index}: missing "weight_map"`);
    const names = [...new Set(Object.values(map as Record<string, unknown>).map(String))].sort();
    return names.map((n) => {
      const f = path.join(dir, n);
      if (!fs.existsSync(f)) throw new ConfigError(`${index}: shard ${n} does not exist`);
      return f;
    });
  }
  const single = path.join(dir, 'model.safetensors');
  if (fs.existsSync(single)) return [single];
  const any = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort();
  if (any.length === 0) throw new ConfigError(`${dir}: no safetensors weights (model.safetensors or model.safetensors.index.json)`);
  return any.map((f) => path.join(dir, f));
}

export function loadModelConfig(dirIn: string): ModelConfig {
  const dir = path.resolve(dirIn);
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new ConfigError(`model directory ${dir} does not exist`);
  const file = path.join(dir, 'config.json');
  const raw = readJson(file);
  const archs = Array.isArray(raw.architectures) ? (raw.architectures as unknown[]).map(String) : [];
  if (!archs.some((a) => SUPPORTED_ARCHITECTURES.includes(a))) {
    throw new ConfigError(
      `${file}: unsupported architecture ${JSON.stringify(archs)} (supported: ${SUPPORTED_ARCHITECTURES.join(', ')})`,
    );
  }
  const hiddenSize = int(raw, 'hidden_size', file);
  const numHeads = int(raw, 'num_attention_heads', file);
  const numKvHeads = int(raw, 'num_key_value_heads', file, numHeads);
  const headDim = int(raw, 'head_dim', file, numHeads > 0 ? Math.floor(hiddenSize / numHeads) : 0);
  const numLayers = int(raw, 'num_hidden_layers', file);
  const numExperts = int(raw, 'num_experts', file, 0);
  const numExpertsPerTok = int(raw, 'num_experts_per_tok', file, 0);
  const decoderSparseStep = int(raw, 'decoder_sparse_step', file, 1);
  const mlpOnly = new Set(idList(raw.mlp_only_layers));
  const maxPositionEmbeddings = int(raw, 'max_position_embeddings', file, 32768);
  if (hiddenSize === 0 || numHeads === 0 || numKvHeads === 0 || headDim === 0 || numLayers === 0) {
    throw new ConfigError(`${file}: hidden_size, num_attention_heads, num_key_value_heads, head_dim and num_hidden_layers must be positive`);
  }
  if (numHeads % numKvHeads !== 0) throw new ConfigError(`${file}: num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  if (headDim % 2 !== 0) throw new ConfigError(`${file}: head_dim (${headDim}) must be even for rotary embeddings`);
  if (numExperts > 0 && (numExpertsPerTok < 1 || numExpertsPerTok > numExperts)) {
    throw new ConfigError(`${file}: num_experts_per_tok (${numExpertsPerTok}) must be in 1..num_experts (${numExperts})`);
  }
  if (decoderSparseStep < 1) throw new ConfigError(`${file}: decoder_sparse_step must be >= 1`);
  // transformers: a layer is sparse iff it is not in mlp_only_layers, experts exist and (i+1) % step == 0.
  const moeLayers = Array.from({ length: numLayers }, (_, i) =>
    !mlpOnly.has(i) && numExperts > 0 && (i + 1) % decoderSparseStep === 0);
  const ropeTheta = num(raw, 'rope_theta', file, 10000);
  const rope = ropeTables(headDim, ropeTheta, parseRopeScaling(raw.rope_scaling, file), maxPositionEmbeddings);

  let eosTokenIds = idList(raw.eos_token_id);
  const genFile = path.join(dir, 'generation_config.json');
  if (fs.existsSync(genFile)) {
    const gen = readJson(genFile);
    const genEos = idList(gen.eos_token_id);
    if (genEos.length > 0) eosTokenIds = [...new Set([...genEos, ...eosTokenIds])];
  }
  const torchDtype = String(raw.torch_dtype ?? raw.dtype ?? 'bfloat16');
  const dtype: WeightDType = torchDtype === 'float32' ? 'f32' : torchDtype === 'float16' ? 'f16' : 'bf16';

  const native: NativeModelConfig = {
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: int(raw, 'vocab_size', file),
    intermediateSize: int(raw, 'intermediate_size', file, 0),
    moeIntermediateSize: int(raw, 'moe_intermediate_size', file, 0),
    numExperts,
    numExpertsPerTok,
    normTopkProb: raw.norm_topk_prob === undefined ? false : Boolean(raw.norm_topk_prob),
    rmsNormEps: num(raw, 'rms_norm_eps', file, 1e-6),
    moeLayers,
    tieWordEmbeddings: Boolean(raw.tie_word_embeddings ?? false),
    ropeInvFreq: rope.invFreq,
    ropeAttentionFactor: rope.attentionFactor,
  };
  return {
    dir,
    native,
    files: safetensorsFiles(dir),
    maxPositionEmbeddings,
    eosTokenIds,
    bosTokenId: typeof raw.bos_token_id === 'number' ? raw.bos_token_id : null,
    dtype,
    raw,
  };
}
