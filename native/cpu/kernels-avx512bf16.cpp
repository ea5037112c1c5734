// AVX-512 BF16: a tiled GEMM on bf16 weights used in place (prefill projections, the experts of a batched
// MoE step, the lm_head over several rows) and row dots for 1-4 tokens (decode), on plain bf16 rows or on rows
// coded at load (core/coded-bf16.h, coded-avx512bf16.h). Everything else is the avx512 set. Compiled with
// -mavx512bf16 on top of the avx512 set's flags; selected only after cpu-features.cpp has seen AVX512_BF16.
//
// A packed tile holds kTileTokens = 16 tokens of x (T × K, K even). For each column pair p = (2p, 2p+1) it
// stores 16 u32 of the tokens' hi bf16 pairs, then 16 u32 of their lo pairs: tile[(2p + h) * 16 + t]. The
// micro-kernel broadcasts one u32 (two adjacent bf16 weights) of each of kTileRows rows and runs vdpbf16ps
// against the hi and the lo vectors: 16 tokens × 2 columns per instruction, with hi and lo in separate
// accumulators so that no chain is longer than one instruction per pair.
//
// Why 8 rows: the rows of a 2048-wide bf16 matrix lie 4 KiB apart and so share one L1 set; more rows than
// L1 ways (12) evict each other on every pair (measured: 16 rows run at half the speed of 8).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "cpu/coded-avx512bf16.h"
#include "cpu/kernels.h"

namespace moe {
namespace {

// Below this many tokens a tile is mostly padding, and the avx512 row-dot kernels (bound by memory) win.
constexpr int64_t kMinTiledTokens = 6;
// Rows whose weights stay in L2 while every tile of a long prefill passes over them.
constexpr int64_t kChunkRows = 64;

inline __mmask16 lanes(int64_t n) { return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u); }

size_t tiled_floats(int64_t T, int64_t K, DType dt) {
  if (dt != DType::BF16 || K % 2 != 0 || T < kMinTiledTokens) return 0;
  return static_cast<size_t>((T + kTileTokens - 1) / kTileTokens * kTileTokens * K);
}

// 32 floats (a: columns 0-15, b: 16-31) as bf16 hi and lo halves, x = hi + lo to about 2^-17 relative; the
// bf16 of column c sits at element c (u32 lane c / 2 holds columns c and c + 1).
inline void split32(__m512 a, __m512 b, __m512i& hi, __m512i& lo) {
  hi = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(b, a));  // the second operand fills the low half
  const __m512 a_hi = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(hi)), 16));
  const __m512 b_hi = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(hi, 1)), 16));
  lo = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(_mm512_sub_ps(b, b_hi), _mm512_sub_ps(a, a_hi)));
}

// In place: r[j] lane i ← r[i] lane j (16 × 16 u32): 32- and 64-bit interleaves within 128-bit lanes, then a
// 4 × 4 transpose of the lanes; 64 shuffles (16 scatters of 16 elements cost several times more).
inline void transpose16(__m512i* r) {
  __m512i a[16], b[16];
  for (int k = 0; k < 8; k++) {
    a[2 * k] = _mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
    a[2 * k + 1] = _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
  }
  // b[4k + j], 128-bit lane L: column 4L + j of rows 4k .. 4k+3.
  for (int k = 0; k < 4; k++) {
    b[4 * k] = _mm512_unpacklo_epi64(a[4 * k], a[4 * k + 2]);
    b[4 * k + 1] = _mm512_unpackhi_epi64(a[4 * k], a[4 * k + 2]);
    b[4 * k + 2] = _mm512_unpacklo_epi64(a[4 * k + 1], a[4 * k + 3]);
    b[4 * k + 3] = _mm512_unpackhi_epi64(a[4 * k + 1], a[4 * k + 3]);
  }
  for (int j = 0; j < 4; j++) {
    const __m512i x0 = _mm512_shuffle_i32x4(b[j], b[4 + j], 0x44), x1 = _mm512_shuffle_i32x4(b[j], b[4 + j], 0xEE);
    const __m512i x2 = _mm512_shuffle_i32x4(b[8 + j], b[12 + j], 0x44), x3 = _mm512_shuffle_i32x4(b[8 + j], b[12 + j], 0xEE);
    r[j] = _mm512_shuffle_i32x4(x0, x2, 0x88);
    r[4 + j] = _mm512_shuffle_i32x4(x0, x2, 0xDD);
    r[8 + j] = _mm512_shuffle_i32x4(x1, x3, 0x88);
    r[12 + j] = _mm512_shuffle_i32x4(x1, x3, 0xDD);
  }
}

void pack_tiles(const float* x, int64_t T, int64_t K, int64_t tile0, int64_t tile1, float* buf) {
  for (int64_t tile = tile0; tile < tile1; tile++) {
    uint32_t* dst = reinterpret_cast<uint32_t*>(buf) + tile * kTileTokens * K;
    for (int64_t k = 0; k < K; k += 32) {
      const int64_t left = K - k;  // even, > 0
      // Per token, its 16 column pairs k .. k+31 as u32 (hi and lo); then transposed to 16 tokens per pair.
      __m512i hi[kTileTokens], lo[kTileTokens];
      for (int64_t tt = 0; tt < kTileTokens; tt++) {
        const int64_t t = tile * kTileTokens + tt;
        __m512 a = _mm512_setzero_ps(), b = a;
        if (t < T) {
          a = _mm512_maskz_loadu_ps(lanes(left), x + t * K + k);
          if (left > 16) b = _mm512_maskz_loadu_ps(lanes(left - 16), x + t * K + k + 16);
        }
        split32(a, b, hi[tt], lo[tt]);
      }
      transpose16(hi);
      transpose16(lo);
      const int64_t pairs = std::min<int64_t>(16, left / 2);
      for (int64_t p = 0; p < pairs; p++) {
        uint32_t* at = dst + (k / 2 + p) * 2 * kTileTokens;
        _mm512_storeu_si512(at, hi[p]);
        _mm512_storeu_si512(at + kTileTokens, lo[p]);
      }
    }
  }
}

inline __m512bh broadcast_pair(const uint16_t* w) {
  int v;
  std::memcpy(&v, w, sizeof v);  // two adjacent bf16 weights; rows need not be 4-byte aligned
  return reinterpret_cast<__m512bh>(_mm512_set1_epi32(v));
}

// out[t * ldo + i] = dot(row i, token t) for RB rows (row i at w + i * K) and the n live tokens of one tile.
// Meanwhile, up to one cache line per two column pairs of [pf, pf + pf_bytes) is prefetched into L2 (the coded
// rows decoded next: their reads then overlap this compute instead of following it).
template <int RB>
inline void tile_rows(const uint16_t* w, int64_t K, const uint32_t* tile, float* out, int64_t ldo, int64_t n,
                      const uint8_t* pf = nullptr, int64_t pf_bytes = 0) {
  __m512 ah[RB], al[RB];
  for (int i = 0; i < RB; i++) ah[i] = al[i] = _mm512_setzero_ps();
  const int64_t pairs = K / 2;
  for (int64_t p = 0; p < pairs; p++) {
    if (p % 2 == 0 && p * 32 < pf_bytes) _mm_prefetch(reinterpret_cast<const char*>(pf + p * 32), _MM_HINT_T1);
    const uint32_t* xp = tile + p * 2 * kTileTokens;
    const __m512bh xh = reinterpret_cast<__m512bh>(_mm512_loadu_si512(xp));
    const __m512bh xl = reinterpret_cast<__m512bh>(_mm512_loadu_si512(xp + kTileTokens));
    for (int i = 0; i < RB; i++) {
      const __m512bh wv = broadcast_pair(w + i * K + 2 * p);
      ah[i] = _mm512_dpbf16_ps(ah[i], xh, wv);
      al[i] = _mm512_dpbf16_ps(al[i], xl, wv);
    }
  }
  for (int i = 0; i < RB; i++) {
    alignas(64) float sum[kTileTokens];
    _mm512_store_ps(sum, _mm512_add_ps(ah[i], al[i]));
    for (int64_t t = 0; t < n; t++) out[t * ldo + i] = sum[t];
  }
}

// A tile's first N live tokens (N <= 8) against 16 rows (row i at rows + i * K, K a multiple of 32), with the
// rows as the 16 lanes: per column pair, one transposed weight vector meets each token's broadcast hi and lo
// pair. A tile of at most 8 live tokens costs half the vdpbf16ps of tile_rows, whose lanes are the 16 tokens.
// Each lane accumulates its row's pairs in the same order as tile_rows, so the results are the same bits.
template <int N>
void lanes_rows16(const uint16_t* rows, int64_t K, const uint32_t* tile, float* out, int64_t ldo) {
  __m512 ah[N], al[N];
  for (int t = 0; t < N; t++) ah[t] = al[t] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 32) {
    __m512i w[16];
    for (int i = 0; i < 16; i++) w[i] = _mm512_loadu_si512(rows + i * K + k);
    transpose16(w);  // w[j], lane i: row i's pair k / 2 + j
    for (int j = 0; j < 16; j++) {
      const uint32_t* xp = tile + (k / 2 + j) * 2 * kTileTokens;
      for (int t = 0; t < N; t++) {
        const __m512bh xh = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(xp[t])));
        const __m512bh xl = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(xp[kTileTokens + t])));
        ah[t] = _mm512_dpbf16_ps(ah[t], xh, reinterpret_cast<__m512bh>(w[j]));
        al[t] = _mm512_dpbf16_ps(al[t], xl, reinterpret_cast<__m512bh>(w[j]));
      }
    }
  }
  for (int t = 0; t < N; t++) _mm512_storeu_ps(out + t * ldo, _mm512_add_ps(ah[t], al[t]));
}

void lanes_rows16(int64_t n, const uint16_t* rows, int64_t K, const uint32_t* tile, float* out, int64_t ldo) {
  switch (n) {
    case 1: return lanes_rows16<1>(rows, K, tile, out, ldo);
    case 2: return lanes_rows16<2>(rows, K, tile, out, ldo);
    case 3: return lanes_rows16<3>(rows, K, tile, out, ldo);
    case 4: return lanes_rows16<4>(rows, K, tile, out, ldo);
    case 5: return lanes_rows16<5>(rows, K, tile, out, ldo);
    case 6: return lanes_rows16<6>(rows, K, tile, out, ldo);
    case 7: return lanes_rows16<7>(rows, K, tile, out, ldo);
    default: return lanes_rows16<8>(rows, K, tile, out, ldo);
  }
}

// Coded weights: blocks of rows decoded into a per-thread buffer that stands in for them, while the first tile's
// pass prefetches the coded bytes of the next block. When the last tile has at most 8 live tokens (an expert's
// tokens rarely fill whole tiles), blocks are 16 rows and that tile goes through lanes_rows16.
void matmul_tiles_coded(const CodedBf16& c, int64_t r0, int64_t r1, const uint32_t* base, int64_t T, float* out,
                        int64_t ldo) {
  const int64_t K = c.cols;
  const int64_t last = (T - 1) / kTileTokens * kTileTokens, n_last = T - last;
  const int64_t block = n_last <= 8 ? 2 * kTileRows : kTileRows;
  uint16_t* rows = coded::row_buffer(static_cast<size_t>(block * K));
  for (int64_t b0 = r0; b0 < r1; b0 += block) {
    const int64_t b1 = std::min(r1, b0 + block);
    coded::decode_rows(c, b0, b1, rows);
    const int64_t next = std::min(r1 - b1, block) * c.stride;
    const bool lanes_tail = b1 - b0 == 16 && n_last <= 8;
    for (int64_t t0 = 0; t0 < T; t0 += kTileTokens) {
      const uint32_t* tile = base + t0 * K;
      const int64_t n = std::min(kTileTokens, T - t0);
      float* o = out + t0 * ldo + (b0 - r0);
      if (lanes_tail && t0 == last) {
        lanes_rows16(n, rows, K, tile, o, ldo);
        continue;
      }
      int64_t r = b0;
      for (; r + kTileRows <= b1; r += kTileRows) {
        const uint8_t* pf = t0 == 0 && r == b0 && next > 0 ? c.row(b1) : nullptr;
        tile_rows<kTileRows>(rows + (r - b0) * K, K, tile, o + (r - b0), ldo, n, pf, pf ? next : 0);
      }
      for (; r < b1; r++) tile_rows<1>(rows + (r - b0) * K, K, tile, o + (r - b0), ldo, n);
    }
  }
}

void matmul_tiles(const Matrix& w, int64_t r0, int64_t r1, const float* tiles, int64_t T, float* out, int64_t ldo) {
  const int64_t K = w.cols;
  const auto* base = reinterpret_cast<const uint32_t*>(tiles);
  if (w.coded) {
    matmul_tiles_coded(*w.coded, r0, r1, base, T, out, ldo);
    return;
  }
  const auto* rows = static_cast<const uint16_t*>(w.data);
  for (int64_t c0 = r0; c0 < r1; c0 += kChunkRows) {
    const int64_t c1 = std::min(r1, c0 + kChunkRows);
    for (int64_t t0 = 0; t0 < T; t0 += kTileTokens) {
      const uint32_t* tile = base + t0 * K;
      const int64_t n = std::min(kTileTokens, T - t0);
      float* o = out + t0 * ldo - r0;
      int64_t r = c0;
      for (; r + kTileRows <= c1; r += kTileRows) tile_rows<kTileRows>(rows + r * K, K, tile, o + r, ldo, n);
      for (; r < c1; r++) tile_rows<1>(rows + r * K, K, tile, o + r, ldo, n);
    }
  }
}

inline __mmask32 lanes32(int64_t n) { return n >= 32 ? ~static_cast<__mmask32>(0) : (static_cast<__mmask32>(1) << n) - 1; }

// x (n floats) as bf16 hi and lo halves: x = hi + lo to about 2^-17.
void split_row(const float* x, int64_t n, uint16_t* hi, uint16_t* lo) {
  for (int64_t k = 0; k < n; k += 32) {
    const int64_t left = n - k;
    const __m512 a = _mm512_maskz_loadu_ps(lanes(left), x + k);
    const __m512 b = left > 16 ? _mm512_maskz_loadu_ps(lanes(left - 16), x + k + 16) : _mm512_setzero_ps();
    __m512i h, l;
    split32(a, b, h, l);
    _mm512_mask_storeu_epi16(hi + k, lanes32(left), h);
    _mm512_mask_storeu_epi16(lo + k, lanes32(left), l);
  }
}

// out[j] = dot(row j, x) for NR consecutive rows (row j at w + j·K), x given as its hi and lo bf16 rows.
template <int NR>
inline void dot_rows(const uint16_t* w, int64_t K, const uint16_t* hi, const uint16_t* lo, float* out) {
  __m512 ah[NR], al[NR];
  for (int j = 0; j < NR; j++) ah[j] = al[j] = _mm512_setzero_ps();
  auto step = [&](int64_t k, auto load) {
    const __m512bh xh = reinterpret_cast<__m512bh>(load(hi + k));
    const __m512bh xl = reinterpret_cast<__m512bh>(load(lo + k));
    for (int j = 0; j < NR; j++) {
      const __m512bh wv = reinterpret_cast<__m512bh>(load(w + j * K + k));
      ah[j] = _mm512_dpbf16_ps(ah[j], wv, xh);
      al[j] = _mm512_dpbf16_ps(al[j], wv, xl);
    }
  };
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) step(k, [](const uint16_t* p) { return _mm512_loadu_si512(p); });
  if (k < K) {
    const __mmask32 m = lanes32(K - k);  // masked loads only for the tail: they are slower on some cores
    step(k, [m](const uint16_t* p) { return _mm512_maskz_loadu_epi16(m, p); });
  }
  for (int j = 0; j < NR; j++) out[j] = _mm512_reduce_add_ps(_mm512_add_ps(ah[j], al[j]));
}

// Coded weights, any number of tokens (the tiled path takes 6 and more), in groups of up to 4.
void matmul_rows_coded(const CodedBf16& c, int64_t r0, int64_t r1, const float* x, int64_t T, float* out, int64_t ldo,
                       float* scratch) {
  const int64_t K = c.cols;
  auto* hi = reinterpret_cast<uint16_t*>(scratch);
  uint16_t* lo = hi + 4 * K;
  for (int64_t t0 = 0; t0 < T; t0 += 4) {
    const int64_t nt = std::min<int64_t>(4, T - t0);
    for (int64_t t = 0; t < nt; t++) split_row(x + (t0 + t) * K, K, hi + t * K, lo + t * K);
    const float* xt = x + t0 * K;
    float* o = out + t0 * ldo;
    switch (nt) {
      case 1: coded::rows_for_tokens<1>(c, r0, r1, xt, hi, lo, o, ldo); break;
      case 2: coded::rows_for_tokens<2>(c, r0, r1, xt, hi, lo, o, ldo); break;
      case 3: coded::rows_for_tokens<3>(c, r0, r1, xt, hi, lo, o, ldo); break;
      default: coded::rows_for_tokens<4>(c, r0, r1, xt, hi, lo, o, ldo); break;
    }
  }
}

// Few tokens (decode, and experts that got few tokens of a step): memory-bound row dots. Each token is split
// once into hi/lo bf16 rows; then per row quad and token, one weight load feeds two vdpbf16ps per 32 columns
// (the avx512 set widens every weight to f32 first, twice the instructions for the same bytes).
void matmul_rows_bf16(const Matrix& w, int64_t r0, int64_t r1, const float* x, int64_t T, float* out, int64_t ldo,
                      float* scratch) {
  const int64_t K = w.cols;
  if (w.coded) {
    matmul_rows_coded(*w.coded, r0, r1, x, T, out, ldo, scratch);
    return;
  }
  if (w.dtype != DType::BF16 || T > 4) {
    kernels_avx512().matmul_rows(w, r0, r1, x, T, out, ldo, scratch);
    return;
  }
  // scratch: 4 × K floats = room for the hi and lo rows of 4 tokens.
  auto* hi = reinterpret_cast<uint16_t*>(scratch);
  uint16_t* lo = hi + 4 * K;
  for (int64_t t = 0; t < T; t++) split_row(x + t * K, K, hi + t * K, lo + t * K);
  const auto* rows = static_cast<const uint16_t*>(w.data);
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4)
    for (int64_t t = 0; t < T; t++) dot_rows<4>(rows + r * K, K, hi + t * K, lo + t * K, out + t * ldo + (r - r0));
  for (; r < r1; r++)
    for (int64_t t = 0; t < T; t++) dot_rows<1>(rows + r * K, K, hi + t * K, lo + t * K, out + t * ldo + (r - r0));
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
