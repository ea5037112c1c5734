// The MoE block's routing and bookkeeping (the expert GEMMs are gemm-cuda.cu's grouped form):
// router logits in fp32 → softmax over all E and top-k per token → assignments grouped by expert in
// (token, slot) order with a tile list for the grouped GEMMs → weighted combine of each token's k expert rows
// in slot order. Nothing here sums across tokens, so a token's result does not depend on its batch.
#include <stdexcept>

#include "cuda/cuda-check.h"
#include "cuda/kernels-cuda.h"
#include "cuda/reduce-cuda.h"

namespace moe {
namespace {

constexpr int kSortThreads = 1024;

// One block per token, a warp per expert (strided); fp32 products, fixed-order warp reduction.
__global__ void router_kernel(const float* h, int64_t ldh, const bf16* router, int E, int H, float* logits) {
  const int t = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  const float* x = h + static_cast<int64_t>(t) * ldh;
  for (int e = warp; e < E; e += nw) {
    const bf16* w = router + static_cast<int64_t>(e) * H;
    float acc = 0.0f;
    for (int k = lane; k < H; k += 32) acc += x[k] * __bfloat162float(w[k]);
    acc = warp_sum(acc);
    if (lane == 0) logits[static_cast<int64_t>(t) * E + e] = acc;
  }
}

// One warp per token. The softmax sum and the top-k weight sum run in one lane in index order, as the CPU's do.
__global__ void topk_kernel(float* probs, int T, int E, int K, bool norm_topk, int32_t* choice, float* weight) {
  const int t = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  if (t >= T) return;  // whole warps
  float* l = probs + static_cast<int64_t>(t) * E;
  float mx = -INFINITY;
  for (int e = lane; e < E; e += 32) mx = fmaxf(mx, l[e]);
  mx = warp_max(mx);
  for (int e = lane; e < E; e += 32) l[e] = expf(l[e] - mx);
  __syncwarp();
  float sum = 0.0f;
  if (lane == 0)
    for (int e = 0; e < E; e++) sum += l[e];
  sum = __shfl_sync(0xffffffffu, sum, 0);
  for (int e = lane; e < E; e += 32) l[e] /= sum;
  // Each lane only ever reads and marks its own experts (e ≡ lane mod 32) from here on.
  float ksum = 0.0f;
  int32_t* ch = choice + static_cast<int64_t>(t) * K;
  float* wt = weight + static_cast<int64_t>(t) * K;
  for (int j = 0; j < K; j++) {
    float bv = -1.0f;  // probabilities are >= 0; chosen experts are marked −2
    int bi = E;
    for (int e = lane; e < E; e += 32) {
      // A NaN probability (NaN or infinite router logits) counts as 0, so every pick is a valid expert: an index
      // of E would leave its assignment out of the grouping and send the combine to an unwritten row.
      const float v = l[e] != l[e] ? 0.0f : l[e];
      if (v > bv) {  // ascending e: a tie keeps the lower index
        bv = v;
        bi = e;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > bv || (ov == bv && oi < bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (lane == 0) {
      ch[j] = bi;
      wt[j] = bv;
      ksum += bv;
    }
    if (bi < E && lane == bi % 32) l[bi] = -2.0f;
  }
  if (lane == 0 && norm_topk)
    for (int j = 0; j < K; j++) wt[j] = wt[j] / ksum;
}

// One block. Thread (part p, expert e) counts then places expert e's assignments within part p of [0, NK);
// parts are consecutive ranges, so rows come out in assignment order within each expert.
__global__ void __launch_bounds__(kSortThreads) moe_sort_kernel(const int32_t* choice, int NK, int K, int E, int parts,
                                                                int32_t* row_of, int32_t* src_row, int4* tiles, int32_t* num_tiles) {
  extern __shared__ int32_t start[];  // [parts][E]: count, then the first row of (part, expert)
  const int tid = threadIdx.x, e = tid % E, p = tid / E;
  const bool active = p < parts;
  const int per = (NK + parts - 1) / parts;
  const int i0 = min(NK, p * per), i1 = min(NK, i0 + per);
  if (active) {
    int c = 0;
    for (int i = i0; i < i1; i++) c += choice[i] == e;
    start[p * E + e] = c;
  }
  __syncthreads();
  if (tid == 0) {
    int run = 0, nt = 0;
    for (int x = 0; x < E; x++) {
      const int first = run;
      for (int q = 0; q < parts; q++) {
        const int c = start[q * E + x];
        start[q * E + x] = run;
        run += c;
      }
      for (int r = first; r < run; r += kGemmTileRows) tiles[nt++] = make_int4(x, r, min(run, r + kGemmTileRows), 0);
    }
    *num_tiles = nt;
  }
  __syncthreads();
  if (active) {
    int r = start[p * E + e];
    for (int i = i0; i < i1; i++) {
      if (choice[i] == e) {
        row_of[i] = r;
        src_row[r] = i / K;
        r++;
      }
    }
  }
}

__global__ void combine_kernel(const float* down, int H, const int32_t* row_of, const float* weight, int K, float* out, int64_t ldo) {
  const int t = blockIdx.x;
  const int32_t* rows = row_of + static_cast<int64_t>(t) * K;
  const float* w = weight + static_cast<int64_t>(t) * K;
  float* o = out + static_cast<int64_t>(t) * ldo;
  for (int c = threadIdx.x; c < H; c += blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j < K; j++) acc += w[j] * down[static_cast<int64_t>(rows[j]) * H + c];
    o[c] = acc;
  }
}

}  // namespace

void launch_router(const float* h, int64_t ldh, const bf16* router, int T, int E, int H, float* logits, cudaStream_t s) {
  if (T <= 0) return;
  router_kernel<<<T, 256, 0, s>>>(h, ldh, router, E, H, logits);
  cuda_check_launch("moe (router)");
}

void launch_topk(float* probs, int T, int E, int K, bool norm_topk, int32_t* choice, float* weight, cudaStream_t s) {
  if (T <= 0) return;
  constexpr int kWarps = 4;
  topk_kernel<<<(T + kWarps - 1) / kWarps, kWarps * 32, 0, s>>>(probs, T, E, K, norm_topk, choice, weight);
  cuda_check_launch("moe (top-k)");
}

void launch_moe_sort(const int32_t* choice, int NK, int K, int E, int32_t* row_of, int32_t* src_row, int4* tiles,
                     int32_t* num_tiles, cudaStream_t s) {
  if (NK <= 0) return;
  if (E > kSortThreads) throw std::invalid_argument("moe: at most 1024 experts");
  const int parts = kSortThreads / E;
  moe_sort_kernel<<<1, kSortThreads, sizeof(int32_t) * parts * E, s>>>(choice, NK, K, E, parts, row_of, src_row, tiles, num_tiles);
  cuda_check_launch("moe (sort)");
}

void launch_moe_combine(const float* down, int H, const int32_t* row_of, const float* weight, int T, int K, float* out,
                        int64_t ldo, cudaStream_t s) {
  if (T <= 0) return;
  combine_kernel<<<T, 256, 0, s>>>(down, H, row_of, weight, K, out, ldo);
  cuda_check_launch("moe (combine)");
}

}  // namespace moe
