// Warp and block reductions with a fixed combination order (butterfly within a warp, warps summed in index
// order), so a row's result never depends on anything but the row.
#pragma once
#include <cuda_runtime.h>

namespace moe {

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total. sh: 32 floats.
// Contains __syncthreads: call from all threads of the block.
__device__ __forceinline__ float block_sum(float v, float* sh) {
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  float t = 0.0f;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); w++) t += sh[w];
  __syncthreads();  // sh may be reused by the caller
  return t;
}

}  // namespace moe
