// Writes a random-weight Qwen3-MoE checkpoint in exact Hugging Face layout (config.json,
// generation_config.json, safetensors single file or shards + index, the real Qwen3 tokenizer).
// Weights are a pure function of (seed, tensor name): the same seed gives the same f32 values whatever
// the shard count or the write order (then rounded to the chosen dtype). Tensors are generated and written in chunks,
// so a multi-GB model never sits in memory.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { encodeF32, numElements, SafetensorsWriter, tensorByteLength, type SafetensorsDType, type TensorSpec } from './safetensors-writer.ts';
import { copyQwen3TokenizerFiles } from './tokenizer-files.ts';

export type MakeModelDType = 'bf16' | 'f16' | 'f32';

export interface MakeModelOptions {
  layers?: number;
  hidden?: number;
  heads?: number;
  kvHeads?: number;
  headDim?: number;
  /** 0 makes every layer a dense MLP. */
  experts?: number;
  topK?: number;
  moeIntermediate?: number;
  /** Width of the dense MLP layers. */
  intermediate?: number;
  vocab?: number;
  seed?: number;
  dtype?: MakeModelDType;
  mlpOnlyLayers?: number[];
  decoderSparseStep?: number;
  normTopkProb?: boolean;
  ropeTheta?: number;
  rmsNormEps?: number;
  maxPositionEmbeddings?: number;
  tieWordEmbeddings?: boolean;
  /** Number of safetensors files: 1 → model.safetensors, n > 1 → shards + model.safetensors.index.json. */
  shards?: number;
  /** Written verbatim as config.json "rope_scaling", e.g. { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 32768 }. */
  ropeScaling?: Record<string, unknown> | null;
  /** Called after each chunk with bytes of tensor data written so far and in total. */
  onProgress?: (done: number, total: number) => void;
}

export type ResolvedMakeModelOptions = Required<Omit<MakeModelOptions, 'onProgress'>> & Pick<MakeModelOptions, 'onProgress'>;

export const MAKE_MODEL_DEFAULTS: Required<Omit<MakeModelOptions, 'onProgress'>> = {
  layers: 2,
  hidden: 64,
  heads: 4,
  kvHeads: 2,
  headDim: 16,
  experts: 8,
  topK: 2,
  moeIntermediate: 32,
  intermediate: 64,
  vocab: 151936,
  seed: 1,
  dtype: 'bf16',
  mlpOnlyLayers: [],
  decoderSparseStep: 1,
  normTopkProb: true,
  ropeTheta: 1e6,
  rmsNormEps: 1e-6,
  maxPositionEmbeddings: 40960,
  tieWordEmbeddings: false,
  shards: 1,
  ropeScaling: null,
};

/** Qwen3's special ids (the tokenizer shipped with the model has them at these positions). */
export const QWEN3_BOS_ID = 151643;
export const QWEN3_EOS_ID = 151645;

// Weight scales. Inputs to every projection are RMS-normalised (or products of such), so std 1/sqrt(in)
// keeps activations O(1) and each layer changes the residual stream by O(1): the context matters.
// The lm_head gives logits of std LOGIT_STD, so the next-token distribution over 151936 tokens is
// peaked (top-1 usually well ahead of top-2): parity tests compare top-1 and near-ties would be noise.
// Router logits of std ROUTER_STD make expert choices clear-cut for the same reason.
const LOGIT_STD = 10;
const ROUTER_STD = 2;
const NORM_SPREAD = 0.1;

const DTYPE_NAMES: Record<MakeModelDType, { st: SafetensorsDType; torch: string }> = {
  bf16: { st: 'BF16', torch: 'bfloat16' },
  f16: { st: 'F16', torch: 'float16' },
  f32: { st: 'F32', torch: 'float32' },
};

function posInt(name: string, v: number, min = 1): void {
  if (!Number.isInteger(v) || v < min) throw new Error(`make-model: ${name} must be an integer >= ${min} (got ${v})`);
}

export function resolveMakeModelOptions(opts: MakeModelOptions = {}): ResolvedMakeModelOptions {
  const defined = Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined));
  const o = { ...MAKE_MODEL_DEFAULTS, ...defined } as ResolvedMakeModelOptions;
  for (const k of ['layers', 'hidden', 'heads', 'kvHeads', 'headDim', 'moeIntermediate', 'intermediate', 'vocab', 'decoderSparseStep', 'shards', 'maxPositionEmbeddings'] as const) {
    posInt(k, o[k]);
  }
  posInt('experts', o.experts, 0);
  posInt('seed', o.seed, 0);
  if (o.experts > 0 && (!Number.isInteger(o.topK) || o.topK < 1 || o.topK > o.experts)) {
    throw new Error(`make-model: topK must be in 1..experts (${o.experts}), got ${o.topK}`);
  }
  if (o.heads % o.kvHeads !== 0) throw new Error(`make-model: heads (${o.heads}) must be a multiple of kvHeads (${o.kvHeads})`);
  if (o.headDim % 2 !== 0) throw new Error(`make-model: headDim must be even (got ${o.headDim})`);
  if (!(o.dtype in DTYPE_NAMES)) throw new Error(`make-model: dtype must be bf16, f16 or f32 (got ${o.dtype})`);
  for (const l of o.mlpOnlyLayers) {
    if (!Number.isInteger(l) || l < 0 || l >= o.layers) throw new Error(`make-model: mlpOnlyLayers entry ${l} is not a layer index (0..${o.layers - 1})`);
  }
  if (!(o.ropeTheta > 0) || !(o.rmsNormEps > 0)) throw new Error('make-model: ropeTheta and rmsNormEps must be positive');
  return o;
}

/** transformers' Qwen3MoeDecoderLayer: sparse iff not in mlp_only_layers, experts exist and (i+1) % step == 0. */
export function isMoeLayer(layer: number, o: Pick<ResolvedMakeModelOptions, 'mlpOnlyLayers' | 'experts' | 'decoderSparseStep'>): boolean {
  return !o.mlpOnlyLayers.includes(layer) && o.experts > 0 && (layer + 1) % o.decoderSparseStep === 0;
}

export function buildConfigJson(o: ResolvedMakeModelOptions): Record<string, unknown> {
  return {
    architectures: ['Qwen3MoeForCausalLM'],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: QWEN3_BOS_ID,
    decoder_sparse_step: o.decoderSparseStep,
    eos_token_id: QWEN3_EOS_ID,
    head_dim: o.headDim,
    hidden_act: 'silu',
    hidden_size: o.hidden,
    initializer_range: 0.02,
    intermediate_size: o.intermediate,
    max_position_embeddings: o.maxPositionEmbeddings,
    max_window_layers: o.layers,
    mlp_only_layers: [...o.mlpOnlyLayers],
    model_type: 'qwen3_moe',
    moe_intermediate_size: o.moeIntermediate,
    norm_topk_prob: o.normTopkProb,
    num_attention_heads: o.heads,
    num_experts: o.experts,
    num_experts_per_tok: o.topK,
    num_hidden_layers: o.layers,
    num_key_value_heads: o.kvHeads,
    output_router_logits: false,
    rms_norm_eps: o.rmsNormEps,
    rope_scaling: o.ropeScaling,
    rope_theta: o.ropeTheta,
    router_aux_loss_coef: 0.001,
    sliding_window: null,
    tie_word_embeddings: o.tieWordEmbeddings,
    torch_dtype: DTYPE_NAMES[o.dtype].torch,
    transformers_version: '4.51.0',
    use_cache: true,
    use_sliding_window: false,
    vocab_size: o.vocab,
  };
}

export const GENERATION_CONFIG = {
  bos_token_id: QWEN3_BOS_ID,
  do_sample: true,
  eos_token_id: [QWEN3_EOS_ID, QWEN3_BOS_ID],
  pad_token_id: QWEN3_BOS_ID,
  temperature: 0.6,
  top_k: 20,
  top_p: 0.95,
  transformers_version: '4.51.0',
};

type Init = { kind: 'normal' | 'uniform'; std: number } | { kind: 'norm' };

export interface PlannedTensor extends TensorSpec {
  init: Init;
}

/** Every tensor of the checkpoint with its HF name, [out, in] shape and initialiser. */
export function planTensors(o: ResolvedMakeModelOptions): PlannedTensor[] {
  const dtype = DTYPE_NAMES[o.dtype].st;
  const H = o.hidden;
  const q = o.heads * o.headDim;
  const kv = o.kvHeads * o.headDim;
  const t: PlannedTensor[] = [];
  const add = (name: string, shape: number[], init: Init) => t.push({ name, dtype, shape, init });
  const w = (fanIn: number, scale = 1): Init => ({ kind: 'uniform', std: scale / Math.sqrt(fanIn) });
  const g = (fanIn: number, scale = 1): Init => ({ kind: 'normal', std: scale / Math.sqrt(fanIn) });
  const norm: Init = { kind: 'norm' };
  // Tied: the embedding is the lm_head, so it gets the lm_head's scale.
  add('model.embed_tokens.weight', [o.vocab, H], o.tieWordEmbeddings ? g(H, LOGIT_STD) : { kind: 'uniform', std: 1 });
  for (let l = 0; l < o.layers; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [H], norm);
    add(`${p}.self_attn.q_proj.weight`, [q, H], w(H));
    add(`${p}.self_attn.k_proj.weight`, [kv, H], w(H));
    add(`${p}.self_attn.v_proj.weight`, [kv, H], w(H));
    add(`${p}.self_attn.o_proj.weight`, [H, q], w(q));
    add(`${p}.self_attn.q_norm.weight`, [o.headDim], norm);
    add(`${p}.self_attn.k_norm.weight`, [o.headDim], norm);
    add(`${p}.post_attention_layernorm.weight`, [H], norm);
    if (isMoeLayer(l, o)) {
      add(`${p}.mlp.gate.weight`, [o.experts, H], g(H, ROUTER_STD));
      for (let e = 0; e < o.experts; e++) {
        add(`${p}.mlp.experts.${e}.gate_proj.weight`, [o.moeIntermediate, H], w(H));
        add(`${p}.mlp.experts.${e}.up_proj.weight`, [o.moeIntermediate, H], w(H));
        add(`${p}.mlp.experts.${e}.down_proj.weight`, [H, o.moeIntermediate], w(o.moeIntermediate));
      }
    } else {
      add(`${p}.mlp.gate_proj.weight`, [o.intermediate, H], w(H));
      add(`${p}.mlp.up_proj.weight`, [o.intermediate, H], w(H));
      add(`${p}.mlp.down_proj.weight`, [H, o.intermediate], w(o.intermediate));
    }
  }
  add('model.norm.weight', [H], norm);
  if (!o.tieWordEmbeddings) add('lm_head.weight', [o.vocab, H], g(H, LOGIT_STD));
  return t;
}

// ---- deterministic random numbers (integer PRNG; V8's Math.log/cos/sin are fdlibm ports, so the
// values are the same on every platform) ----

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * mulberry32, a 32-bit state PRNG (plenty for weights). The bulk fill inlines the step: a closure call
 * per value would double the time to write a multi-GB model.
 */
export class RandomStream {
  private a: number;

  constructor(seed: number) {
    this.a = seed >>> 0;
  }

  /** A uniform in [0, 1). */
  next(): number {
    const a = (this.a = (this.a + 0x6d2b79f5) | 0);
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** out[i] = center + halfWidth · (2u − 1), u uniform in [0, 1): the same values as next() would give. */
  fillUniform(out: Float32Array, center: number, halfWidth: number): void {
    let a = this.a;
    for (let i = 0; i < out.length; i++) {
      a = (a + 0x6d2b79f5) | 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      out[i] = center + halfWidth * ((2 * ((t ^ (t >>> 14)) >>> 0)) / 4294967296 - 1);
    }
    this.a = a;
  }
}

/**
 * Fills `out` with the next values of the tensor's stream.
 * - normal(0, std) by Box-Muller for the lm_head (also when tied to the embeddings) and the router: there the extremes
 *   matter (the top of 151936 logits, the top-k of the experts), and Gaussian tails spread them out
 *   where a bounded distribution would crowd them together.
 * - uniform with the same std (a uniform on [-a, a] has std a/sqrt(3)) for the projections: the shape
 *   is irrelevant there and it is twice as fast, which matters for multi-GB models.
 * - 1 ± NORM_SPREAD, uniform, for RMSNorm weights.
 */
function fill(out: Float32Array, init: Init, rand: RandomStream): void {
  if (init.kind === 'norm') {
    rand.fillUniform(out, 1, NORM_SPREAD);
  } else if (init.kind === 'uniform') {
    rand.fillUniform(out, 0, init.std * Math.sqrt(3));
  } else {
    const std = init.std;
    for (let i = 0; i < out.length; i += 2) {
      const r = std * Math.sqrt(-2 * Math.log(1 - rand.next()));
      const th = 2 * Math.PI * rand.next();
      out[i] = r * Math.cos(th);
      if (i + 1 < out.length) out[i + 1] = r * Math.sin(th);
    }
  }
}

export function tensorRandom(seed: number, name: string): RandomStream {
  return new RandomStream(fnv1a(name) ^ Math.imul(seed >>> 0, 0x9e3779b1));
}

/** The full f32 values of one planned tensor (before dtype rounding); for tests and small tensors. */
export function generateTensorF32(seed: number, t: PlannedTensor): Float32Array {
  const out = new Float32Array(numElements(t.shape));
  fill(out, t.init, tensorRandom(seed, t.name));
  return out;
}

// ---- sharding ----

export function shardFileName(i: number, n: number): string {
  return n === 1 ? 'model.safetensors' : `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;
}

/** Splits tensors, in order, into `n` non-empty groups of roughly equal bytes. */
export function splitIntoShards<T extends TensorSpec>(tensors: readonly T[], n: number): T[][] {
  if (n > tensors.length) throw new Error(`make-model: ${n} shards requested but the model has only ${tensors.length} tensors`);
  const total = tensors.reduce((a, t) => a + tensorByteLength(t), 0);
  const groups: T[][] = [];
  let i = 0;
  let cum = 0;
  for (let s = 0; s < n; s++) {
    const group: T[] = [];
    const last = s === n - 1;
    const target = (total * (s + 1)) / n;
    const mustLeave = n - s - 1;
    do {
      cum += tensorByteLength(tensors[i]!);
      group.push(tensors[i++]!);
    } while (i < tensors.length - mustLeave && (last || cum + tensorByteLength(tensors[i]!) / 2 <= target));
    groups.push(group);
  }
  return groups;
}

const CHUNK_ELEMENTS = 1 << 20;

async function removeStaleWeights(outDir: string): Promise<void> {
  for (const f of await fs.readdir(outDir)) {
    if (f === 'model.safetensors' || f === 'model.safetensors.index.json' || /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)) {
      await fs.rm(path.join(outDir, f));
    }
  }
}

export async function makeModel(outDir: string, opts: MakeModelOptions = {}): Promise<void> {
  if (os.endianness() !== 'LE') throw new Error('make-model: a little-endian machine is required');
  const o = resolveMakeModelOptions(opts);
  const tensors = planTensors(o);
  const shards = splitIntoShards(tensors, o.shards);
  await fs.mkdir(outDir, { recursive: true });
  await removeStaleWeights(outDir);

  const totalBytes = tensors.reduce((a, t) => a + tensorByteLength(t), 0);
  let doneBytes = 0;
  const chunk = new Float32Array(CHUNK_ELEMENTS);
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shards.length; s++) {
    const file = shardFileName(s, shards.length);
    const writer = await SafetensorsWriter.create(path.join(outDir, file), shards[s]!, { format: 'pt' });
    try {
      for (const t of shards[s]!) {
        weightMap[t.name] = file;
        const rand = tensorRandom(o.seed, t.name);
        const n = numElements(t.shape);
        for (let off = 0; off < n; off += CHUNK_ELEMENTS) {
          const part = chunk.subarray(0, Math.min(CHUNK_ELEMENTS, n - off));
          fill(part, t.init, rand);
          const bytes = encodeF32(part, t.dtype);
          await writer.write(t.name, bytes);
          doneBytes += bytes.length;
          o.onProgress?.(doneBytes, totalBytes);
        }
      }
      await writer.close();
    } catch (e) {
      await writer.abort();
      throw e;
    }
  }
  if (shards.length > 1) {
    const index = { metadata: { total_size: totalBytes }, weight_map: weightMap };
    await fs.writeFile(path.join(outDir, 'model.safetensors.index.json'), JSON.stringify(index, null, 2) + '\n');
  }
  await fs.writeFile(path.join(outDir, 'config.json'), JSON.stringify(buildConfigJson(o), null, 2) + '\n');
  await fs.writeFile(path.join(outDir, 'generation_config.json'), JSON.stringify(GENERATION_CONFIG, null, 2) + '\n');
  await copyQwen3TokenizerFiles(outDir);
}
