// AVX-512 kernels (F + BW + VL). Compiled with -mavx512f -mavx512bw -mavx512vl -mfma; only called after
// cpu-features.cpp has checked the CPU. bf16 is widened exactly (shift into the high half), f16 by vcvtph2ps.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "cpu/kernels.h"

namespace moe {
namespace {

inline __mmask16 tail_mask(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

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

// r[j] = Σ lanes of v[j] for j < 16: a transpose-and-add tree, 45 instructions for 16 sums (16 separate
// horizontal reductions would take about three times as many).
inline __m512 reduce16(const __m512* v) {
  __m512 a[8], b[4];
  for (int i = 0; i < 8; i++) a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; i++) {
    const __m512d x = _mm512_castps_pd(a[2 * i]), y = _mm512_castps_pd(a[2 * i + 1]);
    b[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  // b[i] holds, in each 128-bit lane, that lane's sums of v[4i .. 4i+3]; add the four lanes.
  const __m512 d01 = _mm512_add_ps(_mm512_shuffle_f32x4(b[0], b[1], 0x44), _mm512_shuffle_f32x4(b[0], b[1], 0xEE));
  const __m512 d23 = _mm512_add_ps(_mm512_shuffle_f32x4(b[2], b[3], 0x44), _mm512_shuffle_f32x4(b[2], b[3], 0xEE));
  return _mm512_add_ps(_mm512_shuffle_f32x4(d01, d23, 0x88), _mm512_shuffle_f32x4(d01, d23, 0xDD));
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

template <class KV>
void attn_values_t(const float* p, int group, int64_t ld, const KV* v, int64_t stride, int64_t n, int hd,
                   float* out) {
  for (int g = 0; g < group; g++) {
    const float* pg = p + g * ld;
    float* og = out + g * hd;
    for (int i = 0; i < hd; i += 64) {  // 4 accumulators of 16 per pass over the slots
      const int w = hd - i < 64 ? hd - i : 64;
      __mmask16 m[4];
      __m512 acc[4];
      for (int c = 0; c < 4; c++) {
        const int left = w - 16 * c;
        m[c] = left >= 16 ? static_cast<__mmask16>(0xffff) : left > 0 ? tail_mask(left) : static_cast<__mmask16>(0);
        acc[c] = _mm512_maskz_loadu_ps(m[c], og + i + 16 * c);
      }
      for (int64_t j = 0; j < n; j++) {
        const __m512 pj = _mm512_set1_ps(pg[j]);
        const KV* vj = v + j * stride + i;
        for (int c = 0; c < 4; c++) acc[c] = _mm512_fmadd_ps(pj, load_kv(vj + 16 * c, m[c]), acc[c]);
      }
      for (int c = 0; c < 4; c++) _mm512_mask_storeu_ps(og + i + 16 * c, m[c], acc[c]);
    }
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
                           attn_values512, silu_mul512, attn_scores512_bf16, attn_values512_bf16};
  return k;
}

}  // namespace moe
