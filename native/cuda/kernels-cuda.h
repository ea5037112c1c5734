// Launchers of the CUDA backend's kernels, one family per .cu file. Every pointer is device memory; every launch
// goes on the given stream and is checked (cuda_check_launch) with the op's name. Each output row is computed by
// the same instructions in the same order whatever the other rows of the step are (no float atomics, no
// reduction split that depends on the row count), so a token's results do not depend on its batch.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace moe {

using bf16 = __nv_bfloat16;

// ---- dummy-cuda.cu ----
// dst[i] = dummy_bf16(id, i0 + i, scale) for i < n (core/dummy-weights.h; bit-identical to the host's).
void launch_fill_dummy(uint16_t* dst, size_t n, uint32_t id, uint64_t i0, float scale, cudaStream_t s);

// ---- embed-cuda.cu ----
// out[t × ldo + c] = table[tokens[t] × cols + c] for t < T, c < cols.
void launch_embed(const bf16* table, int64_t cols, const int32_t* tokens, int T, float* out, int64_t ldo, cudaStream_t s);

// ---- norm-cuda.cu ----
// out row r = x row (row_map ? row_map[r] : r) / sqrt(mean(x²) + eps) · w; in place allowed (out == x).
void launch_rmsnorm(const float* x, int64_t ldx, const int32_t* row_map, const float* w, int rows, int dim, float eps,
                    float* out, int64_t ldo, cudaStream_t s);
// x += y, then out = rmsnorm(x) · w, row by row in one kernel.
void launch_add_rmsnorm(float* x, int64_t ldx, const float* y, int64_t ldy, const float* w, int rows, int dim, float eps,
                        float* out, int64_t ldo, cudaStream_t s);
// x[r × ldx + c] += y[r × ldy + c] for r < rows, c < cols.
void launch_add(float* x, int64_t ldx, const float* y, int64_t ldy, int rows, int64_t cols, cudaStream_t s);

// ---- rope-cuda.cu ----
// table[t × hd + j] = cos(pos·f_j)·factor, table[t × hd + hd/2 + j] = sin(pos·f_j)·factor (angle in double).
void launch_rope_table(const int32_t* positions, int T, const float* inv_freq, int head_dim, float factor, float* table,
                       cudaStream_t s);
// Per head of q (heads) and k (kv_heads): RMSNorm with qw / kw (head_dim), then NeoX rotation by the table.
void launch_qk_norm_rope(float* q, int64_t ldq, float* k, int64_t ldk, int T, int heads, int kv_heads, int head_dim,
                         const float* qw, const float* kw, float eps, const float* table, cudaStream_t s);

// ---- attention-cuda.cu ----
struct AttnArgs {
  const float* q;
  int64_t ldq;
  float* out;
  int64_t ldo;
  const bf16* k_cache;  // [slots × kv_dim]
  const bf16* v_cache;
  int T, heads, kv_heads, head_dim;
  const int32_t* positions;
  const int32_t* seq_of_token;
  const int32_t* block_tables;  // [S × table_width]
  int table_width, block_size;
};
// cache[slot_of_token[t]] = bf16(k row t), same for v.
void launch_kv_write(const float* k, int64_t ldk, const float* v, int64_t ldv, int T, int kv_dim, const int64_t* slot_of_token,
                     bf16* k_cache, bf16* v_cache, cudaStream_t s);
// Causal paged GQA attention, fp32 online softmax, scale 1/sqrt(head_dim).
void launch_attention(const AttnArgs& a, cudaStream_t s);

// ---- gemm-cuda.cu ----
// C = A · Bᵀ on bf16 tensor cores (fp32 accumulate): A fp32 [rows × K] rounded to bf16 as it is loaded, B bf16
// [N × K] row-major (a checkpoint matrix), C fp32. Rows are either the dense range [0, M) or, for grouped
// (MoE) GEMMs, the device tile list tiles[i] = {expert, row0, row1, 0} for i < *num_tiles, each of at most
// kGemmTileRows rows of one expert (B advanced by expert × b_expert_stride).
constexpr int kGemmTileRows = 64;
struct GemmArgs {
  const float* A = nullptr;
  int64_t lda = 0;
  const int32_t* a_row_map = nullptr;  // row r of the GEMM reads A row a_row_map[r] (null: row r)
  const bf16* B0 = nullptr;
  const bf16* B1 = nullptr;  // non-null: C = silu(A·B0ᵀ) · (A·B1ᵀ) (gate and up of an MLP)
  // A as a hi + lo pair of bf16 (two MMAs per step): ~16 mantissa bits of the fp32 activations instead of 8, so
  // that logprobs track the CPU's fp32 math (the weights are bf16 exactly) as the CPU's avx512bf16 GEMM does.
  // gemm_args sets it for every GEMM (correct first); plain bf16 activations are the speed work's choice to make
  // once their end-to-end logprob gap is measured on a GPU.
  bool split_a = true;
  int64_t b_expert_stride = 0;
  int M = 0, N = 0, K = 0;
  const int4* tiles = nullptr;  // grouped: the tile list, and its length on the device
  const int32_t* num_tiles = nullptr;
  int max_tiles = 0;  // grid bound for the grouped form
  // Output columns [0, n1) go to C0, [n1, n2) to C1 (column − n1), [n2, N) to C2 (column − n2).
  float* C0 = nullptr;
  int64_t ldc0 = 0;
  float* C1 = nullptr;
  int64_t ldc1 = 0;
  float* C2 = nullptr;
  int64_t ldc2 = 0;
  int n1 = 0, n2 = 0;
};
void launch_gemm(const GemmArgs& g, const char* op, cudaStream_t s);
// A single-output GemmArgs (C columns [0, N)).
inline GemmArgs gemm_args(const float* A, int64_t lda, const bf16* B, int M, int N, int K, float* C, int64_t ldc) {
  GemmArgs g;
  g.A = A;
  g.lda = lda;
  g.B0 = B;
  g.M = M;
  g.N = N;
  g.K = K;
  g.C0 = C;
  g.ldc0 = ldc;
  g.n1 = g.n2 = N;
  return g;
}

// ---- moe-cuda.cu ----
// logits[t × E + e] = Σ_k h[t × ldh + k] · router[e × H + k] in fp32 (the routing decision wants fp32 inputs).
void launch_router(const float* h, int64_t ldh, const bf16* router, int T, int E, int H, float* logits, cudaStream_t s);
// Per token: softmax over E (fp32) in place, top-k (ties to the lower index), renormalised when norm_topk.
void launch_topk(float* probs, int T, int E, int K, bool norm_topk, int32_t* choice, float* weight, cudaStream_t s);
// Groups the T × K assignments by expert in (token, slot) order: row_of[i] is assignment i's row of the
// grouped matrices, src_row[row] its token; writes the tile list of kGemmTileRows-row tiles (≤ NK/64 + E).
void launch_moe_sort(const int32_t* choice, int NK, int K, int E, int32_t* row_of, int32_t* src_row, int4* tiles,
                     int32_t* num_tiles, cudaStream_t s);
// out[t × ldo + c] = Σ_{j<K} weight[t·K + j] · down[row_of[t·K + j] × H + c], j in order.
void launch_moe_combine(const float* down, int H, const int32_t* row_of, const float* weight, int T, int K, float* out,
                        int64_t ldo, cudaStream_t s);

}  // namespace moe
