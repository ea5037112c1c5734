// The avx512bf16 kernels on exponent-coded bf16 rows (core/coded-bf16.h); included by kernels-avx512bf16.cpp only
// (compiled with its flags). Row dots decode in registers, write the row's escapes into the decoded vectors and
// feed vdpbf16ps directly in the set's one summation order (rowdot-avx512bf16.h), so that a coded row gives bit
// for bit what its plain bf16 row gives. The GEMM decodes blocks of rows exactly (escapes included) into a
// per-thread buffer and runs the plain row dots on it: the same bits again.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "core/coded-bf16.h"
#include "core/half.h"
#include "cpu/rowdot-avx512bf16.h"

namespace moe {
namespace coded {

inline __m512i table_of(const uint8_t* row) { return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row))); }

// Columns [128b, 128b + 128) of a row as bf16, in column order, 32 per vector.
inline void decode128(__m512i table, const uint8_t* low, const uint8_t* codes, __m512i w[4]) {
  const __m512i nib = _mm512_set1_epi8(0x0f);
  const __m512i c = _mm512_loadu_si512(codes);
  const __m512i ha = _mm512_shuffle_epi8(table, _mm512_and_si512(c, nib));
  const __m512i hb = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(c, 4), nib));
  const __m512i la = _mm512_loadu_si512(low), lb = _mm512_loadu_si512(low + 64);
  w[0] = _mm512_unpacklo_epi8(la, ha);
  w[1] = _mm512_unpackhi_epi8(la, ha);
  w[2] = _mm512_unpacklo_epi8(lb, hb);
  w[3] = _mm512_unpackhi_epi8(lb, hb);
}

// Rows [r0, r1) of c as bf16 bits, exactly (escapes written in), row i at dst + (i - r0) * K.
inline void decode_rows(const CodedBf16& c, int64_t r0, int64_t r1, uint16_t* dst) {
  const int64_t K = c.cols;
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* row = c.row(r);
    const __m512i table = table_of(row);
    uint16_t* d = dst + (r - r0) * K;
    for (int64_t k = 0; k < K; k += kCodedBlock) {
      __m512i w[4];
      decode128(table, row + 16 + k, row + 16 + K + k / 2, w);
      for (int q = 0; q < 4; q++) _mm512_storeu_si512(d + k + 32 * q, w[q]);
    }
    for (uint32_t i = c.esc_start[r]; i < c.esc_start[r + 1]; i++) d[c.esc_col[i]] = c.esc_bits[i];
  }
}

// Row dots prefetch the rows this far ahead into L1 while they decode the current ones. A row group is 8
// streams of about 3 KB (low bytes and codes of 4 rows), too short for the hardware stream prefetcher to
// train on. Measured on Zen 5, 2 threads, slice decode step: none 19.9 ms; 2 rows ahead 17.7; 4 rows 16.3;
// 6 rows 17.2; an L2 hint (T1) was slower than none.
constexpr int64_t kPrefetchRows = 4;

// Prefetches share `it` of `iters` of the `lines` cache lines at p, so that prefetches spread over a loop.
inline void prefetch_share(const uint8_t* p, int64_t lines, int64_t it, int64_t iters) {
  for (int64_t l = it * lines / iters; l < (it + 1) * lines / iters; l++)
    _mm_prefetch(reinterpret_cast<const char*>(p + 64 * l), _MM_HINT_T0);
}

// out[t * ldo + j] = dot(row r + j, token t) for NR rows and NT tokens; token t's x as bf16 hi and lo rows at
// hi + t·K, lo + t·K. The rows' escapes (coded as zeros) are written into the decoded vectors before they are used.
template <int NR, int NT>
inline void dot_rows(const CodedBf16& c, int64_t r, const uint16_t* hi, const uint16_t* lo, float* out, int64_t ldo) {
  const int64_t K = c.cols;
  rowdot::Acc<NR, NT> acc;
  __m512i table[NR];
  uint32_t esc[NR], esc_end[NR];  // each row's next escape and the end of its list (ascending columns)
  for (int j = 0; j < NR; j++) {
    table[j] = table_of(c.row(r + j));
    esc[j] = c.esc_start[r + j];
    esc_end[j] = c.esc_start[r + j + 1];
  }
  // The NR rows kPrefetchRows ahead (contiguous), as far as the matrix goes.
  const int64_t ahead_rows = std::clamp<int64_t>(c.rows - r - kPrefetchRows, 0, NR);
  const uint8_t* ahead = ahead_rows > 0 ? c.row(r + kPrefetchRows) : nullptr;
  const int64_t ahead_lines = ahead_rows * c.stride / 64, iters = K / kCodedBlock;
  for (int64_t k = 0, it = 0; k < K; k += kCodedBlock, it++) {
    prefetch_share(ahead, ahead_lines, it, iters);
    for (int j = 0; j < NR; j++) {
      const uint8_t* row = c.row(r + j);
      __m512i w[4];
      decode128(table[j], row + 16 + k, row + 16 + K + k / 2, w);
      for (; esc[j] < esc_end[j] && c.esc_col[esc[j]] < k + kCodedBlock; esc[j]++) {
        const int64_t col = c.esc_col[esc[j]] - k;
        w[col / 32] = _mm512_mask_mov_epi16(w[col / 32], static_cast<__mmask32>(1u << (col % 32)),
                                            _mm512_set1_epi16(static_cast<short>(c.esc_bits[esc[j]])));
      }
      for (int t = 0; t < NT; t++) {
        for (int q = 0; q < 4; q++) {
          const __m512bh xh = reinterpret_cast<__m512bh>(_mm512_loadu_si512(hi + t * K + k + 32 * q));
          const __m512bh xl = reinterpret_cast<__m512bh>(_mm512_loadu_si512(lo + t * K + k + 32 * q));
          acc.h[j][t] = _mm512_dpbf16_ps(acc.h[j][t], reinterpret_cast<__m512bh>(w[q]), xh);
          acc.l[j][t] = _mm512_dpbf16_ps(acc.l[j][t], reinterpret_cast<__m512bh>(w[q]), xl);
        }
      }
    }
  }
  acc.store(out, ldo);
}

// Rows [r0, r1) for NT tokens (hi/lo: their bf16 halves, token t at + t·K).
template <int NT>
inline void rows_for_tokens(const CodedBf16& c, int64_t r0, int64_t r1, const uint16_t* hi, const uint16_t* lo,
                            float* out, int64_t ldo) {
  constexpr int NR = NT == 1 ? 4 : NT == 2 ? 4 : 2;  // at most 16 accumulator pairs
  int64_t r = r0;
  for (; r + NR <= r1; r += NR) dot_rows<NR, NT>(c, r, hi, lo, out + (r - r0), ldo);
  for (; r < r1; r++) dot_rows<1, NT>(c, r, hi, lo, out + (r - r0), ldo);
}

// A per-thread buffer for decoded rows (grown once, reused by every later call on the thread).
inline uint16_t* row_buffer(size_t n) {
  thread_local std::vector<uint16_t> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

}  // namespace coded
}  // namespace moe
