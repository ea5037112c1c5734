// The one summation order of the avx512bf16 kernel set's bf16 matmuls (included by kernels-avx512bf16.cpp and
// coded-avx512bf16.h only, compiled with their flags).
//
// Batch invariance: every bf16 matmul of this set, whatever the number of tokens in the step (decode, a prompt
// chunk, the tokens an expert got), whether its rows are coded or not, computes out[t][r] = dot(W row r, x row t)
// in exactly this order, so that a token's result never depends on the other tokens of its step:
//   - x row t is split once into bf16 hi and lo rows (split_row: x = hi + lo to about 2^-17 relative);
//   - per 32 columns k .. k+31 in order (the last block masked with zeros), one vdpbf16ps of the 32 weights with
//     hi into accumulator ah and one with lo into al: lane l of ah sums the column pairs (k + 2l, k + 2l + 1);
//   - the result is hsum(ah + al), a fixed tree over the 16 lanes (the one GCC's _mm512_reduce_add_ps uses; written
//     out here so that it cannot depend on the compiler, and so that hsum4 can do four at once, bit for bit alike).
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
  int64_t k = 0;
  for (; k + 32 <= n; k += 32) {
    __m512i h, l;
    split32(_mm512_loadu_ps(x + k), _mm512_loadu_ps(x + k + 16), h, l);
    _mm512_storeu_si512(hi + k, h);
    _mm512_storeu_si512(lo + k, l);
  }
  if (k < n) {  // the tail, masked
    const int64_t left = n - k;
    const __m512 a = _mm512_maskz_loadu_ps(lanes16(left), x + k);
    const __m512 b = left > 16 ? _mm512_maskz_loadu_ps(lanes16(left - 16), x + k + 16) : _mm512_setzero_ps();
    __m512i h, l;
    split32(a, b, h, l);
    _mm512_mask_storeu_epi16(hi + k, lanes32(left), h);
    _mm512_mask_storeu_epi16(lo + k, lanes32(left), l);
  }
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
  // out[t * ldo + i] = the dot of row i and token t: hsum(ah + al), four at a time while they last.
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
  // Pair n (row n / NT, token n % NT) as one vector.
  inline __m512 sum(int n) const { return _mm512_add_ps(h[n / NT][n % NT], l[n / NT][n % NT]); }
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
