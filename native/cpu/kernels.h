// The CPU's innermost loops, one set per instruction-set level, chosen once at run time (cpu-features.cpp).
// Every set computes the same math in f32 (weights widened exactly from bf16/f16); only summation order differs,
// except in avx512bf16's twin with bf16_activations (--dtype bfloat16), which rounds its matmuls' x to bf16.
// Within a set, a matmul's out[t][r] is summed in one order whatever the number of tokens T and whichever path
// (row dots, GEMM) runs it, so that a token's results never depend on the other tokens of its step.
#pragma once
#include <cstdint>
#include <string>

#include "core/weights.h"

namespace moe {

struct KernelSet {
  const char* name;
  // out[t * ldo + (r - r0)] = dot(W row r, X row t) for r in [r0, r1), t in [0, T); X is T × W.cols, dense.
  // scratch holds at least rows_scratch_floats(W.cols) floats.
  void (*matmul_rows)(const Matrix& w, int64_t r0, int64_t r1, const float* x, int64_t T, float* out, int64_t ldo,
                      float* scratch);
  float (*dot)(const float* a, const float* b, int64_t n);
  // y += a * x
  void (*axpy)(float a, const float* x, float* y, int64_t n);
  // dst[i] = widen(src[i])
  void (*to_f32)(const void* src, DType dt, float* dst, int64_t n);
  // max over x (n >= 1)
  float (*max)(const float* x, int64_t n);
  // Σ exp((x[i] - shift) * scale), also stored to out[i] when out is not null; -inf inputs give exactly 0.
  float (*exp_sum)(const float* x, int64_t n, float shift, float scale, float* out);
  // Attention over n consecutive KV slots (rows `stride` floats apart) for a group of query heads sharing them:
  // scores[g * ld + j] = scale · dot(q + g·hd, k + j·stride)
  void (*attn_scores)(const float* q, int group, int hd, const float* k, int64_t stride, int64_t n, float scale,
                      float* scores, int64_t ld);
  // out[g·hd + i] += Σ_j p[g * ld + j] · v[j·stride + i]
  void (*attn_values)(const float* p, int group, int64_t ld, const float* v, int64_t stride, int64_t n, int hd,
                      float* out);
  // g[i] = silu(g[i]) · u[i]
  void (*silu_mul)(float* g, const float* u, int64_t n);
  // attn_scores and attn_values over a bf16 KV cache (rows `stride` elements apart): each element widened exactly
  // to f32, then the f32 kernels' math in their summation order, so that they give the bits attn_scores and
  // attn_values give on the rows widened first (attention-cpu.cpp takes either path, by the tile's size).
  void (*attn_scores_bf16)(const float* q, int group, int hd, const uint16_t* k, int64_t stride, int64_t n,
                           float scale, float* scores, int64_t ld);
  void (*attn_values_bf16)(const float* p, int group, int64_t ld, const uint16_t* v, int64_t stride, int64_t n,
                           int hd, float* out);
  // One block's step of the online softmax (attention-cpu.cpp) for `rows` independent rows r of n scores at
  // s + r·n (a masked key's score is -inf; each row has a finite one), running max m[r], sum l[r] and output
  // o + r·hd: mx = max(m[r], max s); c = exp(m[r] − mx); s ← exp(s − mx); l[r] = l[r]·c + Σ s; o_r *= c;
  // m[r] = mx. m[r] = -inf (no keys yet) gives c = 0 exactly. A row's bits never depend on the other rows.
  void (*attn_softmax)(float* s, int64_t rows, int64_t n, float* m, float* l, float* o, int hd);
  // attn_scores with the n keys given transposed: element i of key j at kt[i·ldk + j]. It gives the bits attn_scores
  // gives on the keys' rows (attention-cpu.cpp transposes a block once for a tile of queries, whose rows then need
  // no horizontal sums).
  void (*attn_scores_kt)(const float* q, int group, int hd, const float* kt, int64_t ldk, int64_t n, float scale,
                         float* scores, int64_t ld);

  // The GEMM path for many tokens on bf16 weights (avx512bf16 only; null in the other sets): x is packed once per
  // matmul in the set's arithmetic (rowdot-avx512bf16.h: f32 as they are, or rounded to bf16), then every row range
  // reads the packed x. It gives the bits matmul_rows gives for the same rows and tokens.
  // tiled_floats(T, K, dt): floats of the packed buffer, or 0 where the GEMM does not pay or apply (use matmul_rows).
  size_t (*tiled_floats)(int64_t T, int64_t K, DType dt);
  // Packs tokens [tile0 · kTileTokens, tile1 · kTileTokens) of x (T × K, dense) into buf (sized by tiled_floats);
  // tiles are independent.
  void (*pack_tiles)(const float* x, int64_t T, int64_t K, int64_t tile0, int64_t tile1, float* buf);
  // out[t * ldo + (r - r0)] = dot(W row r, x row t) for r in [r0, r1), t in [0, T), from the packed x (and x itself,
  // T × K dense, for what the packed form does not carry).
  void (*matmul_tiles)(const Matrix& w, int64_t r0, int64_t r1, const float* tiles, const float* x, int64_t T,
                       float* out, int64_t ldo);
  // Whether matmul_rows and matmul_tiles take exponent-coded bf16 matrices (Matrix::coded, core/coded-bf16.h);
  // only then does the backend code matrices at load.
  bool codes_bf16 = false;
  // Whether the bf16 matmuls round x to bf16 (nearest even) first, as llama.cpp does with bf16 weights (--dtype
  // bfloat16): f32 accumulation of exact products, x to 8 bits; the fast mode where vdpbf16ps is the bottleneck.
  bool bf16_activations = false;
  // This set with bf16_activations, where the set has such a twin (avx512bf16); null elsewhere (those round nothing).
  const KernelSet* with_bf16_activations = nullptr;
};

// cols rounded up to whole blocks of 32: the length of a row of x as the avx512bf16 matmuls pack it.
inline int64_t padded_cols(int64_t cols) { return (cols + 31) / 32 * 32; }
// Floats of matmul_rows' scratch for rows of `cols` columns: 4 tokens' x, each padded to whole blocks of 32.
inline size_t rows_scratch_floats(int64_t cols) { return 4 * static_cast<size_t>(padded_cols(cols)); }

// Tokens per unit of packing work, and the multiple of rows the GEMM's row ranges come in.
constexpr int64_t kTileTokens = 16;
constexpr int64_t kTileRows = 8;

const KernelSet& kernels_scalar();
// The portable reductions, shared by the sets that have no faster ones.
float max_scalar(const float* x, int64_t n);
float exp_sum_scalar(const float* x, int64_t n, float shift, float scale, float* out);
void attn_scores_scalar(const float* q, int group, int hd, const float* k, int64_t stride, int64_t n, float scale,
                        float* scores, int64_t ld);
void attn_values_scalar(const float* p, int group, int64_t ld, const float* v, int64_t stride, int64_t n, int hd,
                        float* out);
void silu_mul_scalar(float* g, const float* u, int64_t n);
void attn_scores_bf16_scalar(const float* q, int group, int hd, const uint16_t* k, int64_t stride, int64_t n,
                             float scale, float* scores, int64_t ld);
void attn_values_bf16_scalar(const float* p, int group, int64_t ld, const uint16_t* v, int64_t stride, int64_t n,
                             int hd, float* out);
void attn_softmax_scalar(float* s, int64_t rows, int64_t n, float* m, float* l, float* o, int hd);
void attn_scores_kt_scalar(const float* q, int group, int hd, const float* kt, int64_t ldk, int64_t n, float scale,
                           float* scores, int64_t ld);
const KernelSet& kernels_avx2();
const KernelSet& kernels_avx512();
const KernelSet& kernels_avx512bf16();

// The best set this CPU runs (or the one named by MOESERVE_SIMD=scalar|avx2|avx512|avx512bf16, capped to what
// the CPU has).
const KernelSet& select_kernels();
// The set of that name ("scalar", "avx2", "avx512", "avx512bf16"); throws std::runtime_error when unknown or
// beyond this CPU.
const KernelSet& kernels_by_name(const std::string& name);
// "avx512bf16", "avx512", "avx2" or "scalar": what the CPU offers.
const char* cpu_simd_level();

}  // namespace moe
