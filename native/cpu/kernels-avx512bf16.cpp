// AVX-512 BF16: every matmul on bf16 weights runs as row dots on vdpbf16ps, on plain bf16 rows used in place or on
// rows coded at load (core/coded-bf16.h, coded-avx512bf16.h); everything else is the avx512 set. Compiled with
// -mavx512bf16 on top of the avx512 set's flags; selected only after cpu-features.cpp has seen AVX512_BF16.
//
// One summation order for every bf16 matmul (rowdot-avx512bf16.h; coded rows add their escapes afterwards, the
// same way in every path), whatever the number of tokens: a token's result is the same bits alone, in a batch,
// or in any chunk of a prompt (batch invariance). Few tokens (decode, experts that got few tokens of a step) split
// their x rows per thread and run fused row dots; more tokens split x once per matmul (pack_tiles) and run the
// register-blocked row dots of the GEMM below (4 rows × 3 tokens per call, 24 accumulators). Against the tiled
// GEMM it replaced (16-token tiles × 8 rows, each weight pair broadcast; it summed in another order than the row
// dots), measured on one Sapphire Rapids core with the weights in L2 (thread CPU time, both alternating in one
// process): 2-4% more time at 16, 32, 64 and 128 tokens (whole tiles, their best case) and at 5 coded, 5-40% less
// coded and 20-60% less uncoded at 6-12 and 17 tokens (tiles partly empty, as an expert's tokens mostly leave them).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "cpu/coded-avx512bf16.h"
#include "cpu/kernels.h"
#include "cpu/rowdot-avx512bf16.h"

namespace moe {
namespace {

using rowdot::dot_block;
using rowdot::split_row;

// From this many tokens on, x is split once per matmul into a shared buffer (pack_tiles) for the GEMM; fewer
// are split per thread inside matmul_rows. Both run the same row dots.
constexpr int64_t kMinPackedTokens = 5;
// Rows of plain weights per pass of the GEMM (their 64 × K bf16 stay in L2 while every token group passes).
constexpr int64_t kChunkRows = 64;
// Rows of coded weights decoded at a time into the per-thread buffer for the GEMM.
constexpr int64_t kCodedBlockRows = 16;

// The split buffer: token t's hi row (K bf16) then its lo row (K bf16), K floats per token. (Padding the rows
// apart, so that those a call reads side by side do not share an L1 set when K is a power of 2, measured no faster.)
size_t tiled_floats(int64_t T, int64_t K, DType dt) {
  if (dt != DType::BF16 || T < kMinPackedTokens) return 0;
  return static_cast<size_t>(T * K);
}

void pack_tiles(const float* x, int64_t T, int64_t K, int64_t tile0, int64_t tile1, float* buf) {
  auto* base = reinterpret_cast<uint16_t*>(buf);
  for (int64_t t = tile0 * kTileTokens; t < std::min(T, tile1 * kTileTokens); t++) split_row(x + t * K, K, base + 2 * K * t, base + 2 * K * t + K);
}

// out[t * ldo + i] = dot(row i, token t) for the n rows at w (row i at w + i·ldw) and every token of the split
// buffer xs: token groups of 3 outside (their hi and lo rows stay in L1), rows in quads inside. Meanwhile the
// pf_bytes at pf (the coded rows decoded next) are prefetched into L2, up to 2 lines in each column step of the
// calls (with few tokens the calls may not cover them all).
void gemm_rows(const uint16_t* w, int64_t ldw, int64_t n, int64_t K, const uint16_t* xs, int64_t T, float* out, int64_t ldo,
               const uint8_t* pf = nullptr, int64_t pf_bytes = 0) {
  const int64_t ldx = 2 * K;
  const int64_t pf_lines = pf_bytes / 64, per_call = 2 * (K / 32);
  int64_t pf_done = 0;
  auto group = [&](auto nt, int64_t t) {
    constexpr int NT = decltype(nt)::value;
    const uint16_t* hi = xs + t * ldx;
    float* o = out + t * ldo;
    auto prefetch = [&](int64_t& lines) {
      lines = std::min(per_call, pf_lines - pf_done);
      const uint8_t* p = pf + 64 * pf_done;
      pf_done += lines;
      return p;
    };
    int64_t r = 0, lines = 0;
    for (; r + 4 <= n; r += 4) {
      const uint8_t* p = prefetch(lines);
      dot_block<4, NT>(w + r * ldw, ldw, K, hi, hi + K, ldx, o + r, ldo, p, lines);
    }
    for (; r < n; r++) {
      const uint8_t* p = prefetch(lines);
      dot_block<1, NT>(w + r * ldw, ldw, K, hi, hi + K, ldx, o + r, ldo, p, lines);
    }
  };
  // Groups of 3 tokens; a remainder of 1 makes the last four two groups of 2.
  int64_t t = 0;
  const int64_t full_end = T % 3 == 1 && T >= 4 ? T - 4 : T - T % 3;
  for (; t < full_end; t += 3) group(std::integral_constant<int, 3>{}, t);
  for (; t + 2 <= T; t += 2) group(std::integral_constant<int, 2>{}, t);
  if (t < T) group(std::integral_constant<int, 1>{}, t);
}

void matmul_tiles(const Matrix& w, int64_t r0, int64_t r1, const float* tiles, const float* x, int64_t T, float* out,
                  int64_t ldo) {
  const int64_t K = w.cols;
  const auto* xs = reinterpret_cast<const uint16_t*>(tiles);
  if (w.coded) {
    // Blocks of rows decoded into a per-thread buffer that stands in for them, escapes left at zero and added
    // afterwards as the row dots add them (coded-avx512bf16.h).
    const CodedBf16& c = *w.coded;
    uint16_t* rows = coded::row_buffer(static_cast<size_t>(kCodedBlockRows * K));
    for (int64_t b0 = r0; b0 < r1; b0 += kCodedBlockRows) {
      const int64_t b1 = std::min(r1, b0 + kCodedBlockRows);
      coded::decode_rows(c, b0, b1, rows, false);
      const int64_t next = std::min(r1 - b1, kCodedBlockRows) * c.stride;
      float* o = out + (b0 - r0);
      gemm_rows(rows, K, b1 - b0, K, xs, T, o, ldo, next > 0 ? c.row(b1) : nullptr, next);
      coded::add_escapes(c, b0, b1, x, T, o, ldo);
    }
    return;
  }
  const auto* rows = static_cast<const uint16_t*>(w.data);
  for (int64_t c0 = r0; c0 < r1; c0 += kChunkRows) {
    const int64_t c1 = std::min(r1, c0 + kChunkRows);
    gemm_rows(rows + c0 * K, K, c1 - c0, K, xs, T, out + (c0 - r0), ldo);
  }
}

// Few tokens (decode, and experts that got few tokens of a step): memory-bound row dots, in groups of up to 4
// tokens, each split once into hi/lo bf16 rows in scratch (4 × K floats: the hi and lo rows of 4 tokens).
void matmul_rows_bf16(const Matrix& w, int64_t r0, int64_t r1, const float* x, int64_t T, float* out, int64_t ldo,
                      float* scratch) {
  if (w.dtype != DType::BF16) {
    kernels_avx512().matmul_rows(w, r0, r1, x, T, out, ldo, scratch);
    return;
  }
  const int64_t K = w.cols;
  auto* hi = reinterpret_cast<uint16_t*>(scratch);
  uint16_t* lo = hi + 4 * K;
  for (int64_t t0 = 0; t0 < T; t0 += 4) {
    const int64_t nt = std::min<int64_t>(4, T - t0);
    for (int64_t t = 0; t < nt; t++) split_row(x + (t0 + t) * K, K, hi + t * K, lo + t * K);
    float* o = out + t0 * ldo;
    if (w.coded) {
      const CodedBf16& c = *w.coded;
      switch (nt) {
        case 1: coded::rows_for_tokens<1>(c, r0, r1, x + t0 * K, hi, lo, o, ldo); break;
        case 2: coded::rows_for_tokens<2>(c, r0, r1, x + t0 * K, hi, lo, o, ldo); break;
        case 3: coded::rows_for_tokens<3>(c, r0, r1, x + t0 * K, hi, lo, o, ldo); break;
        default: coded::rows_for_tokens<4>(c, r0, r1, x + t0 * K, hi, lo, o, ldo); break;
      }
      continue;
    }
    const auto* rows = static_cast<const uint16_t*>(w.data);
    auto run = [&](auto ntc) {
      constexpr int NT = decltype(ntc)::value;
      constexpr int NR = NT <= 2 ? 4 : 2;  // at most 16 accumulator pairs
      int64_t r = r0;
      for (; r + NR <= r1; r += NR) dot_block<NR, NT>(rows + r * K, K, K, hi, lo, K, o + (r - r0), ldo);
      for (; r < r1; r++) dot_block<1, NT>(rows + r * K, K, K, hi, lo, K, o + (r - r0), ldo);
    };
    switch (nt) {
      case 1: run(std::integral_constant<int, 1>{}); break;
      case 2: run(std::integral_constant<int, 2>{}); break;
      case 3: run(std::integral_constant<int, 3>{}); break;
      default: run(std::integral_constant<int, 4>{}); break;
    }
  }
}

}  // namespace

const KernelSet& kernels_avx512bf16() {
  static const KernelSet k = [] {
    KernelSet s = kernels_avx512();
    s.name = "avx512bf16";
    s.matmul_rows = matmul_rows_bf16;
    s.tiled_floats = tiled_floats;
    s.pack_tiles = pack_tiles;
    s.matmul_tiles = matmul_tiles;
    s.codes_bf16 = true;
    return s;
  }();
  return k;
}

}  // namespace moe
