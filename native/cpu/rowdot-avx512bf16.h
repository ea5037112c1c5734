// The one summation order of the avx512bf16 kernel set's bf16 matmuls (included by kernels-avx512bf16.cpp and
// coded-avx512bf16.h only, compiled with their flags).
//
// Batch invariance: every bf16 matmul of this set, whatever the number of tokens in the step (decode, a prompt
// chunk, the tokens an expert got), whether its rows are coded or not, computes out[t][r] = dot(W row r, x row t)
// in exactly this order, so that a token's result never depends on the other tokens of its step:
//   - x row t is split once into bf16 hi and lo rows (split_row: x = hi + lo to about 2^-17 relative);
//   - per 32 columns k .. k+31 in order (the last block masked with zeros), one vdpbf16ps of the 32 weights with
//     hi into accumulator ah and one with lo into al: lane l of ah sums the column pairs (k + 2l, k + 2l + 1);
//   - the result is _mm512_reduce_add_ps(ah + al).
// Register blocking (rows × tokens per call) changes which accumulators run side by side, never their order.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace moe {
namespace rowdot {

inline __mmask16 lanes16(int64_t n) { return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u); }
inline __mmask32 lanes32(int64_t n) { return n >= 32 ? ~static_cast<__mmask32>(0) : (static_cast<__mmask32>(1) << n) - 1; }

// 32 floats (a: columns 0-15, b: 16-31) as bf16 hi and lo halves, x = hi + lo to about 2^-17 relative; the
// bf16 of column c sits at element c.
inline void split32(__m512 a, __m512 b, __m512i& hi, __m512i& lo) {
  hi = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(b, a));  // the second operand fills the low half
  const __m512 a_hi = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(hi)), 16));
  const __m512 b_hi = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(hi, 1)), 16));
  lo = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(_mm512_sub_ps(b, b_hi), _mm512_sub_ps(a, a_hi)));
}

// x (n floats) as bf16 hi and lo rows.
inline void split_row(const float* x, int64_t n, uint16_t* hi, uint16_t* lo) {
  for (int64_t k = 0; k < n; k += 32) {
    const int64_t left = n - k;
    const __m512 a = _mm512_maskz_loadu_ps(lanes16(left), x + k);
    const __m512 b = left > 16 ? _mm512_maskz_loadu_ps(lanes16(left - 16), x + k + 16) : _mm512_setzero_ps();
    __m512i h, l;
    split32(a, b, h, l);
    _mm512_mask_storeu_epi16(hi + k, lanes32(left), h);
    _mm512_mask_storeu_epi16(lo + k, lanes32(left), l);
  }
}

// NR × NT accumulator pairs: ah for the hi halves, al for the lo halves.
template <int NR, int NT>
struct Acc {
  __m512 h[NR][NT], l[NR][NT];
  Acc() {
    for (int i = 0; i < NR; i++)
      for (int t = 0; t < NT; t++) h[i][t] = l[i][t] = _mm512_setzero_ps();
  }
  // Row i's 32 weights w[i] against each token's 32 hi and lo values (token t's at hi + t·ldx and lo + t·ldx).
  template <typename Load>
  inline void step(const __m512bh* w, const uint16_t* hi, const uint16_t* lo, int64_t ldx, Load load) {
    for (int t = 0; t < NT; t++) {
      const __m512bh xh = reinterpret_cast<__m512bh>(load(hi + t * ldx));
      const __m512bh xl = reinterpret_cast<__m512bh>(load(lo + t * ldx));
      for (int i = 0; i < NR; i++) {
        h[i][t] = _mm512_dpbf16_ps(h[i][t], w[i], xh);
        l[i][t] = _mm512_dpbf16_ps(l[i][t], w[i], xl);
      }
    }
  }
  // out[t * ldo + i] = the dot of row i and token t.
  inline void store(float* out, int64_t ldo) const {
    for (int i = 0; i < NR; i++)
      for (int t = 0; t < NT; t++) out[t * ldo + i] = _mm512_reduce_add_ps(_mm512_add_ps(h[i][t], l[i][t]));
  }
};

inline __m512i load32(const uint16_t* p) { return _mm512_loadu_si512(p); }

// out[t * ldo + i] = dot(row i, token t) for NR bf16 rows (row i at w + i·ldw, K columns) and NT tokens (token
// t's hi row at hi + t·ldx, its lo row at lo + t·ldx). Meanwhile the pf_lines cache lines at pf (at most 2 per
// full 32-column step) are prefetched into L2, lines it and it + steps at step it (data a later call reads).
template <int NR, int NT>
inline void dot_block(const uint16_t* w, int64_t ldw, int64_t K, const uint16_t* hi, const uint16_t* lo, int64_t ldx,
                      float* out, int64_t ldo, const uint8_t* pf = nullptr, int64_t pf_lines = 0) {
  Acc<NR, NT> acc;
  __m512bh wv[NR];
  const int64_t steps = K / 32;
  int64_t k = 0;
  for (int64_t it = 0; k + 32 <= K; k += 32, it++) {
    if (it < pf_lines) {
      _mm_prefetch(reinterpret_cast<const char*>(pf + 64 * it), _MM_HINT_T1);
      if (it + steps < pf_lines) _mm_prefetch(reinterpret_cast<const char*>(pf + 64 * (it + steps)), _MM_HINT_T1);
    }
    for (int i = 0; i < NR; i++) wv[i] = reinterpret_cast<__m512bh>(load32(w + i * ldw + k));
    acc.step(wv, hi + k, lo + k, ldx, load32);
  }
  if (k < K) {
    const __mmask32 m = lanes32(K - k);  // masked loads only for the tail: they are slower on some cores
    auto load = [m](const uint16_t* p) { return _mm512_maskz_loadu_epi16(m, p); };
    for (int i = 0; i < NR; i++) wv[i] = reinterpret_cast<__m512bh>(load(w + i * ldw + k));
    acc.step(wv, hi + k, lo + k, ldx, load);
  }
  acc.store(out, ldo);
}

}  // namespace rowdot
}  // namespace moe
