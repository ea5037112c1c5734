// AVX2 + FMA + F16C kernels. Compiled with -mavx2 -mfma -mf16c; called only after cpu-features.cpp checked the CPU.
#include <immintrin.h>

#include <cstring>

#include "core/half.h"
#include "cpu/kernels.h"

namespace moe {
namespace {

inline __m256 load_w(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::BF16: {
      __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    case DType::F16:
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)));
    default:
      return _mm256_loadu_ps(static_cast<const float*>(p) + i);
  }
}

inline float scalar_w(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

void to_f32(const void* src, DType dt, float* dst, int64_t n) {
  if (dt == DType::F32) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_w(src, dt, i));
  for (; i < n; i++) dst[i] = scalar_w(src, dt, i);
}

inline float dot_w(const void* w, DType dt, const float* x, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(load_w(w, dt, i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(load_w(w, dt, i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(load_w(w, dt, i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(load_w(w, dt, i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load_w(w, dt, i), _mm256_loadu_ps(x + i), a0);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < n; i++) s += scalar_w(w, dt, i) * x[i];
  return s;
}

float dot(const float* a, const float* b, int64_t n) { return dot_w(a, DType::F32, b, n); }

void axpy(float a, const float* x, float* y, int64_t n) {
  __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] += a * x[i];
}

void matmul_rows(const Matrix& w, int64_t r0, int64_t r1, const float* x, int64_t T, float* out, int64_t ldo,
                 float* scratch) {
  const int64_t K = w.cols;
  for (int64_t r = r0; r < r1; r++) {
    const void* row = w.row(r);
    DType dt = w.dtype;
    if (T >= 4 && dt != DType::F32) {  // widen once, reuse for every token
      to_f32(row, dt, scratch, K);
      row = scratch;
      dt = DType::F32;
    }
    for (int64_t t = 0; t < T; t++) out[t * ldo + (r - r0)] = dot_w(row, dt, x + t * K, K);
  }
}

}  // namespace

const KernelSet& kernels_avx2() {
  static const KernelSet k{"avx2", matmul_rows, dot, axpy, to_f32, max_scalar, exp_sum_scalar, attn_scores_scalar,
                           attn_values_scalar, silu_mul_scalar, attn_scores_bf16_scalar,
                           attn_values_bf16_scalar, attn_softmax_scalar, attn_scores_kt_scalar};
  return k;
}

}  // namespace moe
