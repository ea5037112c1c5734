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

/**
 * `matrixBytes`: bytes per element of the projections, experts, lm_head and embedding (2 for bf16);
 * `smallBytes`: of the norms and the router (2 in the bf16 checkpoint moeserve reads; 4 in the GGUF,
 * where llama.cpp's converter keeps them F32). Every layer is taken to be a MoE layer.
 */
export function decodeBytesPerToken(s: DecodeShape, matrixBytes = 2, smallBytes = 2): DecodeBytes {
  const q = s.heads * s.headDim;
  const kv = s.kvHeads * s.headDim;
  const attention = s.layers * (2 * q * s.hidden + 2 * kv * s.hidden) * matrixBytes;
  const experts = s.layers * s.topK * 3 * s.moeIntermediate * s.hidden * matrixBytes;
  const router = s.layers * s.experts * s.hidden * smallBytes;
  const norms = (s.layers * (2 * s.hidden + 2 * s.headDim) + s.hidden) * smallBytes;
  const lmHead = s.vocab * s.hidden * matrixBytes;
  const embeddingRow = s.hidden * matrixBytes;
  return { attention, experts, router, norms, lmHead, embeddingRow, total: attention + experts + router + norms + lmHead + embeddingRow };
}
