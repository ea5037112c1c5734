// Embedding lookup: rows of the bf16 table widened to fp32.
#include "cuda/cuda-check.h"
#include "cuda/kernels-cuda.h"

namespace moe {
namespace {

__global__ void embed_kernel(const bf16* table, int64_t cols, const int32_t* tokens, float* out, int64_t ldo) {
  const int t = blockIdx.x;
  const bf16* row = table + static_cast<int64_t>(tokens[t]) * cols;
  float* o = out + static_cast<int64_t>(t) * ldo;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) o[c] = __bfloat162float(row[c]);
}

}  // namespace

void launch_embed(const bf16* table, int64_t cols, const int32_t* tokens, int T, float* out, int64_t ldo, cudaStream_t s) {
  if (T <= 0) return;
  embed_kernel<<<T, 256, 0, s>>>(table, cols, tokens, out, ldo);
  cuda_check_launch("embed");
}

}  // namespace moe
