// Private to cuda/sampler-cuda.cu: the sampler's kernel and its host-side packing and scattering, in a header
// of their own so that a host-only harness can run the same code (it defines MOE_SAMPLER_EMULATE and the CUDA
// names this file uses). See sampler-cuda.cu for the design.
#pragma once
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "core/backend.h"
#include "core/sampler.h"
#include "cpu/kernels.h"  // max_scalar, exp_sum_scalar: the host fallback reduces as the CPU sampler does

#ifndef MOE_SAMPLER_DYN_SMEM
#define MOE_SAMPLER_DYN_SMEM(name) extern __shared__ uint32_t name[]
#endif

namespace moe {
namespace sampler_detail {

#ifndef MOE_SAMPLER_THREADS
#define MOE_SAMPLER_THREADS 512
#endif
constexpr int kThreads = MOE_SAMPLER_THREADS;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxTop = 20;
constexpr unsigned kFull = 0xffffffffu;

enum : int32_t {
  kSampled = 1,      // the row's sequence samples here
  kNeedLse = 2,      // some logprob is reported: compute lse
  kHasTarget = 4,    // prompt logprobs with a target id
  kProcess = 8,      // SeqProcessing::active(): process a copy (here: in place, with the stash)
  kHostSample = 16,  // processing lists did not fit: the host samples this row
  kMask = 32,        // allowed mask at mask_off
};

struct RowParam {
  int32_t flags = 0;
  int32_t target = -1;
  int32_t n_top = 0;  // raw top logprobs to compute (max of the prompt's and the sampled token's N)
  int32_t top_k = 0;
  float temperature = 0, top_p = 1, min_p = 0, u = 0;
  float inv_t = 0;      // 1.0f / temperature
  float floor_off = 0;  // temperature · log(min(min_p, 1)), as the CPU computes it (fp32, glibc logf)
  float cut_off = 0;    // temperature · log(1e-4f)
  float presence = 0, frequency = 0, repetition = 1;
  int32_t bias_off = 0, n_bias = 0;      // bias ids at bias_off, values (fp32 bits) at bias_off + n_bias
  int32_t out_off = 0, n_out = 0;        // output ids at out_off, counts at out_off + n_out
  int32_t prompt_off = 0, n_prompt = 0;  // prompt ids (uploaded only when repetition != 1)
  int32_t mask_off = 0;
  int32_t stash_off = 0;  // device-only: n_bias + n_out + n_prompt raw values, then nothing
};

struct RowResult {
  int32_t token;
  float token_logprob;
  float target_logprob;
  float lse;
  int32_t top_ids[kMaxTop];
  float top_logprobs[kMaxTop];
};

// ---------------------------------------------------------------------------------------------------------
// Device helpers.

__device__ __forceinline__ uint32_t fkey(float f) {
  if (f == 0.0f) f = 0.0f;  // -0 and +0 compare equal on the CPU: one key
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_value(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
// Best first = descending composite: value, then the lower id.
__device__ __forceinline__ uint64_t comp_key(uint32_t k, int id) {
  return (static_cast<uint64_t>(k) << 32) | static_cast<uint64_t>(0xffffffffu - static_cast<uint32_t>(id));
}
__device__ __forceinline__ int comp_id(uint64_t c) { return static_cast<int>(0xffffffffu - static_cast<uint32_t>(c)); }

struct Shared {
  double d[kWarps * 16];
  double d16[16];
  float f[kWarps];
  int i[kWarps];
  int i2[kWarps];
  unsigned long long u64[kWarps];
  int bins[256];
  int misc[8];
  float miscf[4];
  double miscd[4];
};

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

// Deterministic block reductions: a fixed shuffle tree per warp, then the warps' results in warp order.
__device__ double block_sum(double v, Shared& sh) {
  v = warp_sum(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh.d[threadIdx.x >> 5] = v;
  __syncthreads();
  double r = sh.d[0];
  for (int w = 1; w < kWarps; w++) r += sh.d[w];
  return r;
}
__device__ int block_sum_int(int v, Shared& sh) {
  v = warp_sum(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh.i[threadIdx.x >> 5] = v;
  __syncthreads();
  int r = 0;
  for (int w = 0; w < kWarps; w++) r += sh.i[w];
  return r;
}
__device__ float block_max(float v, Shared& sh) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh.f[threadIdx.x >> 5] = v;
  __syncthreads();
  float r = sh.f[0];
  for (int w = 1; w < kWarps; w++) r = fmaxf(r, sh.f[w]);
  return r;
}
__device__ int block_min_int(int v, Shared& sh) {
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(kFull, v, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh.i[threadIdx.x >> 5] = v;
  __syncthreads();
  int r = sh.i[0];
  for (int w = 1; w < kWarps; w++) r = min(r, sh.i[w]);
  return r;
}
__device__ int block_max_int(int v, Shared& sh) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(kFull, v, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh.i[threadIdx.x >> 5] = v;
  __syncthreads();
  int r = sh.i[0];
  for (int w = 1; w < kWarps; w++) r = max(r, sh.i[w]);
  return r;
}
__device__ uint64_t block_min_u64(uint64_t v, Shared& sh) {
  unsigned long long x = v;
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned long long y = __shfl_xor_sync(kFull, x, o);
    x = y < x ? y : x;
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh.u64[threadIdx.x >> 5] = x;
  __syncthreads();
  unsigned long long r = sh.u64[0];
  for (int w = 1; w < kWarps; w++) r = sh.u64[w] < r ? sh.u64[w] : r;
  return r;
}
// (value, id) best: larger value, then lower id. Returns the block's best in both.
__device__ void block_argmax(float& v, int& id, Shared& sh) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(kFull, v, o);
    const int oi = __shfl_xor_sync(kFull, id, o);
    if (ov > v || (ov == v && oi < id)) { v = ov; id = oi; }
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) { sh.f[threadIdx.x >> 5] = v; sh.i[threadIdx.x >> 5] = id; }
  __syncthreads();
  v = sh.f[0];
  id = sh.i[0];
  for (int w = 1; w < kWarps; w++)
    if (sh.f[w] > v || (sh.f[w] == v && sh.i[w] < id)) { v = sh.f[w]; id = sh.i[w]; }
}
// Exclusive scan of one value per thread, in thread order; also returns the total.
template <typename T>
__device__ T block_exclusive_scan(T v, T& total, T* sh_warp) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  T incl = v;
  for (int o = 1; o < 32; o <<= 1) {
    const T y = __shfl_up_sync(kFull, incl, o);
    if (lane >= o) incl += y;
  }
  __syncthreads();
  if (lane == 31) sh_warp[w] = incl;
  __syncthreads();
  T before = 0, all = 0;
  for (int i = 0; i < kWarps; i++) {
    if (i < w) before += sh_warp[i];
    all += sh_warp[i];
  }
  total = all;
  return before + incl - v;
}
// 16 sums at once (the radix search's digit masses).
__device__ void block_sum16(const double* acc, Shared& sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  double mine = 0;
#pragma unroll
  for (int j = 0; j < 16; j++) {
    const double s = warp_sum(acc[j]);
    if (lane == j) mine = s;
  }
  __syncthreads();
  if (lane < 16) sh.d[w * 16 + lane] = mine;
  __syncthreads();
  if (threadIdx.x < 16) {
    double r = sh.d[threadIdx.x];
    for (int i = 1; i < kWarps; i++) r += sh.d[i * 16 + threadIdx.x];
    sh.d16[threadIdx.x] = r;
  }
  __syncthreads();
}

// The contiguous id range of this thread (for walks in id order).
__device__ __forceinline__ void my_chunk(int V, int& b, int& e) {
  const int c = (V + kThreads - 1) / kThreads;
  b = min(V, static_cast<int>(threadIdx.x) * c);
  e = min(V, b + c);
}

// ---------------------------------------------------------------------------------------------------------
// Sampling on a (processed) row: sample_token of core/sampler.cpp.

struct Draw {
  const float* l;
  int V;
  float mx, inv_t;
  __device__ double q(float x) const {  // the CPU's weigh(): exp(double(l - mx) · inv_t)
    return exp(static_cast<double>(__fsub_rn(x, mx)) * static_cast<double>(inv_t));
  }
  __device__ float p(float x) const {  // the CPU's exp_sum weights: fp32 exp((l - mx) · inv_t)
    return expf(__fmul_rn(__fsub_rn(x, mx), inv_t));
  }
};

// A candidate set: l >= thr, l != -inf, and composite key >= kmin (top-k / nucleus restriction; 0 = none).
struct CandSet {
  float thr;
  uint64_t kmin;
  __device__ bool has(float x, int i) const {
    if (!(x >= thr) || x == -INFINITY) return false;
    return kmin == 0 || comp_key(fkey(x), i) >= kmin;
  }
};

__device__ int count_set(const Draw& D, const CandSet& S, Shared& sh) {
  int c = 0;
  for (int i = threadIdx.x; i < D.V; i += kThreads) c += S.has(D.l[i], i) ? 1 : 0;
  return block_sum_int(c, sh);
}
__device__ double mass_of_set(const Draw& D, const CandSet& S, Shared& sh) {
  double s = 0;
  for (int i = threadIdx.x; i < D.V; i += kThreads) {
    const float x = D.l[i];
    if (S.has(x, i)) s += D.q(x);
  }
  return block_sum(s, sh);
}
// The last member in best-first order (the CPU's ids[n - 1]).
__device__ int last_of_set(const Draw& D, const CandSet& S, Shared& sh) {
  uint64_t m = ~0ull;
  for (int i = threadIdx.x; i < D.V; i += kThreads) {
    const float x = D.l[i];
    if (S.has(x, i)) {
      const uint64_t c = comp_key(fkey(x), i);
      m = c < m ? c : m;
    }
  }
  return comp_id(block_min_u64(m, sh));
}
// The r-th (1-based) smallest id among members of S whose key is tau.
__device__ int nth_id_at_key(const Draw& D, const CandSet& S, uint32_t tau, int r, Shared& sh) {
  int b, e;
  my_chunk(D.V, b, e);
  int cnt = 0;
  for (int i = b; i < e; i++) {
    const float x = D.l[i];
    cnt += (S.has(x, i) && fkey(x) == tau) ? 1 : 0;
  }
  int total;
  const int before = block_exclusive_scan(cnt, total, sh.i2);
  if (threadIdx.x == 0) sh.misc[0] = -1;
  __syncthreads();
  if (r > before && r <= before + cnt) {
    int k = before;
    for (int i = b; i < e; i++) {
      const float x = D.l[i];
      if (S.has(x, i) && fkey(x) == tau && ++k == r) {
        sh.misc[0] = i;
        break;
      }
    }
  }
  __syncthreads();
  const int id = sh.misc[0];
  __syncthreads();
  // Only NaN logits (keys no member has) find nothing: the set's last member keeps the draw a valid id
  // (uniform branch: every thread read the same id).
  return id >= 0 ? id : last_of_set(D, S, sh);
}

// Composite key of the k-th best member of S (1 ≤ k ≤ |S|): an 8-bit radix select on counts.
__device__ uint64_t kth_best(const Draw& D, const CandSet& S, int k, Shared& sh) {
  uint32_t prefix = 0;
  int remaining = k;
  for (int pass = 0; pass < 4; pass++) {
    const int shift = 24 - 8 * pass;
    for (int j = threadIdx.x; j < 256; j += kThreads) sh.bins[j] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < D.V; i += kThreads) {
      const float x = D.l[i];
      if (!S.has(x, i)) continue;
      const uint32_t kk = fkey(x);
      if (pass > 0 && (kk >> (shift + 8)) != prefix) continue;
      atomicAdd(&sh.bins[(kk >> shift) & 255u], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int d = 255;
      for (; d > 0; d--) {
        if (sh.bins[d] >= remaining) break;
        remaining -= sh.bins[d];
      }
      sh.misc[1] = d;
      sh.misc[2] = remaining;
    }
    __syncthreads();
    prefix = (prefix << 8) | static_cast<uint32_t>(sh.misc[1]);
    remaining = sh.misc[2];
    __syncthreads();
  }
  const int id = nth_id_at_key(D, S, prefix, remaining, sh);
  return comp_key(prefix, id);
}

struct Crossing {
  bool found;
  int id;
  uint64_t comp;
  double prefix;  // the best-first cumulative mass through this element
};

// The first member of S in best-first order whose cumulative mass Σ q reaches X (>= X, or > X when strict).
// Not found when the whole set does not. The masses above each digit are block sums, so they round
// differently from the CPU's running sum (relative 1e-16).
__device__ Crossing cross_mass(const Draw& D, const CandSet& S, double X, bool strict, Shared& sh) {
  uint32_t prefix = 0;
  double above = 0;
  for (int pass = 0; pass < 8; pass++) {
    const int shift = 28 - 4 * pass;
    double acc[16];
#pragma unroll
    for (int j = 0; j < 16; j++) acc[j] = 0;
    for (int i = threadIdx.x; i < D.V; i += kThreads) {
      const float x = D.l[i];
      if (!S.has(x, i)) continue;
      const uint32_t k = fkey(x);
      if (pass > 0 && (k >> (shift + 4)) != prefix) continue;
      const uint32_t d = (k >> shift) & 15u;
      const double q = D.q(x);
#pragma unroll
      for (int j = 0; j < 16; j++) acc[j] += (d == static_cast<uint32_t>(j)) ? q : 0.0;
    }
    block_sum16(acc, sh);
    // Every thread reads the same 16 sums and makes the same choice.
    int chosen = -1, last_pos = -1;
    double s = above, s_before_last = above;
    for (int d = 15; d >= 0; d--) {
      const double b = sh.d16[d];
      if (!(b > 0)) continue;
      const double t = s + b;
      if (strict ? t > X : t >= X) {
        chosen = d;
        break;
      }
      last_pos = d;
      s_before_last = s;
      s = t;
    }
    if (chosen < 0) {
      if (pass == 0 || last_pos < 0) return Crossing{false, -1, 0, s};
      // The parent digit crossed but its parts, summed apart, do not: its last part is the crossing.
      chosen = last_pos;
      s = s_before_last;
    }
    above = s;
    prefix = (prefix << 4) | static_cast<uint32_t>(chosen);
    __syncthreads();  // sh.d16 is rewritten by the next pass
  }
  // The members at value prefix, by ascending id, each weighing qt.
  int c = 0;
  for (int i = threadIdx.x; i < D.V; i += kThreads) {
    const float x = D.l[i];
    c += (S.has(x, i) && fkey(x) == prefix) ? 1 : 0;
  }
  c = block_sum_int(c, sh);
  const double qt = D.q(key_value(prefix));
  auto reaches = [&](int j) {
    const double t = above + static_cast<double>(j) * qt;
    return strict ? t > X : t >= X;
  };
  int j = 1;
  if (c > 1 && qt > 0) {
    const double est = ceil((X - above) / qt);
    j = est < 1.0 ? 1 : (est > static_cast<double>(c) ? c : static_cast<int>(est));
    while (j > 1 && reaches(j - 1)) j--;
    while (j < c && !reaches(j)) j++;
  }
  if (c < 1) c = 1;
  if (j > c) j = c;
  const int id = nth_id_at_key(D, S, prefix, j, sh);
  return Crossing{true, id, comp_key(prefix, id), above + static_cast<double>(j) * qt};
}

// The inverse CDF in id order. use_p32: the whole vocabulary with the fp32 weights and an fp32 total (the
// CPU's no-filter path; fallback best); otherwise the min_p survivors with double weights (fallback: the last
// survivor in id order).
__device__ int walk_id_order(const Draw& D, bool use_p32, float floor_v, float u, int best, Shared& sh) {
  int b, e;
  my_chunk(D.V, b, e);
  double s = 0;
  for (int i = b; i < e; i++) {
    const float x = D.l[i];
    if (use_p32) {
      s += static_cast<double>(D.p(x));
    } else if (x >= floor_v && x != -INFINITY) {
      s += D.q(x);
    }
  }
  double total;
  const double carry = block_exclusive_scan(s, total, sh.d);
  const double target = use_p32 ? static_cast<double>(u) * static_cast<double>(static_cast<float>(total))
                                 : static_cast<double>(u) * total;
  int hit = INT_MAX, last = -1;
  double acc = carry;
  for (int i = b; i < e; i++) {
    const float x = D.l[i];
    if (use_p32) {
      const float p = D.p(x);
      acc += static_cast<double>(p);
      if (acc > target && p > 0) { hit = i; break; }
    } else if (x >= floor_v && x != -INFINITY) {
      acc += D.q(x);
      last = i;
      if (acc > target) { hit = i; break; }
    }
  }
  hit = block_min_int(hit, sh);
  if (hit != INT_MAX) return hit;
  if (use_p32) return best;
  // No hit anywhere: every thread walked its whole chunk, so last is its last survivor.
  return block_max_int(last, sh);
}

__device__ int sample_row(const float* l, int V, const RowParam& P, Shared& sh) {
  // The first maximum (the CPU keeps the lowest id among equal maxima).
  float mx = -INFINITY;
  int best = INT_MAX;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const float x = l[i];
    if (best == INT_MAX || x > mx) { mx = x; best = i; }
  }
  block_argmax(mx, best, sh);
  if (best == INT_MAX) best = 0;
  if (!(P.temperature > 0.0f) || mx == -INFINITY) return best;
  const Draw D{l, V, mx, P.inv_t};
  const bool use_k = P.top_k > 0 && P.top_k < V, use_p = P.top_p > 0.0f && P.top_p < 1.0f, use_min_p = P.min_p > 0.0f;
  if (!use_k && !use_p && !use_min_p) return walk_id_order(D, true, 0.0f, P.u, best, sh);
  const float floor_v = use_min_p ? __fadd_rn(mx, P.floor_off) : -INFINITY;
  if (!use_k && !use_p) return walk_id_order(D, false, floor_v, P.u, best, sh);
  CandSet set{floor_v, 0};
  double mass = 0;
  if (use_k) {
    const int n0 = count_set(D, set, sh);
    if (P.top_k < n0) set.kmin = kth_best(D, set, P.top_k, sh);
    mass = mass_of_set(D, set, sh);
  } else {
    // The CPU's mass and head: fp32 weights summed in double, over l >= floor and l >= cut.
    const float cut = fmaxf(floor_v, __fadd_rn(mx, P.cut_off));
    double m = 0, h = 0;
    for (int i = threadIdx.x; i < V; i += kThreads) {
      const float x = l[i];
      if (x < floor_v) continue;
      const double p = static_cast<double>(D.p(x));
      m += p;
      if (x >= cut) h += p;
    }
    mass = block_sum(m, sh);
    const double head = block_sum(h, sh);
    if (head >= static_cast<double>(P.top_p) * mass) set.thr = cut;
  }
  double sum = mass;
  if (use_p) {
    const Crossing c = cross_mass(D, set, static_cast<double>(P.top_p) * mass, false, sh);
    if (c.found) {
      set.kmin = c.comp;
      sum = c.prefix;
    } else if (!use_k) {
      sum = mass_of_set(D, set, sh);  // the CPU re-sums the double weights of the kept (all) candidates
    }
  }
  const Crossing d = cross_mass(D, set, static_cast<double>(P.u) * sum, true, sh);
  if (d.found) return d.id;
  return last_of_set(D, set, sh);
}

// ---------------------------------------------------------------------------------------------------------

__device__ __forceinline__ bool bit_set(const uint32_t* m, int i) { return (m[i >> 5] >> (i & 31)) & 1u; }

__global__ void __launch_bounds__(kThreads) sampler_kernel(float* logits, int V, const RowParam* params,
                                                           int32_t* payload, RowResult* results) {
  MOE_SAMPLER_DYN_SMEM(bitmap);  // ceil(V / 32) words
  __shared__ Shared sh;
  const RowParam P = params[blockIdx.x];
  float* row = logits + static_cast<size_t>(blockIdx.x) * V;
  RowResult& R = results[blockIdx.x];
  const int W = (V + 31) / 32;
  const float nan = __int_as_float(0x7fc00000);

  // 1. Raw statistics.
  float lse = 0.0f;
  if (P.flags & kNeedLse) {
    float m = -INFINITY;
    for (int i = threadIdx.x; i < V; i += kThreads) m = fmaxf(m, row[i]);
    m = block_max(m, sh);
    double s = 0;
    for (int i = threadIdx.x; i < V; i += kThreads) s += static_cast<double>(expf(__fsub_rn(row[i], m)));
    s = block_sum(s, sh);
    lse = __fadd_rn(m, logf(static_cast<float>(s)));
  }
  if (threadIdx.x == 0) {
    R.lse = lse;
    R.target_logprob = (P.flags & kHasTarget) ? __fsub_rn(row[P.target], lse) : nan;
    R.token = -1;
    R.token_logprob = nan;
  }
  const int n_top = min(P.n_top, min(kMaxTop, V));
  if (n_top > 0) {
    // This thread's best among its elements strictly worse than (bv, bi) in the order (value desc, id asc).
    auto next_best = [&](float pv, int pi, bool first, float& bv, int& bi) {
      bv = -INFINITY;
      bi = INT_MAX;
      for (int i = threadIdx.x; i < V; i += kThreads) {
        const float x = row[i];
        if (!first && !(x < pv || (x == pv && i > pi))) continue;
        if (bi == INT_MAX || x > bv) { bv = x; bi = i; }
      }
    };
    float bv;
    int bi;
    next_best(0, 0, true, bv, bi);
    for (int r = 0; r < n_top; r++) {
      float v = bv;
      int id = bi;
      block_argmax(v, id, sh);
      if (id == INT_MAX) break;  // fewer elements than asked (V < n): cannot happen with n ≤ V
      if (threadIdx.x == 0) {
        R.top_ids[r] = id;
        R.top_logprobs[r] = __fsub_rn(v, lse);
      }
      if (id == bi) next_best(v, id, false, bv, bi);
    }
  }
  if (!(P.flags & kSampled) || (P.flags & kHostSample)) return;

  // 2. Processing, in place, after the raw statistics (every thread is past them: block_* ended in a sync).
  __syncthreads();
  __shared__ float raw0;
  __shared__ int dup;
  const bool process = (P.flags & kProcess) != 0;
  const int32_t* bias_ids = payload + P.bias_off;
  const float* bias_vals = reinterpret_cast<const float*>(payload + P.bias_off + P.n_bias);
  const int32_t* out_ids = payload + P.out_off;
  const int32_t* out_counts = payload + P.out_off + P.n_out;
  const int32_t* prompt_ids = payload + P.prompt_off;
  const uint32_t* mask = reinterpret_cast<const uint32_t*>(payload + P.mask_off);
  float* stash = reinterpret_cast<float*>(payload + P.stash_off);
  const bool has_mask = process && (P.flags & kMask);
  if (process) {
    if (threadIdx.x == 0) raw0 = row[0];
    for (int e = threadIdx.x; e < P.n_bias; e += kThreads) stash[e] = row[bias_ids[e]];
    for (int e = threadIdx.x; e < P.n_out; e += kThreads) stash[P.n_bias + e] = row[out_ids[e]];
    for (int e = threadIdx.x; e < P.n_prompt; e += kThreads) stash[P.n_bias + P.n_out + e] = row[prompt_ids[e]];
    __syncthreads();
    // logit_bias: in parallel unless an id repeats (then in list order, as the CPU adds them).
    if (P.n_bias > 0) {
      for (int w = threadIdx.x; w < W; w += kThreads) bitmap[w] = 0;
      if (threadIdx.x == 0) dup = 0;
      __syncthreads();
      for (int e = threadIdx.x; e < P.n_bias; e += kThreads) {
        const int t = bias_ids[e];
        if (atomicOr(&bitmap[t >> 5], 1u << (t & 31)) & (1u << (t & 31))) dup = 1;
      }
      __syncthreads();
      if (!dup) {
        for (int e = threadIdx.x; e < P.n_bias; e += kThreads) row[bias_ids[e]] = __fadd_rn(row[bias_ids[e]], bias_vals[e]);
      } else if (threadIdx.x == 0) {
        for (int e = 0; e < P.n_bias; e++) row[bias_ids[e]] = __fadd_rn(row[bias_ids[e]], bias_vals[e]);
      }
      __syncthreads();
    }
    if (has_mask) {
      for (int i = threadIdx.x; i < V; i += kThreads)
        if (!bit_set(mask, i)) row[i] = -INFINITY;
      __syncthreads();
    }
    if (P.repetition != 1.0f) {
      // Once per distinct id of prompt ∪ output: the first thread to set its bit penalises it.
      for (int w = threadIdx.x; w < W; w += kThreads) bitmap[w] = 0;
      __syncthreads();
      const float rp = P.repetition;
      for (int e = threadIdx.x; e < P.n_prompt; e += kThreads) {
        const int t = prompt_ids[e];
        if (!(atomicOr(&bitmap[t >> 5], 1u << (t & 31)) & (1u << (t & 31)))) {
          const float x = row[t];
          row[t] = x > 0 ? __fdiv_rn(x, rp) : __fmul_rn(x, rp);
        }
      }
      __syncthreads();
      for (int e = threadIdx.x; e < P.n_out; e += kThreads) {
        const int t = out_ids[e];
        if (!(atomicOr(&bitmap[t >> 5], 1u << (t & 31)) & (1u << (t & 31)))) {
          const float x = row[t];
          row[t] = x > 0 ? __fdiv_rn(x, rp) : __fmul_rn(x, rp);
        }
      }
      __syncthreads();
    }
    if (P.n_out > 0 && (P.frequency != 0.0f || P.presence != 0.0f)) {
      for (int w = threadIdx.x; w < W; w += kThreads) bitmap[w] = 0;
      if (threadIdx.x == 0) dup = 0;
      __syncthreads();
      for (int e = threadIdx.x; e < P.n_out; e += kThreads) {
        const int t = out_ids[e];
        if (atomicOr(&bitmap[t >> 5], 1u << (t & 31)) & (1u << (t & 31))) dup = 1;
      }
      __syncthreads();
      auto apply = [&](int e) {
        const float d = __fadd_rn(__fmul_rn(P.frequency, static_cast<float>(out_counts[e])), P.presence);
        row[out_ids[e]] = __fsub_rn(row[out_ids[e]], d);
      };
      if (!dup) {
        for (int e = threadIdx.x; e < P.n_out; e += kThreads) apply(e);
      } else if (threadIdx.x == 0) {
        for (int e = 0; e < P.n_out; e++) apply(e);
      }
      __syncthreads();
    }
  }

  // 3. The draw.
  const int tok = sample_row(row, V, P, sh);

  // 4. Its raw logit: untouched ids kept it; listed ids have it in the stash; a masked id is drawn only when
  // every logit is -inf, and then it is id 0.
  if (P.flags & kNeedLse) {
    __shared__ float raw_tok;
    __shared__ int hit;
    if (threadIdx.x == 0) hit = 0;
    __syncthreads();
    if (process) {
      const int n_all = P.n_bias + P.n_out + P.n_prompt;
      for (int e = threadIdx.x; e < n_all; e += kThreads) {
        const int id = e < P.n_bias ? bias_ids[e] : e < P.n_bias + P.n_out ? out_ids[e - P.n_bias] : prompt_ids[e - P.n_bias - P.n_out];
        if (id == tok && atomicExch(&hit, 1) == 0) raw_tok = stash[e];
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      float x;
      if (hit) {
        x = raw_tok;
      } else if (has_mask && !bit_set(mask, tok) && tok == 0) {
        x = raw0;
      } else {
        x = row[tok];
      }
      R.token_logprob = __fsub_rn(x, lse);
    }
  }
  if (threadIdx.x == 0) R.token = tok;
}

// ---------------------------------------------------------------------------------------------------------
// Host.

// Fills params[0, n) and the payload: the lists each processed row needs, copied words first; the stash offsets
// point past them (device-only words). Returns the number of payload words to copy in. A row whose lists would
// overflow payload_cap words is flagged kHostSample and listed in host_rows.
inline size_t pack_rows(int n, const LogitRows& rows, int c0, const StepInput& in, int V, RowParam* params,
                        int32_t* payload, size_t payload_cap, std::vector<int>& host_rows) {
  const size_t W = static_cast<size_t>(V + 31) / 32;
  size_t used = 0, stash_used = 0;
  host_rows.clear();
  for (int i = 0; i < n; i++) {
    const int t = rows.token[c0 + i], q = rows.seq[c0 + i];
    RowParam P;
    const bool sampled = in.sample[q] && t == in.seq_start[q + 1] - 1;
    const bool prompt = in.prompt_logprobs[q] >= 0;
    const bool need_lse = prompt || (sampled && in.num_logprobs[q] >= 0);
    P.flags = (sampled ? kSampled : 0) | (need_lse ? kNeedLse : 0);
    if (prompt && in.targets[t] >= 0) {
      P.flags |= kHasTarget;
      P.target = in.targets[t];
    }
    int n_top = prompt ? in.prompt_logprobs[q] : 0;
    if (sampled) n_top = std::max(n_top, in.num_logprobs[q]);
    P.n_top = std::min(std::max(n_top, 0), kMaxTop);
    if (sampled) {
      P.temperature = in.temperature[q];
      P.top_p = in.top_p[q];
      P.top_k = in.top_k[q];
      P.min_p = in.min_p.empty() ? 0.0f : in.min_p[q];
      P.u = in.uniform[q];
      // As sample_token computes them (fp32; glibc's logf), so the device adds them to the row's max.
      P.inv_t = 1.0f / P.temperature;
      P.floor_off = P.min_p > 0.0f ? P.temperature * std::log(std::min(P.min_p, 1.0f)) : 0.0f;
      P.cut_off = P.temperature * std::log(1e-4f);
      const SeqProcessing sp = processing_of(in, q, V);
      if (sp.active()) {
        P.flags |= kProcess;
        P.presence = sp.presence;
        P.frequency = sp.frequency;
        P.repetition = sp.repetition;
        // Output ids matter to the repetition and the frequency/presence penalties, prompt ids to repetition.
        const bool outs = sp.n_out > 0 && (sp.repetition != 1 || sp.frequency != 0 || sp.presence != 0);
        const bool prompts = sp.n_prompt > 0 && sp.repetition != 1;
        const size_t nb = sp.n_bias > 0 ? sp.n_bias : 0, no = outs ? sp.n_out : 0, np = prompts ? sp.n_prompt : 0;
        const size_t words = 2 * nb + 2 * no + np + (sp.mask ? W : 0), stash = nb + no + np;
        if (used + stash_used + words + stash > payload_cap) {
          P.flags |= kHostSample;
          host_rows.push_back(i);
        } else {
          P.n_bias = static_cast<int32_t>(nb);
          P.bias_off = static_cast<int32_t>(used);
          if (nb) {
            std::memcpy(payload + used, sp.bias_ids, nb * sizeof(int32_t));
            std::memcpy(payload + used + nb, sp.bias_values, nb * sizeof(float));
          }
          used += 2 * nb;
          P.n_out = static_cast<int32_t>(no);
          P.out_off = static_cast<int32_t>(used);
          if (no) {
            std::memcpy(payload + used, sp.out_ids, no * sizeof(int32_t));
            std::memcpy(payload + used + no, sp.out_counts, no * sizeof(int32_t));
          }
          used += 2 * no;
          P.n_prompt = static_cast<int32_t>(np);
          P.prompt_off = static_cast<int32_t>(used);
          if (np) std::memcpy(payload + used, sp.prompt_ids, np * sizeof(int32_t));
          used += np;
          if (sp.mask) {
            P.flags |= kMask;
            P.mask_off = static_cast<int32_t>(used);
            std::memcpy(payload + used, sp.mask, W * sizeof(uint32_t));
            used += W;
          }
          P.stash_off = static_cast<int32_t>(stash_used);  // relative until the copied words are counted
          stash_used += stash;
        }
      }
    }
    params[i] = P;
  }
  for (int i = 0; i < n; i++) params[i].stash_off += static_cast<int32_t>(used);
  return used;
}

// A row whose lists did not fit: core/sampler.cpp on its raw row (host copy); the logprob from the device's lse.
inline void host_sample_row(const float* raw, int V, const StepInput& in, int q, RowResult& R, std::vector<float>& processed,
                            std::vector<int32_t>& ids, std::vector<float>& p) {
  processed.assign(raw, raw + V);
  apply_processing(processing_of(in, q, V), processed.data(), V);
  const VecMath math{max_scalar, exp_sum_scalar};
  const float min_p = in.min_p.empty() ? 0.0f : in.min_p[q];
  const int32_t tok = sample_token(math, processed.data(), V, in.temperature[q], in.top_p[q], in.top_k[q], min_p, in.uniform[q], ids, p);
  R.token = tok;
  R.token_logprob = raw[tok] - R.lse;
}

// Writes the rows' results where the CPU's row loop writes them.
inline void scatter_rows(int n, const LogitRows& rows, int c0, const StepInput& in, int V, const RowParam* params,
                         const RowResult* res, StepOutput& out) {
  for (int i = 0; i < n; i++) {
    const int t = rows.token[c0 + i], q = rows.seq[c0 + i];
    const RowResult& R = res[i];
    const RowParam& P = params[i];
    if (in.prompt_logprobs[q] >= 0) {
      if (P.flags & kHasTarget) out.target_logprobs[t] = R.target_logprob;
      const int k = std::min(in.prompt_logprobs[q], V);
      for (int j = 0; j < k; j++) {
        out.prompt_top_ids[static_cast<size_t>(t) * out.prompt_top_width + j] = R.top_ids[j];
        out.prompt_top_logprobs[static_cast<size_t>(t) * out.prompt_top_width + j] = R.top_logprobs[j];
      }
    }
    if (!(P.flags & kSampled)) continue;
    out.tokens[q] = R.token;
    if (in.num_logprobs[q] >= 0) out.logprobs[q] = R.token_logprob;
    const int k = std::min(in.num_logprobs[q], V);
    for (int j = 0; j < k; j++) {
      out.top_ids[static_cast<size_t>(q) * out.top_width + j] = R.top_ids[j];
      out.top_logprobs[static_cast<size_t>(q) * out.top_width + j] = R.top_logprobs[j];
    }
  }
}
}  // namespace sampler_detail
}  // namespace moe
