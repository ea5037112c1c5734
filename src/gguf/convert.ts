// Converts a Qwen3MoeForCausalLM checkpoint (HF layout, safetensors) into a GGUF for llama.cpp's
// `qwen3moe` architecture, with llama.cpp's tensor names and metadata keys, the way
// convert_hf_to_gguf.py (Qwen3MoeModel → Qwen2MoeModel → TextModel) writes them. It is the bridge to
// the external reference (llama.cpp through node-llama-cpp), so it parses the checkpoint on its own
// instead of sharing the engine's config code.
//
// Dense layers: llama.cpp's qwen3moe (src/models/qwen3moe.cpp) builds every layer as a MoE block and
// requires ffn_gate_inp and the *_exps tensors in each; no converter or loader in llama.cpp reads
// mlp_only_layers or decoder_sparse_step. A dense SwiGLU MLP is written as an exactly equivalent MoE
// block instead: every expert is a copy of the MLP and the router is zero. With norm_topk_prob the k
// selected weights are renormalised to sum to 1, so the block computes Σ w_e·MLP(h) = MLP(h) whichever
// experts are picked. The expert width is one number per model in qwen3moe (n_ff_exp() of layer 0 sizes
// every layer's tensors), so layers narrower than the widest are zero-padded: padded gate/up rows give
// silu(0)·0 = 0 and padded down columns add nothing.
import fs from 'node:fs';
import path from 'node:path';
import { encodeF32 } from '../model/safetensors-writer.ts';
import { GGUFValueType, GgufWriter, type GGMLTypeName } from './gguf-writer.ts';
import { readCheckpointTensors, readTensorF32, type StTensor } from './safetensors-reader.ts';
import { addVocabMetadata, readGgufVocab } from './tokenizer-metadata.ts';

export interface ConvertOptions {
  /** 'f32': every tensor F32. 'bf16': matrices BF16; norms and the router F32 (as llama.cpp's converter). */
  weightType?: 'f32' | 'bf16';
  /** general.name; default: the model directory's base name. */
  name?: string;
}

const ARCH = 'qwen3moe';
/** gguf-py LlamaFileType. */
const FILE_TYPE = { f32: 0, bf16: 32 } as const;
const GGML_QUANT_VERSION = 2;
const CHUNK_ELEMENTS = 1 << 20;

interface HParams {
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  experts: number;
  topK: number;
  moeIntermediate: number;
  intermediate: number;
  normTopkProb: boolean;
  moeLayers: boolean[];
  tied: boolean;
  raw: Record<string, unknown>;
}

function readHParams(modelDir: string): HParams {
  const file = path.join(modelDir, 'config.json');
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`cannot read ${file}: ${(e as Error).message}`);
  }
  const archs = raw.architectures;
  if (!Array.isArray(archs) || !archs.includes('Qwen3MoeForCausalLM')) {
    throw new Error(`${file}: architectures ${JSON.stringify(archs)} is not Qwen3MoeForCausalLM`);
  }
  const int = (k: string, fallback?: number): number => {
    const v = raw[k] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new Error(`${file}: "${k}" must be a non-negative integer`);
    return v;
  };
  const heads = int('num_attention_heads');
  const hidden = int('hidden_size');
  const layers = int('num_hidden_layers');
  const experts = int('num_experts', 0);
  const step = int('decoder_sparse_step', 1);
  const mlpOnly = Array.isArray(raw.mlp_only_layers) ? (raw.mlp_only_layers as number[]) : [];
  return {
    layers,
    hidden,
    heads,
    kvHeads: int('num_key_value_heads', heads),
    headDim: int('head_dim', Math.floor(hidden / heads)),
    vocab: int('vocab_size'),
    experts,
    topK: int('num_experts_per_tok', 0),
    moeIntermediate: int('moe_intermediate_size', 0),
    intermediate: int('intermediate_size', 0),
    normTopkProb: raw.norm_topk_prob === true,
    // transformers' Qwen3MoeDecoderLayer
    moeLayers: Array.from({ length: layers }, (_, i) => !mlpOnly.includes(i) && experts > 0 && (i + 1) % step === 0),
    tied: raw.tie_word_embeddings === true,
    raw,
  };
}

function addRopeScaling(w: GgufWriter, raw: Record<string, unknown>, file: string): void {
  const rs = raw.rope_scaling as Record<string, unknown> | null | undefined;
  if (!rs) return;
  const type = (rs.rope_type ?? rs.type) as string | undefined;
  if (type === undefined || type === 'default') return;
  const factor = rs.factor;
  if (typeof factor !== 'number') throw new Error(`${file}: rope_scaling.factor must be a number`);
  if (type === 'linear') {
    w.addString(`${ARCH}.rope.scaling.type`, 'linear');
    w.addFloat32(`${ARCH}.rope.scaling.factor`, factor);
    return;
  }
  if (type !== 'yarn') throw new Error(`${file}: rope_scaling type ${type} cannot be expressed for llama.cpp's ${ARCH}`);
  // llama.cpp's qwen3moe reads only type, factor and original context length: beta_fast/slow stay at
  // ggml's 32/1 and the attention factor is always 0.1·ln(factor)+1 (llama-context.cpp). Anything else
  // would silently differ from transformers, so it is refused.
  const fixed: Record<string, unknown> = { beta_fast: 32, beta_slow: 1, truncate: true };
  for (const [k, want] of Object.entries(fixed)) {
    if (rs[k] !== undefined && rs[k] !== want) throw new Error(`${file}: rope_scaling.${k} = ${String(rs[k])} is not supported by llama.cpp's ${ARCH} (only ${String(want)})`);
  }
  for (const k of ['attention_factor', 'mscale', 'mscale_all_dim']) {
    if (rs[k] !== undefined) throw new Error(`${file}: rope_scaling.${k} is not supported by llama.cpp's ${ARCH}`);
  }
  const orig = rs.original_max_position_embeddings ?? raw.max_position_embeddings;
  w.addString(`${ARCH}.rope.scaling.type`, 'yarn');
  w.addFloat32(`${ARCH}.rope.scaling.factor`, factor);
  w.addUint32(`${ARCH}.rope.scaling.original_context_length`, Number(orig));
}

/** Row-major [rows, cols] source → [outRows, outCols] (zero-padded) in the target type, in chunks. */
function* matrixChunks(t: StTensor | null, rows: number, cols: number, outRows: number, outCols: number, type: GGMLTypeName): Generator<Uint8Array> {
  const dtype = type === 'F32' ? 'F32' : 'BF16';
  const rowsPerChunk = Math.max(1, Math.floor(CHUNK_ELEMENTS / outCols));
  for (let r = 0; r < outRows; r += rowsPerChunk) {
    const n = Math.min(rowsPerChunk, outRows - r);
    const out = new Float32Array(n * outCols);
    const real = t ? Math.max(0, Math.min(n, rows - r)) : 0;
    if (real > 0) {
      const src = readTensorF32(t!, r * cols, real * cols);
      if (cols === outCols) out.set(src);
      else for (let i = 0; i < real; i++) out.set(src.subarray(i * cols, (i + 1) * cols), i * outCols);
    }
    yield encodeF32(out, dtype);
  }
}

export async function convertToGguf(modelDir: string, outPath: string, opts: ConvertOptions = {}): Promise<void> {
  const weightType = opts.weightType ?? 'f32';
  const cfgFile = path.join(modelDir, 'config.json');
  const hp = readHParams(modelDir);
  const { hidden: H, headDim: hd, vocab: V } = hp;
  const anyDense = hp.moeLayers.some((m) => !m);
  const nExpert = hp.experts > 0 ? hp.experts : 1;
  const nUsed = hp.experts > 0 ? hp.topK : 1;
  // qwen3moe hard-codes the renormalisation (build_moe_ffn(..., norm_w = true)); it is a no-op only when
  // all experts are used.
  if (!hp.normTopkProb && nUsed < nExpert) {
    throw new Error(`${cfgFile}: norm_topk_prob=false cannot be expressed in llama.cpp's ${ARCH}, which always renormalises the top-k weights`);
  }
  const F = Math.max(hp.moeLayers.some((m) => m) ? hp.moeIntermediate : 0, anyDense ? hp.intermediate : 0);
  const tensors = readCheckpointTensors(modelDir);
  const get = (name: string, shape: number[]): StTensor => {
    const t = tensors.get(name);
    if (!t) throw new Error(`${modelDir}: tensor ${name} is missing`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new Error(`${t.file}: tensor ${name} has shape ${JSON.stringify(t.shape)}, expected ${JSON.stringify(shape)}`);
    }
    return t;
  };

  const w = new GgufWriter();
  w.addString('general.architecture', ARCH);
  w.addString('general.type', 'model');
  w.addString('general.name', opts.name ?? path.basename(path.resolve(modelDir)));
  w.addUint32(`${ARCH}.block_count`, hp.layers);
  w.addUint32(`${ARCH}.context_length`, Number(hp.raw.max_position_embeddings ?? 32768));
  w.addUint32(`${ARCH}.embedding_length`, H);
  w.addUint32(`${ARCH}.feed_forward_length`, hp.intermediate);
  w.addUint32(`${ARCH}.attention.head_count`, hp.heads);
  w.addUint32(`${ARCH}.attention.head_count_kv`, hp.kvHeads);
  addRopeScaling(w, hp.raw, cfgFile);
  w.addFloat32(`${ARCH}.rope.freq_base`, Number(hp.raw.rope_theta ?? 10000));
  w.addFloat32(`${ARCH}.attention.layer_norm_rms_epsilon`, Number(hp.raw.rms_norm_eps ?? 1e-6));
  w.addUint32(`${ARCH}.expert_count`, nExpert);
  w.addUint32(`${ARCH}.expert_used_count`, nUsed);
  w.addUint32(`${ARCH}.attention.key_length`, hd);
  w.addUint32(`${ARCH}.attention.value_length`, hd);
  w.addUint32('general.file_type', FILE_TYPE[weightType]);
  w.addUint32(`${ARCH}.expert_feed_forward_length`, F);
  w.addUint32('general.quantization_version', GGML_QUANT_VERSION);

  const big: GGMLTypeName = weightType === 'f32' ? 'F32' : 'BF16';
  /** A HF [rows, cols] matrix as a ggml tensor with ne = [cols, rows]. */
  const matrix = (gguf: string, hf: string, rows: number, cols: number, type: GGMLTypeName) => {
    const t = get(hf, [rows, cols]);
    w.addTensor({ name: gguf, ne: [cols, rows], type }, () => matrixChunks(t, rows, cols, rows, cols, type));
  };
  const vector = (gguf: string, hf: string, n: number) => {
    const t = get(hf, [n]);
    w.addTensor({ name: gguf, ne: [n], type: 'F32' }, () => matrixChunks(t, 1, n, 1, n, 'F32'));
  };

  matrix('token_embd.weight', 'model.embed_tokens.weight', V, H, big);
  for (let l = 0; l < hp.layers; l++) {
    const p = `model.layers.${l}`;
    const b = `blk.${l}`;
    vector(`${b}.attn_norm.weight`, `${p}.input_layernorm.weight`, H);
    // No Q/K permutation: qwen3moe uses NeoX rope, the HF layout as is (only LlamaModel permutes).
    matrix(`${b}.attn_q.weight`, `${p}.self_attn.q_proj.weight`, hp.heads * hd, H, big);
    matrix(`${b}.attn_k.weight`, `${p}.self_attn.k_proj.weight`, hp.kvHeads * hd, H, big);
    matrix(`${b}.attn_v.weight`, `${p}.self_attn.v_proj.weight`, hp.kvHeads * hd, H, big);
    matrix(`${b}.attn_output.weight`, `${p}.self_attn.o_proj.weight`, H, hp.heads * hd, big);
    vector(`${b}.attn_q_norm.weight`, `${p}.self_attn.q_norm.weight`, hd);
    vector(`${b}.attn_k_norm.weight`, `${p}.self_attn.k_norm.weight`, hd);
    vector(`${b}.ffn_norm.weight`, `${p}.post_attention_layernorm.weight`, H);

    let gate: StTensor[], up: StTensor[], down: StTensor[], width: number;
    if (hp.moeLayers[l]) {
      const router = get(`${p}.mlp.gate.weight`, [hp.experts, H]);
      w.addTensor({ name: `${b}.ffn_gate_inp.weight`, ne: [H, nExpert], type: 'F32' }, () => matrixChunks(router, nExpert, H, nExpert, H, 'F32'));
      width = hp.moeIntermediate;
      const e = Array.from({ length: nExpert }, (_, i) => `${p}.mlp.experts.${i}`);
      gate = e.map((x) => get(`${x}.gate_proj.weight`, [width, H]));
      up = e.map((x) => get(`${x}.up_proj.weight`, [width, H]));
      down = e.map((x) => get(`${x}.down_proj.weight`, [H, width]));
    } else {
      w.addTensor({ name: `${b}.ffn_gate_inp.weight`, ne: [H, nExpert], type: 'F32' }, () => matrixChunks(null, 0, H, nExpert, H, 'F32'));
      width = hp.intermediate;
      const rep = <T>(x: T): T[] => new Array<T>(nExpert).fill(x);
      gate = rep(get(`${p}.mlp.gate_proj.weight`, [width, H]));
      up = rep(get(`${p}.mlp.up_proj.weight`, [width, H]));
      down = rep(get(`${p}.mlp.down_proj.weight`, [H, width]));
    }
    // Stacked experts: ne = [in, out, expert], i.e. the experts' [out, in] matrices back to back.
    const stacked = (name: string, parts: StTensor[], rows: number, cols: number, outRows: number, outCols: number) =>
      w.addTensor({ name, ne: [outCols, outRows, nExpert], type: big }, function* () {
        for (const t of parts) yield* matrixChunks(t, rows, cols, outRows, outCols, big);
      });
    stacked(`${b}.ffn_gate_exps.weight`, gate, width, H, F, H);
    stacked(`${b}.ffn_up_exps.weight`, up, width, H, F, H);
    stacked(`${b}.ffn_down_exps.weight`, down, H, width, H, F);
  }
  vector('output_norm.weight', 'model.norm.weight', H);
  // Tied embeddings: qwen3moe falls back to token_embd when `output` is absent.
  if (!hp.tied) matrix('output.weight', 'lm_head.weight', V, H, big);
  // Last, so that a bad checkpoint fails before the (slow) tokenizer is read. "qwen2" is the
  // pre-tokenizer llama.cpp's converter detects for the Qwen2/Qwen3 tokenizer.
  addVocabMetadata(w, readGgufVocab(modelDir, V), 'qwen2');

  await fs.promises.mkdir(path.dirname(path.resolve(outPath)), { recursive: true });
  await w.write(outPath);
}
