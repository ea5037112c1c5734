// The avx512bf16 kernels on exponent-coded bf16 rows (core/coded-bf16.h); included by kernels-avx512bf16.cpp only
// (compiled with its flags). Row dots decode in registers and widen straight into the fmas, in the same column order
// as the plain row dots (rowdot-avx512bf16.h), so a row without escapes gives bit for bit the plain result. A
// coded row's escapes (coded as zero) are added afterwards, in f32 (add_escapes), by every path alike: the GEMM
// decodes blocks of rows with their escapes left at zero into a per-thread buffer, runs the plain row dots on it
// and adds them in the same way. So a coded matrix gives the same bits for a token whatever the number of tokens
// (batch invariance); against the same matrix uncoded, only rows with escapes differ, by f32 rounding.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cmath>
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

// Rows [r0, r1) of c as bf16 bits, row i at dst + (i - r0) * K: exactly (escapes written in), or with the
// escapes left at zero (for kernels that add them afterwards with add_escapes).
inline void decode_rows(const CodedBf16& c, int64_t r0, int64_t r1, uint16_t* dst, bool escapes = true) {
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
    if (escapes)
      for (uint32_t i = c.esc_start[r]; i < c.esc_start[r + 1]; i++) d[c.esc_col[i]] = c.esc_bits[i];
  }
}

// out[t * ldo + (r - r0)] += w · x[t * K + col] for every escape (r, col, w) of rows [r0, r1), in column order, for
// T tokens (x dense, T × K f32): the one way every path adds them.
inline void add_escapes(const CodedBf16& c, int64_t r0, int64_t r1, const float* x, int64_t T, float* out, int64_t ldo) {
  const int64_t K = c.cols;
  for (int64_t r = r0; r < r1; r++) {
    for (uint32_t i = c.esc_start[r]; i < c.esc_start[r + 1]; i++) {
      const float w = bf16_to_f32(c.esc_bits[i]);
      for (int64_t t = 0; t < T; t++) {
        float& o = out[t * ldo + (r - r0)];
        o = std::fma(w, x[t * K + c.esc_col[i]], o);
      }
    }
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

// out[t * ldo + j] = dot(row r + j, token t) without the row's escapes, for NR rows and NT tokens; token t's
// x packed in mode M (rowdot::ExactX or Bf16X) at xs + t·padded_cols(K). Same accumulation order as
// rowdot::dot_block on the plain rows.
template <typename M, int NR, int NT>
inline void dot_rows(const CodedBf16& c, int64_t r, const typename M::X* xs, float* out, int64_t ldo) {
  const int64_t K = c.cols, ldx = padded_cols(K);
  typename M::template Acc<NR, NT> acc;
  __m512i table[NR];
  for (int j = 0; j < NR; j++) table[j] = table_of(c.row(r + j));
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
      for (int q = 0; q < 4; q++) acc.row_step(j, w[q], xs + k + 32 * q, ldx);
    }
  }
  acc.store(out, ldo);
}

// Rows [r0, r1) for NT tokens (x dense, NT × K f32; xs the same packed), escapes added from x itself.
template <typename M, int NT>
inline void rows_for_tokens(const CodedBf16& c, int64_t r0, int64_t r1, const float* x, const typename M::X* xs,
                            float* out, int64_t ldo) {
  constexpr int NR = NT <= 2 ? 4 : 2;
  int64_t r = r0;
  for (; r + NR <= r1; r += NR) dot_rows<M, NR, NT>(c, r, xs, out + (r - r0), ldo);
  for (; r < r1; r++) dot_rows<M, 1, NT>(c, r, xs, out + (r - r0), ldo);
  add_escapes(c, r0, r1, x, NT, out, ldo);
}

// A per-thread buffer for decoded rows (grown once, reused by every later call on the thread).
inline uint16_t* row_buffer(size_t n) {
  thread_local std::vector<uint16_t> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

}  // namespace coded
}  // namespace moe
