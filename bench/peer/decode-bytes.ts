// Bytes of weights one decoded token must read (each weight it uses, once): the figure that, divided by
// the time per token, says how close decode comes to the memory bandwidth.
import type { MakeModelOptions } from '../../src/model/make-model.ts';

/** The checkpoint dimensions that decide it: the generator's own options (src/model/make-model.ts), all given. */
export type DecodeShape = Required<
  Pick<MakeModelOptions, 'layers' | 'hidden' | 'heads' | 'kvHeads' | 'headDim' | 'vocab' | 'experts' | 'topK' | 'moeIntermediate'>
>;

export interface DecodeBytes {
  /** q, k, v, o projections of every layer. */
  attention: number;
  /** topK experts × (gate + up + down) of every layer. */
  experts: number;
  /** The router (experts × hidden) of every layer. */
  router: number;
  /** input/post-attention RMSNorm, q/k norms of every layer, the final norm. */
  norms: number;
  lmHead: number;
  /** One row of the embedding table. */
  embeddingRow: number;
  total: number;
}

/** Bytes of a bf16 row of `cols` weights, as the checkpoint and the GGUF store it. */
export const bf16RowBytes = (cols: number): number => 2 * cols;

/**
 * Bytes of a row as moeserve reads it when it coded the bf16 weights at load (native/core/coded-bf16.h): a
 * 16-byte table, one low byte and half a code byte per weight, padded to 64; rows under 256 or not a
 * multiple of 128 wide stay bf16.
 */
export const codedRowBytes = (cols: number): number => {
  const coded = Math.ceil((16 + cols + cols / 2) / 64) * 64;
  return cols % 128 === 0 && coded < 2 * cols ? coded : 2 * cols;
};

/**
 * `rowBytes`: bytes of one row of the projections, experts and lm_head (by its width); the embedding row is
 * bf16 either way. `smallBytes`: per element of the norms and the router (2 in the bf16 checkpoint moeserve
 * reads; 4 in the GGUF, where llama.cpp's converter keeps them F32). Every layer is taken to be a MoE layer.
 */
export function decodeBytesPerToken(s: DecodeShape, rowBytes: (cols: number) => number = bf16RowBytes, smallBytes = 2): DecodeBytes {
  const q = s.heads * s.headDim;
  const kv = s.kvHeads * s.headDim;
  // q, k, v read hidden-wide rows (q + 2·kv of them); o reads q-wide rows (hidden of them).
  const attention = s.layers * ((q + 2 * kv) * rowBytes(s.hidden) + s.hidden * rowBytes(q));
  const experts = s.layers * s.topK * (2 * s.moeIntermediate * rowBytes(s.hidden) + s.hidden * rowBytes(s.moeIntermediate));
  const router = s.layers * s.experts * s.hidden * smallBytes;
  const norms = (s.layers * (2 * s.hidden + 2 * s.headDim) + s.hidden) * smallBytes;
  const lmHead = s.vocab * rowBytes(s.hidden);
  const embeddingRow = bf16RowBytes(s.hidden);
  return { attention, experts, router, norms, lmHead, embeddingRow, total: attention + experts + router + norms + lmHead + embeddingRow };
}
