// AVX-512 BF16 machines: every matmul on bf16 weights runs as row dots (rowdot-avx512bf16.h) in one of two
// arithmetics, a set each: exact (the weights widened exactly to f32, fmas with x as it is) or bf16 activations
// (x rounded to bf16, vdpbf16ps), on plain bf16 rows used in place or on rows coded at load (core/coded-bf16.h,
// coded-avx512bf16.h; a coded row's rare escapes are added with x unrounded in both); everything else is the
// avx512 set. Compiled with -mavx512bf16 on top
// of the avx512 set's flags; selected only after cpu-features.cpp has seen AVX512_BF16.
//
// One summation order for every bf16 matmul (rowdot-avx512bf16.h; coded rows add their escapes afterwards, the
// same way in every path), whatever the number of tokens: a token's result is the same bits alone, in a batch,
// or in any chunk of a prompt (batch invariance). Few tokens (decode, experts that got few tokens of a step) pack
// their x rows per thread and run fused row dots; more tokens pack x once per matmul (pack_tiles) and run the
// register-blocked row dots of the GEMM below (kGemmRows rows × kGemmTokens tokens per call). Blockings measured
// on one Emerald Rapids core (2-core VM), L2-resident rows (64 × 2048), 48 tokens (GMAC/s): 4 × 3 17-19, 3 × 8 19-20,
// 2 × 6 19-24, 2 × 4 27, 2 × 3 24, 4 × 2 17; with the weights read once per token group, 2 × 4 keeps the 8
// accumulators and the packed x of 4 tokens (32 KB at K = 2048) in registers and L1.
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
using rowdot::Bf16X;
using rowdot::ExactX;

// From this many tokens on, x is packed once per matmul into a shared buffer (pack_tiles) for the GEMM; fewer
// are packed per thread inside matmul_rows. Both run the same row dots.
constexpr int64_t kMinPackedTokens = 5;
// Rows of plain weights per pass of the GEMM (their 64 × K bf16 stay in L2 while every token group passes).
constexpr int64_t kChunkRows = 64;
// Rows of coded weights decoded at a time into the per-thread buffer for the GEMM.
constexpr int64_t kCodedBlockRows = 16;
// The GEMM's register block, rows × tokens per call, by mode: exact 2 × 4 (see the top); bf16 x 4 × 4 (one
// vdpbf16ps per pair and step, no widening: 16 accumulators; 4 × 3 measured 24.9 GMAC/s, 4 × 6 27.0).
template <typename M> struct Block;
template <> struct Block<ExactX> { static constexpr int rows = 2, tokens = 4; };
template <> struct Block<Bf16X> { static constexpr int rows = 4, tokens = 4; };

// The packed buffer: token t's packed row (M::pack) at t · padded_cols(K) elements of M::X.
template <typename M>
size_t tiled_floats(int64_t T, int64_t K, DType dt) {
  if (dt != DType::BF16 || T < kMinPackedTokens) return 0;
  return (static_cast<size_t>(T * padded_cols(K)) * sizeof(typename M::X) + sizeof(float) - 1) / sizeof(float);
}

template <typename M>
void pack_tiles(const float* x, int64_t T, int64_t K, int64_t tile0, int64_t tile1, float* buf) {
  const int64_t P = padded_cols(K);
  auto* xs = reinterpret_cast<typename M::X*>(buf);
  for (int64_t t = tile0 * kTileTokens; t < std::min(T, tile1 * kTileTokens); t++) M::pack(x + t * K, K, xs + t * P);
}

// out[t * ldo + i] = dot(row i, token t) for the n rows at w (row i at w + i·ldw) and every token of the packed
// buffer xs: token groups of Block::tokens outside (their packed rows stay in L1), Block::rows rows inside.
// Meanwhile the pf_bytes at pf (the coded rows decoded next) are prefetched into L2, up to 2 lines in each column
// step of the calls (with few tokens the calls may not cover them all).
template <typename M>
void gemm_rows(const uint16_t* w, int64_t ldw, int64_t n, int64_t K, const typename M::X* xs, int64_t T, float* out,
               int64_t ldo, const uint8_t* pf = nullptr, int64_t pf_bytes = 0) {
  constexpr int NR = Block<M>::rows, NTT = Block<M>::tokens;
  const int64_t ldx = padded_cols(K);
  const int64_t pf_lines = pf_bytes / 64, per_call = 2 * (K / 32);
  int64_t pf_done = 0;
  auto group = [&](auto nt, int64_t t) {
    constexpr int NT = decltype(nt)::value;
    const typename M::X* x = xs + t * ldx;
    float* o = out + t * ldo;
    auto prefetch = [&](int64_t& lines) {
      lines = std::min(per_call, pf_lines - pf_done);
      const uint8_t* p = pf + 64 * pf_done;
      pf_done += lines;
      return p;
    };
    int64_t r = 0, lines = 0;
    for (; r + NR <= n; r += NR) {
      const uint8_t* p = prefetch(lines);
      dot_block<M, NR, NT>(w + r * ldw, ldw, K, x, ldx, o + r, ldo, p, lines);
    }
    for (; r < n; r++) {
      const uint8_t* p = prefetch(lines);
      dot_block<M, 1, NT>(w + r * ldw, ldw, K, x, ldx, o + r, ldo, p, lines);
    }
  };
  static_assert(NTT == 4, "the remainder below is for groups of 4");
  int64_t t = 0;
  for (; t + NTT <= T; t += NTT) group(std::integral_constant<int, NTT>{}, t);
  switch (T - t) {
    case 3: group(std::integral_constant<int, 3>{}, t); break;
    case 2: group(std::integral_constant<int, 2>{}, t); break;
    case 1: group(std::integral_constant<int, 1>{}, t); break;
    default: break;
  }
}

template <typename M>
void matmul_tiles(const Matrix& w, int64_t r0, int64_t r1, const float* tiles, const float* x, int64_t T, float* out,
                  int64_t ldo) {
  const int64_t K = w.cols;
  const auto* xs = reinterpret_cast<const typename M::X*>(tiles);
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
      gemm_rows<M>(rows, K, b1 - b0, K, xs, T, o, ldo, next > 0 ? c.row(b1) : nullptr, next);
      coded::add_escapes(c, b0, b1, x, T, o, ldo);
    }
    return;
  }
  const auto* rows = static_cast<const uint16_t*>(w.data);
  for (int64_t c0 = r0; c0 < r1; c0 += kChunkRows) {
    const int64_t c1 = std::min(r1, c0 + kChunkRows);
    gemm_rows<M>(rows + c0 * K, K, c1 - c0, K, xs, T, out + (c0 - r0), ldo);
  }
}

// Few tokens (decode, and experts that got few tokens of a step): memory-bound row dots, in groups of up to 4
// tokens, each packed once into scratch (4 × padded_cols(K) elements, rows_scratch_floats).
template <typename M>
void matmul_rows_bf16(const Matrix& w, int64_t r0, int64_t r1, const float* x, int64_t T, float* out, int64_t ldo,
                      float* scratch) {
  if (w.dtype != DType::BF16) {
    kernels_avx512().matmul_rows(w, r0, r1, x, T, out, ldo, scratch);
    return;
  }
  const int64_t K = w.cols, P = padded_cols(K);
  auto* xs = reinterpret_cast<typename M::X*>(scratch);
  for (int64_t t0 = 0; t0 < T; t0 += 4) {
    const int64_t nt = std::min<int64_t>(4, T - t0);
    for (int64_t t = 0; t < nt; t++) M::pack(x + (t0 + t) * K, K, xs + t * P);
    float* o = out + t0 * ldo;
    if (w.coded) {
      const CodedBf16& c = *w.coded;
      switch (nt) {
        case 1: coded::rows_for_tokens<M, 1>(c, r0, r1, x + t0 * K, xs, o, ldo); break;
        case 2: coded::rows_for_tokens<M, 2>(c, r0, r1, x + t0 * K, xs, o, ldo); break;
        case 3: coded::rows_for_tokens<M, 3>(c, r0, r1, x + t0 * K, xs, o, ldo); break;
        default: coded::rows_for_tokens<M, 4>(c, r0, r1, x + t0 * K, xs, o, ldo); break;
      }
      continue;
    }
    const auto* rows = static_cast<const uint16_t*>(w.data);
    auto run = [&](auto ntc) {
      constexpr int NT = decltype(ntc)::value;
      constexpr int NR = NT <= 2 ? 4 : 2;
      int64_t r = r0;
      for (; r + NR <= r1; r += NR) dot_block<M, NR, NT>(rows + r * K, K, K, xs, P, o + (r - r0), ldo);
      for (; r < r1; r++) dot_block<M, 1, NT>(rows + r * K, K, K, xs, P, o + (r - r0), ldo);
    };
    switch (nt) {
      case 1: run(std::integral_constant<int, 1>{}); break;
      case 2: run(std::integral_constant<int, 2>{}); break;
      case 3: run(std::integral_constant<int, 3>{}); break;
      default: run(std::integral_constant<int, 4>{}); break;
    }
  }
}

template <typename M>
KernelSet make_set(const char* name, bool bf16_activations) {
  KernelSet s = kernels_avx512();
  s.name = name;
  s.matmul_rows = matmul_rows_bf16<M>;
  s.tiled_floats = tiled_floats<M>;
  s.pack_tiles = pack_tiles<M>;
  s.matmul_tiles = matmul_tiles<M>;
  s.codes_bf16 = true;
  s.bf16_activations = bf16_activations;
  return s;
}

}  // namespace

const KernelSet& kernels_avx512bf16() {
  static const KernelSet k = [] {
    KernelSet s = make_set<ExactX>("avx512bf16", false);
    static const KernelSet rounded = make_set<Bf16X>("avx512bf16", true);
    s.with_bf16_activations = &rounded;
    return s;
  }();
  return k;
}

}  // namespace moe
