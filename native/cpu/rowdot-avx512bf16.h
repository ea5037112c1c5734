// The summation orders of the avx512bf16 kernel set's bf16 matmuls (included by kernels-avx512bf16.cpp and
// coded-avx512bf16.h only, compiled with their flags), one per arithmetic (--dtype).
//
// Batch invariance: every bf16 matmul of this set, whatever the number of tokens in the step (decode, a prompt
// chunk, the tokens an expert got), whether its rows are coded or not, computes out[t][r] = dot(W row r, x row t)
// in exactly its mode's order, so that a token's result never depends on the other tokens of its step.
// The exact mode (ExactX, --dtype float32):
//   - x row t is packed once (pack_row): per 32 columns k .. k+31, the 16 even columns (k, k+2, .., k+30) then the
//     16 odd ones, as they are (f32); the last block is padded with zeros to 32;
//   - per 32 columns in order (the last block loaded masked, zeros beyond K), the 32 bf16 weights are widened
//     exactly into f32 (bf16 is the top half of an f32: a shift gives the even columns, a mask the odd ones), then
//     a = fma(w_even, x_even, a); a = fma(w_odd, x_odd, a): lane l sums columns k + 2l and k + 2l + 1 in turn;
//   - the result is hsum(a), a fixed tree over the 16 lanes (the one GCC's _mm512_reduce_add_ps uses; written out
//     here so that it cannot depend on the compiler, and so that hsum4 can do four at once, bit for bit alike).
//   Every step is an fma with its one rounding: f32 accuracy with x as it is. It replaced x split into bf16 hi + lo
//   halves on two vdpbf16ps per 32 columns (x to about 2^-17): vdpbf16ps issues at half the rate of vfmadd231ps on
//   an Emerald Rapids core (L2-resident 64 × 2048 rows, 48 tokens, one core: hi + lo 16.4-16.8 GMAC/s, this 23-27).
// The bf16 mode (Bf16X, --dtype bfloat16): x rounded to bf16 when packed, one vdpbf16ps per 32 columns, then hsum
// (below, beside AccBf16). In whole prompts it is the faster by 1.4-1.6× (the exact mode streams twice the bytes of
// x and widens every weight vector; 25-28 GMAC/s in the microbenchmark above).
// Register blocking (rows × tokens per call) changes which accumulators run side by side, never their order.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "cpu/kernels.h"

namespace moe {
namespace rowdot {

inline __mmask16 lanes16(int64_t n) { return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u); }
inline __mmask32 lanes32(int64_t n) { return n >= 32 ? ~static_cast<__mmask32>(0) : (static_cast<__mmask32>(1) << n) - 1; }

// Calls block(a, b, k) for every 32 columns k .. k+31 of x (n floats), a holding columns k .. k+15 and b the next
// 16; the last block loaded masked, zeros beyond n.
template <typename Block>
inline void for_blocks(const float* x, int64_t n, Block block) {
  int64_t k = 0;
  for (; k + 32 <= n; k += 32) block(_mm512_loadu_ps(x + k), _mm512_loadu_ps(x + k + 16), k);
  if (k < n) {
    const int64_t left = n - k;
    const __m512 a = _mm512_maskz_loadu_ps(lanes16(left), x + k);
    const __m512 b = left > 16 ? _mm512_maskz_loadu_ps(lanes16(left - 16), x + k + 16) : _mm512_setzero_ps();
    block(a, b, k);
  }
}

// Columns 0-15 (a) and 16-31 (b) of a block as its even then its odd columns, at dst.
inline void pack32(__m512 a, __m512 b, float* dst) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  _mm512_storeu_ps(dst, _mm512_permutex2var_ps(a, even, b));
  _mm512_storeu_ps(dst + 16, _mm512_permutex2var_ps(a, odd, b));
}

// x (n floats) packed into padded_cols(n) floats at dst.
inline void pack_row(const float* x, int64_t n, float* dst) {
  for_blocks(x, n, [dst](__m512 a, __m512 b, int64_t k) { pack32(a, b, dst + k); });
}

// The sum of v's 16 lanes: s8[i] = v[i + 8] + v[i]; s4[i] = s8[i + 4] + s8[i]; (s4[0] + s4[2]) + (s4[1] + s4[3]).
inline float hsum(__m512 v) {
  const __m256 s8 = _mm256_add_ps(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)), _mm512_castps512_ps256(v));
  const __m128 s4 = _mm_add_ps(_mm256_extractf128_ps(s8, 1), _mm256_castps256_ps128(s8));
  const __m128 s2 = _mm_add_ps(s4, _mm_shuffle_ps(s4, s4, 0x4e));  // lanes 2, 3, 0, 1
  return _mm_cvtss_f32(_mm_add_ps(s2, _mm_shuffle_ps(s2, s2, 0xb1)));  // lanes 1, 0, 3, 2
}

// hsum of a, b, c and d, the same tree and the same bits, with a quarter of the instructions: returns them in
// lanes 0, 4, 8 and 12.
inline __m512 hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  // Quarters (128 bits) q0..q3: [a.q0 + a.q2, a.q1 + a.q3, b.q0 + b.q2, b.q1 + b.q3]: a's s8, then b's.
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0xee), _mm512_shuffle_f32x4(a, b, 0x44));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0xee), _mm512_shuffle_f32x4(c, d, 0x44));
  // [a's s4, b's s4, c's s4, d's s4]
  const __m512 s4 = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0xdd), _mm512_shuffle_f32x4(ab, cd, 0x88));
  const __m512 s2 = _mm512_add_ps(s4, _mm512_shuffle_ps(s4, s4, 0x4e));
  return _mm512_add_ps(s2, _mm512_shuffle_ps(s2, s2, 0xb1));
}

// 32 bf16 weights (column order) as f32: the even columns, then the odd ones.
inline __m512 widen_even(__m512i w) { return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)); }
inline __m512 widen_odd(__m512i w) { return _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(static_cast<int>(0xffff0000u)))); }

// NR × NT accumulators, one per (row, token), and their sums out; the modes' Acc types add their steps.
template <int NR, int NT>
struct Accumulators {
  __m512 a[NR][NT];
  Accumulators() {
    for (int i = 0; i < NR; i++)
      for (int t = 0; t < NT; t++) a[i][t] = _mm512_setzero_ps();
  }
  // out[t * ldo + i] = the dot of row i and token t: hsum(a), four at a time while they last.
  inline void store(float* out, int64_t ldo) const {
    constexpr int N = NR * NT;
    int n = 0;
    for (; n + 4 <= N; n += 4) {
      alignas(64) float s[16];
      _mm512_store_ps(s, hsum4(sum(n), sum(n + 1), sum(n + 2), sum(n + 3)));
      for (int j = 0; j < 4; j++) out[(n + j) % NT * ldo + (n + j) / NT] = s[4 * j];
    }
    for (; n < N; n++) out[n % NT * ldo + n / NT] = hsum(sum(n));
  }
  // Accumulator n (row n / NT, token n % NT).
  inline __m512 sum(int n) const { return a[n / NT][n % NT]; }
};

// The exact mode's accumulators.
template <int NR, int NT>
struct Acc : Accumulators<NR, NT> {
  using Accumulators<NR, NT>::a;
  // Every row's 32 weights w[i] against each token's packed block (token t's at x + t·ldx).
  inline void step(const __m512i* w, const float* x, int64_t ldx) {
    __m512 we[NR], wo[NR];
    for (int i = 0; i < NR; i++) we[i] = widen_even(w[i]), wo[i] = widen_odd(w[i]);
    for (int t = 0; t < NT; t++) {
      const __m512 xe = _mm512_loadu_ps(x + t * ldx), xo = _mm512_loadu_ps(x + t * ldx + 16);
      for (int i = 0; i < NR; i++) a[i][t] = _mm512_fmadd_ps(wo[i], xo, _mm512_fmadd_ps(we[i], xe, a[i][t]));
    }
  }
  // Row i's 32 weights alone (the same operations on its accumulators as step).
  inline void row_step(int i, __m512i w, const float* x, int64_t ldx) {
    const __m512 we = widen_even(w), wo = widen_odd(w);
    for (int t = 0; t < NT; t++)
      a[i][t] = _mm512_fmadd_ps(wo, _mm512_loadu_ps(x + t * ldx + 16), _mm512_fmadd_ps(we, _mm512_loadu_ps(x + t * ldx), a[i][t]));
  }
};

// The bf16-activation mode (--dtype bfloat16, as llama.cpp runs its bf16 matmuls): x rounded to bf16 (nearest
// even) when packed (pack_row_bf16: per 32 columns, the 32 bf16 in column order; the last block padded with
// zeros), then one vdpbf16ps per 32 columns: lane l of a sums the products of columns k + 2l and k + 2l + 1.
// Half the instructions of the fma order above; x carries 8 bits instead of 24.
inline void pack_row_bf16(const float* x, int64_t n, uint16_t* dst) {
  for_blocks(x, n, [dst](__m512 a, __m512 b, int64_t k) {
    _mm512_storeu_si512(dst + k, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(b, a)));  // the second operand fills the low half
  });
}

template <int NR, int NT>
struct AccBf16 : Accumulators<NR, NT> {
  using Accumulators<NR, NT>::a;
  // As Acc::step, x as packed bf16 (token t's block at x + t·ldx).
  inline void step(const __m512i* w, const uint16_t* x, int64_t ldx) {
    for (int t = 0; t < NT; t++) {
      const __m512bh xv = reinterpret_cast<__m512bh>(_mm512_loadu_si512(x + t * ldx));
      for (int i = 0; i < NR; i++) a[i][t] = _mm512_dpbf16_ps(a[i][t], reinterpret_cast<__m512bh>(w[i]), xv);
    }
  }
  inline void row_step(int i, __m512i w, const uint16_t* x, int64_t ldx) {
    for (int t = 0; t < NT; t++)
      a[i][t] = _mm512_dpbf16_ps(a[i][t], reinterpret_cast<__m512bh>(w), reinterpret_cast<__m512bh>(_mm512_loadu_si512(x + t * ldx)));
  }
};

// The two modes: packed x's element type, its packing and its accumulators.
struct ExactX {
  using X = float;
  template <int NR, int NT>
  using Acc = rowdot::Acc<NR, NT>;
  static void pack(const float* x, int64_t n, X* dst) { pack_row(x, n, dst); }
};
struct Bf16X {
  using X = uint16_t;
  template <int NR, int NT>
  using Acc = AccBf16<NR, NT>;
  static void pack(const float* x, int64_t n, X* dst) { pack_row_bf16(x, n, dst); }
};

inline __m512i load32(const uint16_t* p) { return _mm512_loadu_si512(p); }

// out[t * ldo + i] = dot(row i, token t) for NR bf16 rows (row i at w + i·ldw, K columns) and NT tokens (token
// t's row packed in mode M at x + t·ldx elements). Meanwhile the pf_lines cache lines at pf (at most 2 per full 32-column step) are
// prefetched into L2, lines it and it + steps at step it (data a later call reads).
template <typename M, int NR, int NT>
inline void dot_block(const uint16_t* w, int64_t ldw, int64_t K, const typename M::X* x, int64_t ldx, float* out,
                      int64_t ldo, const uint8_t* pf = nullptr, int64_t pf_lines = 0) {
  typename M::template Acc<NR, NT> acc;
  __m512i wv[NR];
  const int64_t steps = K / 32;
  int64_t k = 0;
  for (int64_t it = 0; k + 32 <= K; k += 32, it++) {
    if (it < pf_lines) {
      _mm_prefetch(reinterpret_cast<const char*>(pf + 64 * it), _MM_HINT_T1);
      if (it + steps < pf_lines) _mm_prefetch(reinterpret_cast<const char*>(pf + 64 * (it + steps)), _MM_HINT_T1);
    }
    for (int i = 0; i < NR; i++) wv[i] = load32(w + i * ldw + k);
    acc.step(wv, x + k, ldx);
  }
  if (k < K) {
    const __mmask32 m = lanes32(K - k);  // masked loads only for the tail: they are slower on some cores
    for (int i = 0; i < NR; i++) wv[i] = _mm512_maskz_loadu_epi16(m, w + i * ldw + k);
    acc.step(wv, x + k, ldx);
  }
  acc.store(out, ldo);
}

}  // namespace rowdot
}  // namespace moe
