// AVX-512 kernels (F + BW + VL). Compiled with -mavx512f -mavx512bw -mavx512vl -mfma; only called after
// cpu-features.cpp has checked the CPU. bf16 is widened exactly (shift into the high half), f16 by vcvtph2ps.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "cpu/kernels.h"

namespace moe {
namespace {

inline __mmask16 tail_mask(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

// f(integral_constant<int, 0>), ..., f(integral_constant<int, N - 1>): indices known before GCC's scalar replacement
// of aggregates, so that arrays of registers indexed by them stay in registers across a loop (with plain loops
// GCC 12 keeps such arrays in memory and stores every accumulator on every iteration).
template <class F, int... I>
inline void unroll_(F&& f, std::integer_sequence<int, I...>) { (f(std::integral_constant<int, I>()), ...); }
template <int N, class F>
inline void unroll(F&& f) { unroll_(f, std::make_integer_sequence<int, N>()); }

inline __m512 load_w(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::BF16: {
      __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i));
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case DType::F16:
      return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i)));
    default:
      return _mm512_loadu_ps(static_cast<const float*>(p) + i);
  }
}

inline __m512 load_w_tail(const void* p, DType dt, int64_t i, __mmask16 m) {
  switch (dt) {
    case DType::BF16: {
      __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + i);
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case DType::F16:
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + i));
    default:
      return _mm512_maskz_loadu_ps(m, static_cast<const float*>(p) + i);
  }
}

void to_f32(const void* src, DType dt, float* dst, int64_t n) {
  if (dt == DType::F32) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, load_w(src, dt, i));
  if (i < n) {
    __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(dst + i, m, load_w_tail(src, dt, i, m));
  }
}

// dot of a weight row of any dtype with an f32 vector; four accumulators hide FMA latency.
inline float dot_w(const void* w, DType dt, const float* x, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    a0 = _mm512_fmadd_ps(load_w(w, dt, i), _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(load_w(w, dt, i + 16), _mm512_loadu_ps(x + i + 16), a1);
    a2 = _mm512_fmadd_ps(load_w(w, dt, i + 32), _mm512_loadu_ps(x + i + 32), a2);
    a3 = _mm512_fmadd_ps(load_w(w, dt, i + 48), _mm512_loadu_ps(x + i + 48), a3);
  }
  for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(load_w(w, dt, i), _mm512_loadu_ps(x + i), a0);
  if (i < n) {
    __mmask16 m = tail_mask(n - i);
    a1 = _mm512_fmadd_ps(load_w_tail(w, dt, i, m), _mm512_maskz_loadu_ps(m, x + i), a1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

float dot(const float* a, const float* b, int64_t n) { return dot_w(a, DType::F32, b, n); }

void axpy(float a, const float* x, float* y, int64_t n) {
  __m512 av = _mm512_set1_ps(a);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  if (i < n) {
    __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

// The one summation order of this set's matmuls, whatever the number of tokens (batch invariance: a token's
// result is the same bits alone or in a batch): per (row, token), one accumulator of 16 lanes over the columns
// in steps of 16 (the last step masked with zeros), weights widened exactly to f32, then _mm512_reduce_add_ps.
// The kernels below differ only in how many rows and tokens run side by side.

// NR weight rows (w[j], of dtype DT, widened as they are read) against NT x rows (x[t]): out[t * ldo + j].
template <int NR, int NT, DType DT>
inline void dot_block(const void* const* w, const float* const* x, int64_t n, float* out, int64_t ldo) {
  __m512 a[NT][NR];
  for (int t = 0; t < NT; t++)
    for (int j = 0; j < NR; j++) a[t][j] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    __m512 xv[NT];
    for (int t = 0; t < NT; t++) xv[t] = _mm512_loadu_ps(x[t] + k);
    for (int j = 0; j < NR; j++) {
      const __m512 wv = load_w(w[j], DT, k);
      for (int t = 0; t < NT; t++) a[t][j] = _mm512_fmadd_ps(wv, xv[t], a[t][j]);
    }
  }
  if (k < n) {
    const __mmask16 m = tail_mask(n - k);
    __m512 xv[NT];
    for (int t = 0; t < NT; t++) xv[t] = _mm512_maskz_loadu_ps(m, x[t] + k);
    for (int j = 0; j < NR; j++) {
      const __m512 wv = load_w_tail(w[j], DT, k, m);
      for (int t = 0; t < NT; t++) a[t][j] = _mm512_fmadd_ps(wv, xv[t], a[t][j]);
    }
  }
  for (int t = 0; t < NT; t++)
    for (int j = 0; j < NR; j++) out[t * ldo + j] = _mm512_reduce_add_ps(a[t][j]);
}

// Four rows against 1-3 tokens, widened as they are read (the decode case: each weight is read once).
template <DType DT>
inline void quad_few(const void* const* rows, const float* x, int64_t T, int64_t K, float* o, int64_t ldo) {
  if (T >= 2) {
    const float* xs[2] = {x, x + K};
    dot_block<4, 2, DT>(rows, xs, K, o, ldo);
  }
  if (T % 2) {
    const float* xs[1] = {x + (T - 1) * K};
    dot_block<4, 1, DT>(rows, xs, K, o + (T - 1) * ldo, ldo);
  }
}

// Tokens are taken in tiles so a tile of x stays in L2 while every row quad of the chunk passes over it.
constexpr int64_t kTokenTile = 32;

// One weight row of any dtype (widened as it is read) against one x row, in the same order.
inline float dot_row(const void* w, DType dt, const float* x, int64_t n) {
  __m512 a = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) a = _mm512_fmadd_ps(load_w(w, dt, k), _mm512_loadu_ps(x + k), a);
  if (k < n) {
    const __mmask16 m = tail_mask(n - k);
    a = _mm512_fmadd_ps(load_w_tail(w, dt, k, m), _mm512_maskz_loadu_ps(m, x + k), a);
  }
  return _mm512_reduce_add_ps(a);
}

// Rows in quads against 4, 2 or 1 tokens at a time: with 4 tokens or more, each quad is widened once into scratch
// (unless f32) for all of them; with fewer, widened as it is read. The rows after the last quad of [r0, r1) go one
// by one. Row ranges start at multiples of 4 (the callers' grains), so which rows form quads does not depend on
// the tokens either.
void matmul_rows(const Matrix& w, int64_t r0, int64_t r1, const float* x, int64_t T, float* out, int64_t ldo,
                 float* scratch) {
  const int64_t K = w.cols;
  const int64_t quads_end = r0 + (r1 - r0) / 4 * 4;
  if (T < 4) {
    for (int64_t r = r0; r < quads_end; r += 4) {
      const void* rows[4] = {w.row(r), w.row(r + 1), w.row(r + 2), w.row(r + 3)};
      float* o = out + (r - r0);
      switch (w.dtype) {
        case DType::BF16: quad_few<DType::BF16>(rows, x, T, K, o, ldo); break;
        case DType::F16: quad_few<DType::F16>(rows, x, T, K, o, ldo); break;
        default: quad_few<DType::F32>(rows, x, T, K, o, ldo); break;
      }
    }
  }
  for (int64_t t0 = 0; T >= 4 && t0 < T && quads_end > r0; t0 += kTokenTile) {
    const int64_t t1 = std::min(T, t0 + kTokenTile);
    for (int64_t r = r0; r < quads_end; r += 4) {
      const void* rows[4];
      for (int j = 0; j < 4; j++) {
        if (w.dtype == DType::F32) {
          rows[j] = w.row(r + j);
        } else {
          to_f32(w.row(r + j), w.dtype, scratch + j * K, K);
          rows[j] = scratch + j * K;
        }
      }
      float* o = out + (r - r0);
      int64_t t = t0;
      for (; t + 4 <= t1; t += 4) {
        const float* xs[4] = {x + t * K, x + (t + 1) * K, x + (t + 2) * K, x + (t + 3) * K};
        dot_block<4, 4, DType::F32>(rows, xs, K, o + t * ldo, ldo);
      }
      for (; t + 2 <= t1; t += 2) {
        const float* xs[2] = {x + t * K, x + (t + 1) * K};
        dot_block<4, 2, DType::F32>(rows, xs, K, o + t * ldo, ldo);
      }
      if (t < t1) {
        const float* xs[1] = {x + t * K};
        dot_block<4, 1, DType::F32>(rows, xs, K, o + t * ldo, ldo);
      }
    }
  }
  for (int64_t r = quads_end; r < r1; r++) {
    for (int64_t t = 0; t < T; t++) out[t * ldo + (r - r0)] = dot_row(w.row(r), w.dtype, x + t * K, K);
  }
}

// exp(x) to about 2 ulp: Cephes' expf polynomial on r = x - n·ln2, scaled by 2^n; below -103 exactly 0.
inline __m512 exp512(__m512 x) {
  const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-103.0f), _CMP_GE_OQ);
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-103.0f)), _mm512_set1_ps(88.7f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_mov_ps(live, _mm512_scalef_ps(p, n));
}

float max512(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
  float r = _mm512_reduce_max_ps(m);
  for (; i < n; i++) r = x[i] > r ? x[i] : r;
  return r;
}

float exp_sum512(const float* x, int64_t n, float shift, float scale, float* out) {
  const __m512 sh = _mm512_set1_ps(shift), sc = _mm512_set1_ps(scale);
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 e = exp512(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), sh), sc));
    if (out) _mm512_storeu_ps(out + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), sh), sc)));
    if (out) _mm512_mask_storeu_ps(out + i, m, e);
    acc = _mm512_add_ps(acc, e);
  }
  return _mm512_reduce_add_ps(acc);
}

struct AddOp {
  __m512 operator()(__m512 a, __m512 b) const { return _mm512_add_ps(a, b); }
};
struct MaxOp {
  __m512 operator()(__m512 a, __m512 b) const { return _mm512_max_ps(a, b); }
};

// r[j] = op over the lanes of v[j] for j < 16: a transpose-and-combine tree, 45 instructions for 16 reductions
// (16 separate horizontal reductions would take about three times as many). Every r[j] combines its lanes in the
// same tree whatever j and the other vectors (op commutes), so a row's result does not depend on its slot.
template <class Op = AddOp>
inline __m512 reduce16(const __m512* v, Op op = Op()) {
  __m512 a[8], b[4];
  for (int i = 0; i < 8; i++) a[i] = op(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; i++) {
    const __m512d x = _mm512_castps_pd(a[2 * i]), y = _mm512_castps_pd(a[2 * i + 1]);
    b[i] = op(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  // b[i] holds, in each 128-bit lane, that lane's results for v[4i .. 4i+3]; combine the four lanes.
  const __m512 d01 = op(_mm512_shuffle_f32x4(b[0], b[1], 0x44), _mm512_shuffle_f32x4(b[0], b[1], 0xEE));
  const __m512 d23 = op(_mm512_shuffle_f32x4(b[2], b[3], 0x44), _mm512_shuffle_f32x4(b[2], b[3], 0xEE));
  return op(_mm512_shuffle_f32x4(d01, d23, 0x88), _mm512_shuffle_f32x4(d01, d23, 0xDD));
}

// reduce16's tree for one vector, in every lane: within each quarter (l0 op l2) op (l1 op l3), then
// (Q0 op Q2) op (Q1 op Q3); so that a row reduced alone gets the bits it gets beside 15 others.
template <class Op = AddOp>
inline __m512 reduce1(__m512 v, Op op = Op()) {
  v = op(v, _mm512_permute_ps(v, 0x4E));
  v = op(v, _mm512_permute_ps(v, 0xB1));
  v = op(v, _mm512_shuffle_f32x4(v, v, 0x4E));
  return op(v, _mm512_shuffle_f32x4(v, v, 0xB1));
}

// A KV row's 16 elements from p (f32, or bf16 widened exactly), lanes off in m read as 0.
inline __m512 load_kv(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load_kv(const uint16_t* p, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

// dst[j] = scale · dot(qg, k + j·stride) for j < n ≤ 16; head_dim in C chunks of 16 (the last masked).
template <int C, class KV>
inline void scores16(const float* qg, int hd, const KV* k, int64_t stride, int64_t n, float scale, float* dst) {
  __m512 qv[C];
  __mmask16 m[C];
  for (int c = 0; c < C; c++) {
    const int left = hd - 16 * c;
    m[c] = left >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(left);
    qv[c] = _mm512_maskz_loadu_ps(m[c], qg + 16 * c);
  }
  __m512 acc[16];
  for (int j = 0; j < 16; j++) {
    acc[j] = _mm512_setzero_ps();
    if (j >= n) continue;
    const KV* kj = k + j * stride;
    for (int c = 0; c < C; c++) acc[j] = _mm512_fmadd_ps(qv[c], load_kv(kj + 16 * c, m[c]), acc[j]);
  }
  _mm512_mask_storeu_ps(dst, n >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(n),
                        _mm512_mul_ps(reduce16(acc), _mm512_set1_ps(scale)));
}

inline void scores_fallback(const float* qg, int hd, const float* k, int64_t stride, int64_t n, float scale, float* dst,
                            int64_t ld) {
  attn_scores_scalar(qg, 1, hd, k, stride, n, scale, dst, ld);
}
inline void scores_fallback(const float* qg, int hd, const uint16_t* k, int64_t stride, int64_t n, float scale,
                            float* dst, int64_t ld) {
  attn_scores_bf16_scalar(qg, 1, hd, k, stride, n, scale, dst, ld);
}

template <class KV>
void attn_scores_t(const float* q, int group, int hd, const KV* k, int64_t stride, int64_t n, float scale,
                   float* scores, int64_t ld) {
  const int chunks = (hd + 15) / 16;
  for (int g = 0; g < group; g++) {
    const float* qg = q + g * hd;
    for (int64_t j0 = 0; j0 < n; j0 += 16) {
      const int64_t len = std::min<int64_t>(16, n - j0);
      const KV* kb = k + j0 * stride;
      float* dst = scores + g * ld + j0;
      switch (chunks) {
        case 1: scores16<1>(qg, hd, kb, stride, len, scale, dst); break;
        case 2: scores16<2>(qg, hd, kb, stride, len, scale, dst); break;
        case 3: scores16<3>(qg, hd, kb, stride, len, scale, dst); break;
        case 4: scores16<4>(qg, hd, kb, stride, len, scale, dst); break;
        case 5: scores16<5>(qg, hd, kb, stride, len, scale, dst); break;
        case 6: scores16<6>(qg, hd, kb, stride, len, scale, dst); break;
        case 7: scores16<7>(qg, hd, kb, stride, len, scale, dst); break;
        case 8: scores16<8>(qg, hd, kb, stride, len, scale, dst); break;
        default: scores_fallback(qg, hd, kb, stride, len, scale, dst, ld);  // head_dim > 128
      }
    }
  }
}

// out[g·hd + i ..] += Σ_j p[g·ld + j] · v[j·stride + i ..] for G heads side by side and the pass's w ≤ 64 columns
// in C chunks of 16 (the last masked): each V row is loaded once for the G heads, and their independent
// accumulators hide the FMA latency. Every accumulator sums over j in order from out, whatever G and C.
template <int G, int C, class KV>
inline void values_pass(const float* p, int64_t ld, const KV* v, int64_t stride, int64_t n, int w, float* out, int hd) {
  __mmask16 m[C];
  __m512 acc[G][C];
  unroll<C>([&](auto c) { m[c] = w - 16 * c >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(w - 16 * c); });
  unroll<G>([&](auto g) { unroll<C>([&](auto c) { acc[g][c] = _mm512_maskz_loadu_ps(m[c], out + g * hd + 16 * c); }); });
  for (int64_t j = 0; j < n; j++) {
    __m512 vj[C];
    unroll<C>([&](auto c) { vj[c] = load_kv(v + j * stride + 16 * c, m[c]); });
    unroll<G>([&](auto g) {
      const __m512 pj = _mm512_set1_ps(p[g * ld + j]);
      unroll<C>([&](auto c) { acc[g][c] = _mm512_fmadd_ps(pj, vj[c], acc[g][c]); });
    });
  }
  unroll<G>([&](auto g) { unroll<C>([&](auto c) { _mm512_mask_storeu_ps(out + g * hd + 16 * c, m[c], acc[g][c]); }); });
}

template <int G, class KV>
inline void values_pass(const float* p, int64_t ld, const KV* v, int64_t stride, int64_t n, int w, float* out, int hd) {
  switch ((w + 15) / 16) {
    case 1: values_pass<G, 1>(p, ld, v, stride, n, w, out, hd); break;
    case 2: values_pass<G, 2>(p, ld, v, stride, n, w, out, hd); break;
    case 3: values_pass<G < 8 ? G : 4, 3>(p, ld, v, stride, n, w, out, hd); break;  // G = 8 only for w ≤ 32
    default: values_pass<G < 8 ? G : 4, 4>(p, ld, v, stride, n, w, out, hd); break;
  }
}

template <class KV>
void attn_values_t(const float* p, int group, int64_t ld, const KV* v, int64_t stride, int64_t n, int hd,
                   float* out) {
  for (int i = 0; i < hd; i += 64) {
    const int w = hd - i < 64 ? hd - i : 64;
    int g = 0;
    if (w <= 32)
      for (; g + 8 <= group; g += 8) values_pass<8>(p + g * ld, ld, v + i, stride, n, w, out + g * hd + i, hd);
    for (; g + 4 <= group; g += 4) values_pass<4>(p + g * ld, ld, v + i, stride, n, w, out + g * hd + i, hd);
    for (; g + 2 <= group; g += 2) values_pass<2>(p + g * ld, ld, v + i, stride, n, w, out + g * hd + i, hd);
    for (; g < group; g++) values_pass<1>(p + g * ld, ld, v + i, stride, n, w, out + g * hd + i, hd);
  }
}

// scores16's bits from a transposed block: lane j of p[d] is lane d of scores16's acc[j] (the same FMAs, a lane past
// head_dim adding 0·0), and the sums over d follow reduce16's tree: within each quarter (d0 + d2) + (d1 + d3), then
// (Q0 + Q2) + (Q1 + Q3). Adds replace reduce16's shuffles, and one q element is broadcast for the 16 keys.
// Full: hd = 16·C, so that p stays in registers (no lane past head_dim).
template <int C, bool Full>
inline void scores16_kt(const float* qg, int hd, const float* kt, int64_t ldk, int64_t n, float scale, float* dst) {
  const __mmask16 keys = n >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(n);
  __m512 p[16];
  for (int d = 0; d < 16; d++) p[d] = _mm512_setzero_ps();
  for (int c = 0; c < C; c++)
    for (int d = 0; d < 16; d++) {
      const int i = 16 * c + d;
      p[d] = Full || i < hd ? _mm512_fmadd_ps(_mm512_set1_ps(qg[i]), _mm512_maskz_loadu_ps(keys, kt + i * ldk), p[d])
                            : _mm512_add_ps(p[d], _mm512_setzero_ps());
    }
  __m512 quarter[4];
  for (int k = 0; k < 4; k++)
    quarter[k] = _mm512_add_ps(_mm512_add_ps(p[4 * k], p[4 * k + 2]), _mm512_add_ps(p[4 * k + 1], p[4 * k + 3]));
  const __m512 r = _mm512_add_ps(_mm512_add_ps(quarter[0], quarter[2]), _mm512_add_ps(quarter[1], quarter[3]));
  _mm512_mask_storeu_ps(dst, keys, _mm512_mul_ps(r, _mm512_set1_ps(scale)));
}

template <int C, bool Full>
void scores_kt(const float* q, int group, int hd, const float* kt, int64_t ldk, int64_t n, float scale, float* scores,
               int64_t ld) {
  for (int g = 0; g < group; g++)
    for (int64_t j0 = 0; j0 < n; j0 += 16)
      scores16_kt<C, Full>(q + g * hd, hd, kt + j0, ldk, std::min<int64_t>(16, n - j0), scale, scores + g * ld + j0);
}

void attn_scores512_kt(const float* q, int group, int hd, const float* kt, int64_t ldk, int64_t n, float scale,
                       float* scores, int64_t ld) {
  const bool full = hd % 16 == 0;
  switch ((hd + 15) / 16) {
    case 1: (full ? scores_kt<1, true> : scores_kt<1, false>)(q, group, hd, kt, ldk, n, scale, scores, ld); break;
    case 2: (full ? scores_kt<2, true> : scores_kt<2, false>)(q, group, hd, kt, ldk, n, scale, scores, ld); break;
    case 3: (full ? scores_kt<3, true> : scores_kt<3, false>)(q, group, hd, kt, ldk, n, scale, scores, ld); break;
    case 4: (full ? scores_kt<4, true> : scores_kt<4, false>)(q, group, hd, kt, ldk, n, scale, scores, ld); break;
    case 5: (full ? scores_kt<5, true> : scores_kt<5, false>)(q, group, hd, kt, ldk, n, scale, scores, ld); break;
    case 6: (full ? scores_kt<6, true> : scores_kt<6, false>)(q, group, hd, kt, ldk, n, scale, scores, ld); break;
    case 7: (full ? scores_kt<7, true> : scores_kt<7, false>)(q, group, hd, kt, ldk, n, scale, scores, ld); break;
    case 8: (full ? scores_kt<8, true> : scores_kt<8, false>)(q, group, hd, kt, ldk, n, scale, scores, ld); break;
    default:  // head_dim > 128, as attn_scores
      for (int g = 0; g < group; g++) attn_scores_kt_scalar(q + g * hd, 1, hd, kt, ldk, n, scale, scores + g * ld, ld);
  }
}

void attn_scores512(const float* q, int group, int hd, const float* k, int64_t stride, int64_t n, float scale,
                    float* scores, int64_t ld) {
  attn_scores_t(q, group, hd, k, stride, n, scale, scores, ld);
}
void attn_values512(const float* p, int group, int64_t ld, const float* v, int64_t stride, int64_t n, int hd,
                    float* out) {
  attn_values_t(p, group, ld, v, stride, n, hd, out);
}
void attn_scores512_bf16(const float* q, int group, int hd, const uint16_t* k, int64_t stride, int64_t n, float scale,
                         float* scores, int64_t ld) {
  attn_scores_t(q, group, hd, k, stride, n, scale, scores, ld);
}
void attn_values512_bf16(const float* p, int group, int64_t ld, const uint16_t* v, int64_t stride, int64_t n, int hd,
                         float* out) {
  attn_values_t(p, group, ld, v, stride, n, hd, out);
}

// o_r *= c_r for the lanes r of `scale`.
inline void rescale_rows(__mmask16 scale, const __m512 c, float* o, int hd) {
  alignas(64) float cs[16];
  _mm512_store_ps(cs, c);
  for (; scale; scale &= static_cast<__mmask16>(scale - 1)) {
    const int r = __builtin_ctz(scale);
    const __m512 cv = _mm512_set1_ps(cs[r]);
    for (int i = 0; i < hd; i += 16) {
      const __mmask16 mk = hd - i >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(hd - i);
      float* oi = o + static_cast<int64_t>(r) * hd + i;
      _mm512_mask_storeu_ps(oi, mk, _mm512_mul_ps(cv, _mm512_maskz_loadu_ps(mk, oi)));
    }
  }
}

// Blocks of 16 keys (the usual block size): 16 rows side by side, row r in lane r, so the maxima, the exps of the
// rescale factors, the sums and the new m and l are one vector op for the 16 (the latency of one row's chain was
// the cost). Lanes are independent and reduce16's tree is the same for every slot, so a row's bits do not depend
// on the rows beside it. Other block sizes: row by row, in the same math.
void attn_softmax512(float* s, int64_t rows, int64_t n, float* m, float* l, float* o, int hd) {
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  if (n != 16) {
    for (int64_t r = 0; r < rows; r++) {
      float* sr = s + r * n;
      __m512 vmax = ninf;
      for (int64_t i = 0; i < n; i += 16)
        vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(ninf, n - i >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(n - i), sr + i));
      const float mx = std::max(m[r], _mm512_reduce_max_ps(vmax));
      const __m512 c = exp512(_mm512_set1_ps(m[r] - mx)), mxv = _mm512_set1_ps(mx);
      __m512 acc = _mm512_setzero_ps();
      for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 mk = n - i >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(n - i);
        const __m512 e = _mm512_maskz_mov_ps(mk, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, sr + i), mxv)));
        _mm512_mask_storeu_ps(sr + i, mk, e);
        acc = _mm512_add_ps(acc, e);
      }
      l[r] = l[r] * _mm512_cvtss_f32(c) + _mm512_reduce_add_ps(acc);
      m[r] = mx;
      rescale_rows(_mm512_cmp_ps_mask(c, _mm512_set1_ps(1.0f), _CMP_NEQ_UQ) & 1, c, o + r * hd, hd);
    }
    return;
  }
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int k = static_cast<int>(std::min<int64_t>(16, rows - r0));
    const __mmask16 live = k == 16 ? static_cast<__mmask16>(0xffff) : tail_mask(k);
    float* sr = s + r0 * 16;
    if (k <= 4) {  // a few rows (decode): each alone, in the same lane-wise math and reduction trees
      for (int64_t r = r0; r < r0 + k; r++) {
        const __m512 v = _mm512_loadu_ps(s + r * 16), m_old = _mm512_set1_ps(m[r]);
        const __m512 m_new = _mm512_max_ps(m_old, reduce1(v, MaxOp()));
        const __m512 c = exp512(_mm512_sub_ps(m_old, m_new)), e = exp512(_mm512_sub_ps(v, m_new));
        _mm512_storeu_ps(s + r * 16, e);
        l[r] = _mm512_cvtss_f32(_mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(l[r]), c), reduce1(e)));
        m[r] = _mm512_cvtss_f32(m_new);
        rescale_rows(_mm512_cmp_ps_mask(c, _mm512_set1_ps(1.0f), _CMP_NEQ_UQ) & 1, c, o + r * hd, hd);
      }
      continue;
    }
    __m512 v[16];
    for (int i = 0; i < 16; i++) v[i] = i < k ? _mm512_loadu_ps(sr + i * 16) : _mm512_setzero_ps();
    const __m512 m_old = _mm512_maskz_loadu_ps(live, m + r0);
    const __m512 m_new = _mm512_max_ps(m_old, reduce16(v, MaxOp()));
    const __m512 c = exp512(_mm512_sub_ps(m_old, m_new));  // 0 where m was -inf, exactly 1 where it did not grow
    for (int i = 0; i < k; i++) {
      v[i] = exp512(_mm512_sub_ps(v[i], _mm512_permutexvar_ps(_mm512_set1_epi32(i), m_new)));
      _mm512_storeu_ps(sr + i * 16, v[i]);
    }
    _mm512_mask_storeu_ps(l + r0, live, _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(live, l + r0), c), reduce16(v)));
    _mm512_mask_storeu_ps(m + r0, live, m_new);
    rescale_rows(_mm512_mask_cmp_ps_mask(live, c, _mm512_set1_ps(1.0f), _CMP_NEQ_UQ), c, o + r0 * hd, hd);
  }
}

void silu_mul512(float* g, const float* u, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : tail_mask(n - i);
    const __m512 x = _mm512_maskz_loadu_ps(m, g + i);
    const __m512 s = _mm512_div_ps(x, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), x))));
    _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, u + i)));
  }
}

}  // namespace

const KernelSet& kernels_avx512() {
  static const KernelSet k{"avx512", matmul_rows, dot, axpy, to_f32, max512, exp_sum512, attn_scores512,
                           attn_values512, silu_mul512, attn_scores512_bf16, attn_values512_bf16,
                           attn_softmax512, attn_scores512_kt};
  return k;
}

}  // namespace moe
