// The micro-benchmark's cases (steps fed to the addon) and the formulas that turn their per-phase times
// (MOESERVE_PROFILE) into GB/s and GFLOP/s. Every case runs on the slice checkpoint (the real layer
// shapes), so each kernel family sees the shapes it sees in production.
import type { SeqSlice } from '../../tests/helpers/native-steps.ts';
import { promptTokens } from './workload.ts';
import { bf16RowBytes, decodeBytesPerToken, type DecodeShape } from './decode-bytes.ts';

/** The model shape a case runs on (the same fields the decode-bytes count uses). */
export type Shape = DecodeShape;

/** Per-phase step times as MOESERVE_PROFILE prints them (ms, summed over layers). */
export interface Phases {
  qkv: number;
  attn: number;
  out: number;
  ffn: number;
  logits: number;
}

export interface MicroCase {
  id: string;
  repeats: number;
  warmups: number;
  /** The step of repetition `rep` (tokens vary between repetitions so routing varies). */
  batch(rep: number): SeqSlice[];
}

export interface Figure {
  family: 'GEMV bf16' | 'GEMV bf16 coded' | 'GEMM bf16' | 'GEMM bf16 coded' | 'MoE grouped' | 'paged attention';
  what: string;
  /** The phase time the figure divides by (median over repetitions), ms. */
  ms: number;
  gbPerS?: number;
  gflopPerS?: number;
  /** gbPerS ÷ the measured memory read bandwidth. */
  ofBandwidth?: number;
  formula: string;
}

export const BLOCK = 16;
export const LONG_CONTEXTS = [1024, 4096, 16384];
export const CHUNK = 64;
export const MOE_TOKENS = [1, 2, 4, 8, 16, 32, 64];
export const PREFILL = 512;

/** Blocks: the long sequence first (its context + a chunk), then one block per single-token sequence. */
const LONG_BLOCKS = Math.ceil((Math.max(...LONG_CONTEXTS) + CHUNK + 1) / BLOCK);
export const KV_BLOCKS = LONG_BLOCKS + Math.max(...MOE_TOKENS) + 8;
const longTable = Array.from({ length: LONG_BLOCKS }, (_, i) => i);

const tokens = (key: number, n: number) => promptTokens(900_000 + key, n);

export function microCases(): MicroCase[] {
  const cases: MicroCase[] = [
    // One decode token at a short context, sampled: the projections and the lm_head are GEMVs.
    { id: 'decode', repeats: 20, warmups: 3, batch: (r) => [{ tokens: tokens(r, 1), start: 16, blocks: longTable, sample: true }] },
    // One 512-token prompt: the projections are GEMMs, the MoE sees every expert.
    { id: 'prefill', repeats: 3, warmups: 1, batch: (r) => [{ tokens: tokens(100 + r, PREFILL), start: 0, blocks: longTable }] },
  ];
  for (const n of MOE_TOKENS) {
    cases.push({
      id: `moe-${n}`, repeats: n <= 16 ? 10 : 5, warmups: 2,
      // n sequences of one token each (a decode step of n streams).
      batch: (r) => Array.from({ length: n }, (_, i) => ({ tokens: tokens(1000 * n + 100 * r + i, 1), start: 0, blocks: [LONG_BLOCKS + i] })),
    });
  }
  for (const L of [16, ...LONG_CONTEXTS]) {
    // The KV of positions < L is the pool's zero-initialised memory: its values do not change the work.
    cases.push({ id: `attn-decode-${L}`, repeats: 10, warmups: 2, batch: (r) => [{ tokens: tokens(5000 + r, 1), start: L, blocks: longTable }] });
  }
  const L = Math.max(...LONG_CONTEXTS);
  cases.push({ id: `attn-chunk-${L}`, repeats: 3, warmups: 1, batch: (r) => [{ tokens: tokens(6000 + r, CHUNK), start: L, blocks: longTable }] });
  return cases;
}

/** Expected distinct experts per layer when n tokens each pick topK of E uniformly (random weights route about uniformly). */
export function expectedDistinctExperts(n: number, experts: number, topK: number): number {
  return experts * (1 - Math.pow(1 - topK / experts, n));
}

/** Σ over a chunk of the context each query attends to (positions start..start+n-1 see start+i+1 keys). */
const keysAttended = (start: number, n: number) => n * (start + 1) + (n * (n - 1)) / 2;

/**
 * `rowBytes`: bytes the model reads per weight row of a given width (bf16RowBytes, or codedRowBytes where it
 * coded its bf16 weights at load: then the GB/s figures count the coded bytes actually read).
 */
export function figures(s: Shape, p: Map<string, Phases>, bandwidthGbPerS: number, rowBytes: (cols: number) => number = bf16RowBytes): Figure[] {
  const q = s.heads * s.headDim;
  const kv = s.kvHeads * s.headDim;
  const projParams = s.layers * (2 * q * s.hidden + 2 * kv * s.hidden);
  // Weight bytes as one decoded token reads them: the projections, one expert's three matrices, the lm_head.
  const read = decodeBytesPerToken(s, rowBytes);
  const expertBytes = read.experts / (s.layers * s.topK);
  const expertParams = 3 * s.moeIntermediate * s.hidden;
  const coded = rowBytes(s.hidden) !== bf16RowBytes(s.hidden);
  const gemv = coded ? 'GEMV bf16 coded' : 'GEMV bf16';
  const unit = coded ? 'coded row bytes (16 + 1.5 per weight, padded to 64)' : '2 B per weight';
  const out: Figure[] = [];
  const gb = (bytes: number, ms: number) => bytes / ms / 1e6;
  const gf = (flops: number, ms: number) => flops / ms / 1e6;
  const add = (f: Omit<Figure, 'ofBandwidth'>) => out.push(f.gbPerS === undefined ? f : { ...f, ofBandwidth: f.gbPerS / bandwidthGbPerS });

  const dec = p.get('decode');
  if (dec) {
    const ms = dec.qkv + dec.out;
    add({ family: gemv, what: `q/k/v/o projections, 1 token (${s.layers} layers)`, ms, gbPerS: gb(read.attention, ms),
      formula: `bytes = layers × (2·q_dim + 2·kv_dim) × hidden weights, ${unit}; time = qkv + out phases (incl. RMSNorm, q/k norm, RoPE, residual add)` });
    add({ family: gemv, what: `lm_head ${s.vocab}×${s.hidden}, 1 token + greedy pick`, ms: dec.logits, gbPerS: gb(read.lmHead, dec.logits),
      formula: `bytes = vocab × hidden weights, ${unit}; time = logits phase (final norm, lm_head, argmax over the vocabulary)` });
  }
  const pre = p.get('prefill');
  if (pre) {
    const ms = pre.qkv + pre.out;
    add({ family: coded ? 'GEMM bf16 coded' : 'GEMM bf16', what: `q/k/v/o projections, ${PREFILL} tokens`, ms, gflopPerS: gf(2 * PREFILL * projParams, ms),
      formula: 'FLOP = 2 × tokens × layers × (2·q_dim + 2·kv_dim) × hidden; time = qkv + out phases' });
    add({ family: 'MoE grouped', what: `${PREFILL} tokens (every expert busy)`, ms: pre.ffn,
      gflopPerS: gf(2 * PREFILL * s.layers * (s.topK * expertParams + s.experts * s.hidden), pre.ffn),
      formula: 'FLOP = 2 × tokens × layers × (top_k × 3 × moe_intermediate × hidden + experts × hidden [router]); time = ffn phase' });
    add({ family: 'paged attention', what: `causal prefill, ${PREFILL} tokens`, ms: pre.attn,
      gflopPerS: gf(4 * s.layers * s.heads * s.headDim * keysAttended(0, PREFILL), pre.attn),
      formula: 'FLOP = 4 × layers × heads × head_dim × Σ keys attended (QKᵀ and PV, 2 FLOP per multiply-add); time = attn phase' });
  }
  const moe1 = p.get('moe-1');
  for (const n of MOE_TOKENS) {
    const m = p.get(`moe-${n}`);
    if (!m) continue;
    const distinct = expectedDistinctExperts(n, s.experts, s.topK);
    const bytes = s.layers * (distinct * expertBytes + s.experts * s.hidden * 2);
    const speedup = moe1 ? (n * moe1.ffn) / m.ffn : NaN;
    add({ family: 'MoE grouped', what: `${n} token${n > 1 ? 's' : ''} (${n} stream${n > 1 ? 's' : ''}): ~${distinct.toFixed(1)} distinct experts/layer, ` +
      `${(m.ffn / n).toFixed(2)} ms/token, ${speedup.toFixed(2)}× vs ${n} × 1 token`,
    ms: m.ffn, gbPerS: gb(bytes, m.ffn), gflopPerS: gf(2 * n * s.layers * (s.topK * expertParams + s.experts * s.hidden), m.ffn),
    formula: `bytes = layers × (E[distinct] × 3 × moe_intermediate × hidden weights (${unit}) + experts × hidden × 2 B [router]), E[distinct] = experts × (1 − (1 − top_k/experts)^tokens) ` +
      '(uniform routing assumed; an estimate); time = ffn phase' });
  }
  const base = p.get('attn-decode-16');
  for (const L of LONG_CONTEXTS) {
    const a = p.get(`attn-decode-${L}`);
    if (!a) continue;
    const bytes = s.layers * (L + 1) * kv * 2 * 4;
    add({ family: 'paged attention', what: `decode, 1 token at context ${L}${base ? ` (context 16: ${base.attn.toFixed(2)} ms)` : ''}`, ms: a.attn, gbPerS: gb(bytes, a.attn),
      formula: 'bytes = layers × context × kv_dim × 2 (K, V) × 4 B (f32 KV cache); time = attn phase' });
  }
  const L = Math.max(...LONG_CONTEXTS);
  const chunk = p.get(`attn-chunk-${L}`);
  if (chunk) {
    const flops = 4 * s.layers * s.heads * s.headDim * keysAttended(L, CHUNK);
    add({ family: 'paged attention', what: `chunk of ${CHUNK} tokens at context ${L}`, ms: chunk.attn, gflopPerS: gf(flops, chunk.attn),
      formula: 'FLOP = 4 × layers × heads × head_dim × Σ keys attended (QKᵀ and PV, 2 FLOP per multiply-add); time = attn phase' });
  }
  return out;
}
