// Paged causal GQA attention. kv_write stores the step's k, v (bf16) at their slots first (a separate launch,
// since a token reads the keys the step's earlier tokens write). Then one block per (token, KV head) walks the
// keys 0..position of its sequence through the block table in chunks of kChunk, with an fp32 online softmax
// for each query head of the group; the order of every sum depends only on the token's own keys.
#include <cmath>

#include "cuda/cuda-check.h"
#include "cuda/kernels-cuda.h"
#include "cuda/reduce-cuda.h"

namespace moe {
namespace {

constexpr int kChunk = 32;
constexpr int kThreads = 128;

__global__ void kv_write_kernel(const float* k, int64_t ldk, const float* v, int64_t ldv, int kv_dim, const int64_t* slot_of_token,
                                bf16* k_cache, bf16* v_cache) {
  const int t = blockIdx.x;
  const int64_t slot = slot_of_token[t];
  for (int c = threadIdx.x; c < kv_dim; c += blockDim.x) {
    k_cache[slot * kv_dim + c] = __float2bfloat16_rn(k[t * ldk + c]);
    v_cache[slot * kv_dim + c] = __float2bfloat16_rn(v[t * ldv + c]);
  }
}

// Shared memory: slots[kChunk] (int64), q[G·hd], acc[G·hd], scores[G·kChunk], m[G], l[G], alpha[G].
size_t attention_smem(int G, int hd) {
  return sizeof(int64_t) * kChunk + sizeof(float) * (2 * static_cast<size_t>(G) * hd + static_cast<size_t>(G) * kChunk + 3 * G);
}

__global__ void __launch_bounds__(kThreads) attention_kernel(const AttnArgs a) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int t = blockIdx.x, kh = blockIdx.y;
  const int G = a.heads / a.kv_heads, hd = a.head_dim, bs = a.block_size;
  const int64_t kvd = static_cast<int64_t>(a.kv_heads) * hd;
  int64_t* slots = reinterpret_cast<int64_t*>(smem);
  float* qs = reinterpret_cast<float*>(slots + kChunk);
  float* acc = qs + G * hd;
  float* sc = acc + G * hd;
  float* mrow = sc + G * kChunk;
  float* lrow = mrow + G;
  float* alpha = lrow + G;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, nw = kThreads / 32;
  const float scale = 1.0f / sqrtf(static_cast<float>(hd));

  // The group's query heads kh·G .. kh·G + G − 1 are contiguous in q and in out.
  const float* qp = a.q + static_cast<int64_t>(t) * a.ldq + static_cast<int64_t>(kh) * G * hd;
  for (int i = tid; i < G * hd; i += kThreads) {
    qs[i] = qp[i];
    acc[i] = 0.0f;
  }
  for (int g = tid; g < G; g += kThreads) {
    mrow[g] = -INFINITY;
    lrow[g] = 0.0f;
  }
  const int n = a.positions[t] + 1;
  const int32_t* table = a.block_tables + static_cast<int64_t>(a.seq_of_token[t]) * a.table_width;
  const int64_t head_off = static_cast<int64_t>(kh) * hd;
  __syncthreads();

  for (int j0 = 0; j0 < n; j0 += kChunk) {
    const int nc = min(kChunk, n - j0);
    if (tid < nc) {
      const int j = j0 + tid;
      slots[tid] = static_cast<int64_t>(table[j / bs]) * bs + j % bs;
    }
    __syncthreads();
    // Scores: a warp per key, each query head's dot product a warp reduction.
    for (int jj = warp; jj < nc; jj += nw) {
      const bf16* kp = a.k_cache + slots[jj] * kvd + head_off;
      for (int g = 0; g < G; g++) {
        float p = 0.0f;
        for (int d = lane; d < hd; d += 32) p += qs[g * hd + d] * __bfloat162float(kp[d]);
        p = warp_sum(p);
        if (lane == 0) sc[g * kChunk + jj] = p * scale;
      }
    }
    __syncthreads();
    // Online softmax per query head: new running max, rescale factor, probabilities of the chunk.
    for (int g = tid; g < G; g += kThreads) {
      float* s = sc + g * kChunk;
      float mx = mrow[g];
      for (int jj = 0; jj < nc; jj++) mx = fmaxf(mx, s[jj]);
      const float al = expf(mrow[g] - mx);  // 0 on the first chunk (running max −inf)
      float sum = 0.0f;
      for (int jj = 0; jj < nc; jj++) {
        const float e = expf(s[jj] - mx);
        s[jj] = e;
        sum += e;
      }
      lrow[g] = lrow[g] * al + sum;
      mrow[g] = mx;
      alpha[g] = al;
    }
    __syncthreads();
    for (int i = tid; i < G * hd; i += kThreads) {
      const int g = i / hd, d = i % hd;
      const float* s = sc + g * kChunk;
      float o = acc[i] * alpha[g];
      for (int jj = 0; jj < nc; jj++) o += s[jj] * __bfloat162float(a.v_cache[slots[jj] * kvd + head_off + d]);
      acc[i] = o;
    }
    __syncthreads();
  }
  float* op = a.out + static_cast<int64_t>(t) * a.ldo + static_cast<int64_t>(kh) * G * hd;
  for (int i = tid; i < G * hd; i += kThreads) op[i] = acc[i] / lrow[i / hd];
}

}  // namespace

void launch_kv_write(const float* k, int64_t ldk, const float* v, int64_t ldv, int T, int kv_dim, const int64_t* slot_of_token,
                     bf16* k_cache, bf16* v_cache, cudaStream_t s) {
  if (T <= 0) return;
  kv_write_kernel<<<T, 128, 0, s>>>(k, ldk, v, ldv, kv_dim, slot_of_token, k_cache, v_cache);
  cuda_check_launch("attention (KV write)");
}

void launch_attention(const AttnArgs& a, cudaStream_t s) {
  if (a.T <= 0) return;
  const int G = a.heads / a.kv_heads;
  const size_t smem = attention_smem(G, a.head_dim);
  if (smem > 48 * 1024) {
    CUDA_CHECK_OP("attention", cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  attention_kernel<<<dim3(a.T, a.kv_heads), kThreads, smem, s>>>(a);
  cuda_check_launch("attention");
}

}  // namespace moe
