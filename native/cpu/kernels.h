// The CPU's innermost loops, one set per instruction-set level, chosen once at run time (cpu-features.cpp).
// Every set computes the same math in f32 (weights widened exactly from bf16/f16); only summation order differs.
#pragma once
#include <cstdint>

#include "core/weights.h"

namespace moe {

struct KernelSet {
  const char* name;
  // out[t * ldo + (r - r0)] = dot(W row r, X row t) for r in [r0, r1), t in [0, T); X is T × W.cols, dense.
  // scratch holds at least 4 × W.cols floats.
  void (*matmul_rows)(const Matrix& w, int64_t r0, int64_t r1, const float* x, int64_t T, float* out, int64_t ldo,
                      float* scratch);
  float (*dot)(const float* a, const float* b, int64_t n);
  // y += a * x
  void (*axpy)(float a, const float* x, float* y, int64_t n);
  // dst[i] = widen(src[i])
  void (*to_f32)(const void* src, DType dt, float* dst, int64_t n);
};

const KernelSet& kernels_scalar();
const KernelSet& kernels_avx2();
const KernelSet& kernels_avx512();

// The best set this CPU runs (or the one named by MOESERVE_SIMD=scalar|avx2|avx512, capped to what the CPU has).
const KernelSet& select_kernels();
// "avx512bf16", "avx512", "avx2" or "scalar": what the CPU offers.
const char* cpu_simd_level();

}  // namespace moe
