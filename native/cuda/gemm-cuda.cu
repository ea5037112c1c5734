// C = A · Bᵀ with bf16 WMMA tensor cores (16×16×16, sm_80+), fp32 accumulation. A 64 × 64 output tile per block
// of 4 warps (each 32 × 32); K in steps of 32 through shared memory, A rounded from fp32 to bf16 (nearest even)
// as it is loaded, out-of-range rows, columns and K tails loaded as zeros. Every output element is the same
// sequence of MMAs over K whatever tile row it falls in, so a row's result does not depend on the other rows.
#include <mma.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/cuda-check.h"
#include "cuda/kernels-cuda.h"

namespace moe {
namespace {

using namespace nvcuda;

constexpr int BM = kGemmTileRows;
constexpr int BN = 64;
constexpr int BK = 32;
constexpr int LDS = BK + 8;  // bf16 tile row stride: a multiple of 8 (WMMA), rows 16-byte aligned (80 bytes)
constexpr int LDC = BN + 4;  // fp32 output tile row stride: a multiple of 4 (WMMA)
constexpr int kThreads = 128;

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// As[0][m][c] = bf16(x); with split, As[1][m][c] = bf16(x − As[0][m][c]) (that difference is exact in fp32).
__device__ __forceinline__ void put_a(bf16 (*As)[BM][LDS], int m, int c, float x, bool split) {
  const bf16 hi = __float2bfloat16_rn(x);
  As[0][m][c] = hi;
  if (split) As[1][m][c] = __float2bfloat16_rn(x - __bfloat162float(hi));
}

// Bs[n][k] = B[(n0 + n) × K + k0 + k], zero outside [0, N) × [0, K).
__device__ __forceinline__ void load_b(bf16 (*Bs)[LDS], const bf16* B, int n0, int N, int k0, int K, bool vec) {
  if (vec) {  // K % 8 == 0 and B 16-byte aligned: 8 elements at a time, each group wholly inside or outside K
    for (int i = threadIdx.x; i < BN * BK / 8; i += kThreads) {
      const int n = i / (BK / 8), c = (i % (BK / 8)) * 8, k = k0 + c;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (n0 + n < N && k < K) v = *reinterpret_cast<const uint4*>(B + static_cast<int64_t>(n0 + n) * K + k);
      *reinterpret_cast<uint4*>(&Bs[n][c]) = v;
    }
  } else {
    for (int i = threadIdx.x; i < BN * BK; i += kThreads) {
      const int n = i / BK, c = i % BK, k = k0 + c;
      Bs[n][c] = (n0 + n < N && k < K) ? B[static_cast<int64_t>(n0 + n) * K + k] : __ushort_as_bfloat16(0);
    }
  }
}

template <bool kGated>
__global__ void __launch_bounds__(kThreads) gemm_kernel(const GemmArgs g, bool vec_a, bool vec_b) {
  __shared__ __align__(128) bf16 As[2][BM][LDS];  // [1]: the lo parts when split_a
  __shared__ __align__(128) bf16 Bs[kGated ? 2 : 1][BN][LDS];
  __shared__ __align__(128) float Cs[BM][LDC];
  __shared__ int64_t a_off[BM];  // element offset of each tile row's A row; −1 past the tile's rows

  int expert = 0, row0, row1;
  if (g.tiles) {
    if (static_cast<int>(blockIdx.y) >= *g.num_tiles) return;  // the whole block: grid.y is only a bound
    const int4 t = g.tiles[blockIdx.y];
    expert = t.x;
    row0 = t.y;
    row1 = t.z;
  } else {
    row0 = blockIdx.y * BM;
    row1 = min(g.M, row0 + BM);
  }
  const int rows = row1 - row0, n0 = blockIdx.x * BN, K = g.K, N = g.N;
  const bool split = g.split_a;
  const bf16* B0 = g.B0 + expert * g.b_expert_stride;
  const bf16* B1 = kGated ? g.B1 + expert * g.b_expert_stride : nullptr;
  for (int m = threadIdx.x; m < BM; m += kThreads) {
    const int r = row0 + m;
    a_off[m] = m < rows ? static_cast<int64_t>(g.a_row_map ? g.a_row_map[r] : r) * g.lda : -1;
  }

  const int warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;
  FragC acc[2][2], acc_up[2][2];
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 2; j++) {
      wmma::fill_fragment(acc[i][j], 0.0f);
      if (kGated) wmma::fill_fragment(acc_up[i][j], 0.0f);
    }
  __syncthreads();

  for (int k0 = 0; k0 < K; k0 += BK) {
    if (vec_a) {  // K % 4 == 0, lda % 4 == 0, A 16-byte aligned
      for (int i = threadIdx.x; i < BM * BK / 4; i += kThreads) {
        const int m = i / (BK / 4), c = (i % (BK / 4)) * 4, k = k0 + c;
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (a_off[m] >= 0 && k < K) v = *reinterpret_cast<const float4*>(g.A + a_off[m] + k);
        put_a(As, m, c, v.x, split);
        put_a(As, m, c + 1, v.y, split);
        put_a(As, m, c + 2, v.z, split);
        put_a(As, m, c + 3, v.w, split);
      }
    } else {
      for (int i = threadIdx.x; i < BM * BK; i += kThreads) {
        const int m = i / BK, c = i % BK, k = k0 + c;
        put_a(As, m, c, a_off[m] >= 0 && k < K ? g.A[a_off[m] + k] : 0.0f, split);
      }
    }
    load_b(Bs[0], B0, n0, N, k0, K, vec_b);
    if (kGated) load_b(Bs[kGated ? 1 : 0], B1, n0, N, k0, K, vec_b);
    __syncthreads();
    for (int kk = 0; kk < BK; kk += 16) {
      FragA a[2], lo[2];
      FragB b[2];
      for (int i = 0; i < 2; i++) wmma::load_matrix_sync(a[i], &As[0][wm * 32 + i * 16][kk], LDS);
      if (split)
        for (int i = 0; i < 2; i++) wmma::load_matrix_sync(lo[i], &As[1][wm * 32 + i * 16][kk], LDS);
#pragma unroll
      for (int half = 0; half < (kGated ? 2 : 1); half++) {  // gate (or the only B), then up
        FragC (&c)[2][2] = half == 0 ? acc : acc_up;
        for (int j = 0; j < 2; j++) wmma::load_matrix_sync(b[j], &Bs[half][wn * 32 + j * 16][kk], LDS);
        for (int i = 0; i < 2; i++)
          for (int j = 0; j < 2; j++) wmma::mma_sync(c[i][j], a[i], b[j], c[i][j]);
        if (split)
          for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) wmma::mma_sync(c[i][j], lo[i], b[j], c[i][j]);
      }
    }
    __syncthreads();
  }

  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 2; j++) {
      // Accumulator fragments of one type map their elements to the same (row, column), so gate and up pair up.
      if (kGated)
        for (int e = 0; e < acc[i][j].num_elements; e++) acc[i][j].x[e] = silu_mul(acc[i][j].x[e], acc_up[i][j].x[e]);
      wmma::store_matrix_sync(&Cs[wm * 32 + i * 16][wn * 32 + j * 16], acc[i][j], LDC, wmma::mem_row_major);
    }
  __syncthreads();
  for (int i = threadIdx.x; i < BM * BN; i += kThreads) {
    const int m = i / BN, n = i % BN, col = n0 + n;
    if (m >= rows || col >= N) continue;
    const int64_t r = row0 + m;
    const float v = Cs[m][n];
    if (col < g.n1) {
      g.C0[r * g.ldc0 + col] = v;
    } else if (col < g.n2) {
      g.C1[r * g.ldc1 + (col - g.n1)] = v;
    } else {
      g.C2[r * g.ldc2 + (col - g.n2)] = v;
    }
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

void launch_gemm(const GemmArgs& g, const char* op, cudaStream_t s) {
  const int gy = g.tiles ? g.max_tiles : (g.M + BM - 1) / BM;
  if (g.N <= 0 || gy <= 0) return;
  if (gy > 65535) throw std::invalid_argument(std::string(op) + ": " + std::to_string(g.M) + " rows exceed the GEMM grid");
  const dim3 grid((g.N + BN - 1) / BN, gy);
  const bool vec_a = g.K % 4 == 0 && g.lda % 4 == 0 && aligned16(g.A);
  const bool vec_b = g.K % 8 == 0 && g.b_expert_stride % 8 == 0 && aligned16(g.B0) && (!g.B1 || aligned16(g.B1));
  if (g.B1) {
    gemm_kernel<true><<<grid, kThreads, 0, s>>>(g, vec_a, vec_b);
  } else {
    gemm_kernel<false><<<grid, kThreads, 0, s>>>(g, vec_a, vec_b);
  }
  cuda_check_launch(op);
}

}  // namespace moe
