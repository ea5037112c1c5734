// Per-head RMSNorm of q and k, then NeoX ("rotate_half") RoPE. The cos/sin table is computed once per step
// (begin_step) from the positions, with the angle pos · inv_freq in double as the CPU does (positions up to 128K
// lose too much in fp32), then rounded to float and scaled by the attention factor.
#include "cuda/cuda-check.h"
#include "cuda/kernels-cuda.h"
#include "cuda/reduce-cuda.h"

namespace moe {
namespace {

constexpr int kWarps = 4;

__global__ void rope_table_kernel(const int32_t* positions, int T, const float* inv_freq, int half, float factor, float* table) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(T) * half) return;
  const int64_t t = i / half;
  const int j = static_cast<int>(i % half);
  const double ang = static_cast<double>(positions[t]) * static_cast<double>(inv_freq[j]);
  double sn, cs;
  sincos(ang, &sn, &cs);
  table[t * 2 * half + j] = static_cast<float>(cs) * factor;
  table[t * 2 * half + half + j] = static_cast<float>(sn) * factor;
}

// One warp per (token, head); heads [0, heads) are q's, [heads, heads + kv_heads) k's.
__global__ void __launch_bounds__(kWarps * 32) qk_norm_rope_kernel(float* q, int64_t ldq, float* k, int64_t ldk, int T,
                                                                  int heads, int kv_heads, int hd, const float* qw,
                                                                  const float* kw, float eps, const float* table) {
  extern __shared__ float sm[];  // [kWarps][hd]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t gw = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const int nh = heads + kv_heads;
  if (gw >= static_cast<int64_t>(T) * nh) return;  // whole warps leave; no block barrier below
  const int64_t t = gw / nh;
  const int h = static_cast<int>(gw % nh);
  const bool is_q = h < heads;
  float* v = is_q ? q + t * ldq + static_cast<int64_t>(h) * hd : k + t * ldk + static_cast<int64_t>(h - heads) * hd;
  const float* w = is_q ? qw : kw;
  float* buf = sm + warp * hd;
  float ss = 0.0f;
  for (int j = lane; j < hd; j += 32) ss += v[j] * v[j];
  ss = warp_sum(ss);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(hd) + eps);
  for (int j = lane; j < hd; j += 32) buf[j] = v[j] * inv * w[j];
  __syncwarp();
  const int half = hd / 2;
  const float* c = table + t * hd;
  const float* s = c + half;
  for (int j = lane; j < half; j += 32) {
    const float x0 = buf[j], x1 = buf[j + half];
    v[j] = x0 * c[j] - x1 * s[j];
    v[j + half] = x1 * c[j] + x0 * s[j];
  }
}

}  // namespace

void launch_rope_table(const int32_t* positions, int T, const float* inv_freq, int head_dim, float factor, float* table,
                       cudaStream_t s) {
  const int64_t n = static_cast<int64_t>(T) * (head_dim / 2);
  if (n <= 0) return;
  rope_table_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, s>>>(positions, T, inv_freq, head_dim / 2, factor, table);
  cuda_check_launch("begin_step (rope table)");
}

void launch_qk_norm_rope(float* q, int64_t ldq, float* k, int64_t ldk, int T, int heads, int kv_heads, int head_dim,
                         const float* qw, const float* kw, float eps, const float* table, cudaStream_t s) {
  const int64_t warps = static_cast<int64_t>(T) * (heads + kv_heads);
  if (warps <= 0) return;
  const size_t shmem = sizeof(float) * kWarps * head_dim;
  qk_norm_rope_kernel<<<static_cast<unsigned>((warps + kWarps - 1) / kWarps), kWarps * 32, shmem, s>>>(
      q, ldq, k, ldk, T, heads, kv_heads, head_dim, qw, kw, eps, table);
  cuda_check_launch("qk_norm_rope");
}

}  // namespace moe
