// Portable kernels: plain loops the compiler may vectorise for the baseline ISA. The reference for the others.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/half.h"
#include "cpu/kernels.h"

namespace moe {
namespace {

void to_f32(const void* src, DType dt, float* dst, int64_t n) {
  const uint16_t* h = static_cast<const uint16_t*>(src);
  switch (dt) {
    case DType::F32: std::memcpy(dst, src, n * sizeof(float)); break;
    case DType::BF16: for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32(h[i]); break;
    case DType::F16: for (int64_t i = 0; i < n; i++) dst[i] = f16_to_f32(h[i]); break;
  }
}

inline float widen(float x) { return x; }
inline float widen(uint16_t h) { return bf16_to_f32(h); }

// b is f32 or bf16 (the KV cache), its elements `step` apart; one summation order for all.
template <class B>
float dot_t(const float* a, const B* b, int64_t n, int64_t step = 1) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) acc[j] += a[i + j] * widen(b[(i + j) * step]);
  float s = 0;
  for (; i < n; i++) s += a[i] * widen(b[i * step]);
  for (int j = 0; j < 8; j++) s += acc[j];
  return s;
}

float dot(const float* a, const float* b, int64_t n) { return dot_t(a, b, n); }

template <class X>
void axpy_t(float a, const X* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += a * widen(x[i]);
}

void axpy(float a, const float* x, float* y, int64_t n) { axpy_t(a, x, y, n); }

template <class KV>
void attn_scores_t(const float* q, int group, int hd, const KV* k, int64_t stride, int64_t n, float scale,
                   float* scores, int64_t ld) {
  for (int64_t j = 0; j < n; j++)
    for (int g = 0; g < group; g++) scores[g * ld + j] = dot_t(q + g * hd, k + j * stride, hd) * scale;
}

template <class KV>
void attn_values_t(const float* p, int group, int64_t ld, const KV* v, int64_t stride, int64_t n, int hd,
                   float* out) {
  for (int g = 0; g < group; g++)
    for (int64_t j = 0; j < n; j++) axpy_t(p[g * ld + j], v + j * stride, out + g * hd, hd);
}

void matmul_rows(const Matrix& w, int64_t r0, int64_t r1, const float* x, int64_t T, float* out, int64_t ldo,
                 float* scratch) {
  const int64_t K = w.cols;
  for (int64_t r = r0; r < r1; r++) {
    const float* row;
    if (w.dtype == DType::F32) {
      row = static_cast<const float*>(w.row(r));
    } else {
      to_f32(w.row(r), w.dtype, scratch, K);
      row = scratch;
    }
    for (int64_t t = 0; t < T; t++) out[t * ldo + (r - r0)] = dot(row, x + t * K, K);
  }
}

}  // namespace

float max_scalar(const float* x, int64_t n) {
  float m = x[0];
  for (int64_t i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

float exp_sum_scalar(const float* x, int64_t n, float shift, float scale, float* out) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) {
    const float e = std::exp((x[i] - shift) * scale);
    if (out) out[i] = e;
    s += e;
  }
  return static_cast<float>(s);
}

void attn_scores_scalar(const float* q, int group, int hd, const float* k, int64_t stride, int64_t n, float scale,
                        float* scores, int64_t ld) {
  attn_scores_t(q, group, hd, k, stride, n, scale, scores, ld);
}

void attn_values_scalar(const float* p, int group, int64_t ld, const float* v, int64_t stride, int64_t n, int hd,
                        float* out) {
  attn_values_t(p, group, ld, v, stride, n, hd, out);
}

void attn_scores_bf16_scalar(const float* q, int group, int hd, const uint16_t* k, int64_t stride, int64_t n,
                             float scale, float* scores, int64_t ld) {
  attn_scores_t(q, group, hd, k, stride, n, scale, scores, ld);
}

void attn_values_bf16_scalar(const float* p, int group, int64_t ld, const uint16_t* v, int64_t stride, int64_t n,
                             int hd, float* out) {
  attn_values_t(p, group, ld, v, stride, n, hd, out);
}

void attn_scores_kt_scalar(const float* q, int group, int hd, const float* kt, int64_t ldk, int64_t n, float scale,
                           float* scores, int64_t ld) {
  for (int64_t j = 0; j < n; j++)
    for (int g = 0; g < group; g++) scores[g * ld + j] = dot_t(q + g * hd, kt + j, hd, ldk) * scale;
}

void attn_softmax_scalar(float* s, int64_t rows, int64_t n, float* m, float* l, float* o, int hd) {
  for (int64_t r = 0; r < rows; r++) {
    float* sr = s + r * n;
    const float mx = std::max(m[r], max_scalar(sr, n));
    const float c = std::exp(m[r] - mx);
    l[r] = l[r] * c + exp_sum_scalar(sr, n, mx, 1.0f, sr);
    if (c != 1.0f)
      for (int i = 0; i < hd; i++) o[r * hd + i] *= c;
    m[r] = mx;
  }
}

void silu_mul_scalar(float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

const KernelSet& kernels_scalar() {
  static const KernelSet k{"scalar", matmul_rows, dot, axpy, to_f32, max_scalar, exp_sum_scalar,
                           attn_scores_scalar, attn_values_scalar, silu_mul_scalar, attn_scores_bf16_scalar,
                           attn_values_bf16_scalar, attn_softmax_scalar, attn_scores_kt_scalar};
  return k;
}

}  // namespace moe
