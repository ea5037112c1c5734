// RMSNorm (fp32, as the CPU: ms = mean(x²), inv = 1 / sqrt(ms + eps), o = x · inv · w), the fused residual add +
// RMSNorm, and the residual add. One block per row; the sum of squares is a fixed-order block reduction.
#include "cuda/cuda-check.h"
#include "cuda/kernels-cuda.h"
#include "cuda/reduce-cuda.h"

namespace moe {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) rmsnorm_kernel(const float* x, int64_t ldx, const int32_t* row_map, const float* w,
                                                           int dim, float eps, float* out, int64_t ldo) {
  __shared__ float sh[32];
  const int r = blockIdx.x;
  const float* xr = x + static_cast<int64_t>(row_map ? row_map[r] : r) * ldx;
  float* o = out + static_cast<int64_t>(r) * ldo;
  float ss = 0.0f;
  for (int c = threadIdx.x; c < dim; c += kThreads) ss += xr[c] * xr[c];
  const float ms = block_sum(ss, sh) / static_cast<float>(dim);
  const float inv = 1.0f / sqrtf(ms + eps);
  for (int c = threadIdx.x; c < dim; c += kThreads) o[c] = xr[c] * inv * w[c];
}

// Each thread rereads only the x elements it wrote itself, so no barrier is needed between the add and the norm.
__global__ void __launch_bounds__(kThreads) add_rmsnorm_kernel(float* x, int64_t ldx, const float* y, int64_t ldy, const float* w,
                                                               int dim, float eps, float* out, int64_t ldo) {
  __shared__ float sh[32];
  const int r = blockIdx.x;
  float* xr = x + static_cast<int64_t>(r) * ldx;
  const float* yr = y + static_cast<int64_t>(r) * ldy;
  float* o = out + static_cast<int64_t>(r) * ldo;
  float ss = 0.0f;
  for (int c = threadIdx.x; c < dim; c += kThreads) {
    const float v = xr[c] + yr[c];
    xr[c] = v;
    ss += v * v;
  }
  const float ms = block_sum(ss, sh) / static_cast<float>(dim);
  const float inv = 1.0f / sqrtf(ms + eps);
  for (int c = threadIdx.x; c < dim; c += kThreads) o[c] = xr[c] * inv * w[c];
}

__global__ void add_kernel(float* x, int64_t ldx, const float* y, int64_t ldy, int64_t cols, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t r = i / cols, c = i % cols;
    x[r * ldx + c] += y[r * ldy + c];
  }
}

}  // namespace

void launch_rmsnorm(const float* x, int64_t ldx, const int32_t* row_map, const float* w, int rows, int dim, float eps,
                    float* out, int64_t ldo, cudaStream_t s) {
  if (rows <= 0) return;
  rmsnorm_kernel<<<rows, kThreads, 0, s>>>(x, ldx, row_map, w, dim, eps, out, ldo);
  cuda_check_launch("rmsnorm");
}

void launch_add_rmsnorm(float* x, int64_t ldx, const float* y, int64_t ldy, const float* w, int rows, int dim, float eps,
                        float* out, int64_t ldo, cudaStream_t s) {
  if (rows <= 0) return;
  add_rmsnorm_kernel<<<rows, kThreads, 0, s>>>(x, ldx, y, ldy, w, dim, eps, out, ldo);
  cuda_check_launch("add_rmsnorm");
}

void launch_add(float* x, int64_t ldx, const float* y, int64_t ldy, int rows, int64_t cols, cudaStream_t s) {
  const int64_t n = static_cast<int64_t>(rows) * cols;
  if (n <= 0) return;
  const int64_t blocks = (n + 255) / 256;
  add_kernel<<<static_cast<unsigned>(blocks < 65536 ? blocks : 65536), 256, 0, s>>>(x, ldx, y, ldy, cols, n);
  cuda_check_launch("add");
}

}  // namespace moe
