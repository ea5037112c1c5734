// AVX-512 kernels (F + BW + VL). Compiled with -mavx512f -mavx512bw -mavx512vl -mfma; only called after
// cpu-features.cpp has checked the CPU. bf16 is widened exactly (shift into the high half), f16 by vcvtph2ps.
#include <immintrin.h>

#include <cstring>

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

// Four f32 rows against one x row: each x load feeds four FMAs.
inline void dot4(const float* w0, const float* w1, const float* w2, const float* w3, const float* x, int64_t n,
                 float* out) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 xv = _mm512_loadu_ps(x + i);
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + i), xv, a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + i), xv, a1);
    a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + i), xv, a2);
    a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + i), xv, a3);
  }
  if (i < n) {
    __mmask16 m = tail_mask(n - i);
    __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
    a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w0 + i), xv, a0);
    a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w1 + i), xv, a1);
    a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w2 + i), xv, a2);
    a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w3 + i), xv, a3);
  }
  out[0] = _mm512_reduce_add_ps(a0);
  out[1] = _mm512_reduce_add_ps(a1);
  out[2] = _mm512_reduce_add_ps(a2);
  out[3] = _mm512_reduce_add_ps(a3);
}

void matmul_rows(const Matrix& w, int64_t r0, int64_t r1, const float* x, int64_t T, float* out, int64_t ldo,
                 float* scratch) {
  const int64_t K = w.cols;
  int64_t r = r0;
  if (T >= 4) {
    // Widen four rows once into scratch, then reuse them for every token.
    for (; r + 4 <= r1; r += 4) {
      const float* rows[4];
      for (int j = 0; j < 4; j++) {
        if (w.dtype == DType::F32) {
          rows[j] = static_cast<const float*>(w.row(r + j));
        } else {
          to_f32(w.row(r + j), w.dtype, scratch + j * K, K);
          rows[j] = scratch + j * K;
        }
      }
      float res[4];
      for (int64_t t = 0; t < T; t++) {
        dot4(rows[0], rows[1], rows[2], rows[3], x + t * K, K, res);
        float* o = out + t * ldo + (r - r0);
        o[0] = res[0];
        o[1] = res[1];
        o[2] = res[2];
        o[3] = res[3];
      }
    }
  }
  for (; r < r1; r++) {
    for (int64_t t = 0; t < T; t++) out[t * ldo + (r - r0)] = dot_w(w.row(r), w.dtype, x + t * K, K);
  }
}

}  // namespace

const KernelSet& kernels_avx512() {
  static const KernelSet k{"avx512", matmul_rows, dot, axpy, to_f32};
  return k;
}

}  // namespace moe
