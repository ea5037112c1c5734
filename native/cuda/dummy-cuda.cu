// --load-format dummy on the device: the same pure function of (tensor id, element index) as the host's
// fill_dummy_host (core/dummy-weights.h), so CUDA and CPU weights are bit-identical.
#include "core/dummy-weights.h"
#include "cuda/cuda-check.h"
#include "cuda/kernels-cuda.h"

namespace moe {
namespace {

__global__ void fill_dummy_kernel(uint16_t* dst, size_t n, uint32_t id, uint64_t i0, float scale) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    dst[i] = dummy_bf16(id, i0 + i, scale);
  }
}

}  // namespace

void launch_fill_dummy(uint16_t* dst, size_t n, uint32_t id, uint64_t i0, float scale, cudaStream_t s) {
  if (n == 0) return;
  const size_t blocks = (n + 255) / 256;
  fill_dummy_kernel<<<static_cast<unsigned>(blocks < 65536 ? blocks : 65536), 256, 0, s>>>(dst, n, id, i0, scale);
  cuda_check_launch("place_weights (dummy weights)");
}

}  // namespace moe
