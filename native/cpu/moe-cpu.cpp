// The sparse MoE block. Tokens of the whole step are grouped by expert so that each active expert's
// weights are streamed once per step for all of its tokens (the lever behind batched decode).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "cpu/backend-cpu.h"

namespace moe {
namespace {

// Scratch slots used here (see Backend::scratch).
enum { kRouter = 20, kGathered = 21, kGate = 22, kUp = 23, kDown = 24, kTilesUp = 25, kTilesDown = 26 };

struct Job {
  int expert;
  int64_t r0, r1;
};

}  // namespace

void CpuBackend::moe(int layer, const Buffer& hb, const Buffer& ob) {
  const ModelConfig& cfg = cfg_;
  const LayerWeights& w = w_.layers[layer];
  const float* h = hb.f32();
  float* out = ob.f32();
  const int T = T_;
  const int E = cfg.experts, K = cfg.top_k, H = cfg.hidden, I = cfg.moe_intermediate;
  float* logits = scratch(kRouter, static_cast<size_t>(T) * E);
  matmul_into(exact_, h, T, w.router, logits, E);  // exact: llama.cpp's BF16 GGUFs keep the router in F32

  // Routing: softmax over all E in fp32, top-k (ties to the lower index), optional renormalisation.
  std::vector<int> choice(static_cast<size_t>(T) * K);
  std::vector<float> weight(static_cast<size_t>(T) * K);
  pool_.parallel_for(T, 32, [&](int64_t b, int64_t end, int) {
    std::vector<int> order(E);
    for (int64_t t = b; t < end; t++) {
      float* l = logits + t * E;
      const float mx = *std::max_element(l, l + E);
      float sum = 0;
      for (int e = 0; e < E; e++) sum += (l[e] = std::exp(l[e] - mx));
      for (int e = 0; e < E; e++) l[e] /= sum;
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + K, order.end(),
                        [&](int a, int c) { return l[a] > l[c] || (l[a] == l[c] && a < c); });
      float ksum = 0;
      for (int j = 0; j < K; j++) ksum += l[order[j]];
      for (int j = 0; j < K; j++) {
        choice[t * K + j] = order[j];
        weight[t * K + j] = cfg.norm_topk_prob ? l[order[j]] / ksum : l[order[j]];
      }
    }
  });

  // Group assignments by expert: rows [offset[e], offset[e+1]) of the gathered matrix belong to expert e.
  std::vector<int64_t> offset(E + 1, 0);
  for (int i = 0; i < T * K; i++) offset[choice[i] + 1]++;
  for (int e = 0; e < E; e++) offset[e + 1] += offset[e];
  std::vector<int64_t> row_of(static_cast<size_t>(T) * K);
  {
    std::vector<int64_t> fill(offset.begin(), offset.end() - 1);
    for (int i = 0; i < T * K; i++) row_of[i] = fill[choice[i]]++;
  }
  const int64_t N = static_cast<int64_t>(T) * K;
  float* xg = scratch(kGathered, static_cast<size_t>(N) * H);
  pool_.parallel_for(N, 64, [&](int64_t b, int64_t end, int) {
    for (int64_t i = b; i < end; i++) std::copy(h + (i / K) * H, h + (i / K + 1) * H, xg + row_of[i] * H);
  });

  // Jobs of `block` rows of one expert. Gate/up take 64 rows, down 128: each job's row prefetch starts cold.
  // Against 32/64 these sizes measured one-token MoE 3.6 -> 2.9 ms per step (and, in one pair of runs,
  // 512-token MoE 349 -> 301 ms), while 16 busy experts still make 192 gate/up jobs for the threads.
  auto jobs_for = [&](int64_t rows, int64_t block) {
    std::vector<Job> jobs;
    for (int e = 0; e < E; e++) {
      if (offset[e + 1] == offset[e]) continue;
      for (int64_t r = 0; r < rows; r += block) jobs.push_back({e, r, std::min(rows, r + block)});
    }
    return jobs;
  };
  float* g = scratch(kGate, static_cast<size_t>(N) * I);
  float* u = scratch(kUp, static_cast<size_t>(N) * I);
  float* d = scratch(kDown, static_cast<size_t>(N) * H);

  // Tiled kernel sets: each expert's rows of x packed once, shared by every job of that expert; at[e] is the
  // expert's offset in the buffer, -1 where it has no tokens or too few for tiles.
  std::vector<int64_t> at;
  auto pack_experts = [&](const float* x, int64_t cols, Matrix Mlp::*m, int slot) -> const float* {
    at.assign(E, -1);
    if (!k_.tiled_floats) return nullptr;
    size_t total = 0;
    std::vector<std::pair<int, int64_t>> tiles;  // (expert, tile)
    for (int e = 0; e < E; e++) {
      const int64_t n = offset[e + 1] - offset[e];
      const size_t f = n > 0 ? k_.tiled_floats(n, cols, (w.experts[e].*m).dtype) : 0;
      if (f == 0) continue;
      at[e] = static_cast<int64_t>(total);
      total += f;
      for (int64_t t = 0; t * kTileTokens < n; t++) tiles.emplace_back(e, t);
    }
    if (total == 0) return nullptr;
    float* buf = scratch(slot, total);
    pool_.parallel_for(static_cast<int64_t>(tiles.size()), 2, [&](int64_t b, int64_t end, int) {
      for (int64_t j = b; j < end; j++) {
        const int e = tiles[j].first;
        k_.pack_tiles(x + offset[e] * cols, offset[e + 1] - offset[e], cols, tiles[j].second, tiles[j].second + 1, buf + at[e]);
      }
    });
    return buf;
  };
  // dest[n × ld] (+ the job's first row) = rows [r0, r1) of m over the expert's n tokens.
  auto expert_matmul = [&](const Matrix& m, const Job& job, const float* tiles, const float* x, int64_t n, float* dest,
                           int64_t ld, float* s) {
    if (tiles && at[job.expert] >= 0 && k_.tiled_floats(n, m.cols, m.dtype) > 0) {
      k_.matmul_tiles(m, job.r0, job.r1, tiles + at[job.expert], x, n, dest + job.r0, ld);
    } else {
      k_.matmul_rows(m, job.r0, job.r1, x, n, dest + job.r0, ld, s);
    }
  };

  const float* up_tiles = pack_experts(xg, H, &Mlp::gate, kTilesUp);
  const std::vector<Job> up_jobs = jobs_for(I, 64);
  pool_.parallel_for(static_cast<int64_t>(up_jobs.size()), 1, [&](int64_t b, int64_t end, int th) {
    float* s = thread_scratch(th, rows_scratch_floats(H));
    for (int64_t j = b; j < end; j++) {
      const Job& job = up_jobs[j];
      const Mlp& ex = w.experts[job.expert];
      const int64_t o = offset[job.expert], n = offset[job.expert + 1] - o;
      expert_matmul(ex.gate, job, up_tiles, xg + o * H, n, g + o * I, I, s);
      expert_matmul(ex.up, job, up_tiles, xg + o * H, n, u + o * I, I, s);
      for (int64_t t = 0; t < n; t++) k_.silu_mul(g + (o + t) * I + job.r0, u + (o + t) * I + job.r0, job.r1 - job.r0);
    }
  });
  const float* down_tiles = pack_experts(g, I, &Mlp::down, kTilesDown);
  const std::vector<Job> down_jobs = jobs_for(H, 128);
  pool_.parallel_for(static_cast<int64_t>(down_jobs.size()), 1, [&](int64_t b, int64_t end, int th) {
    float* s = thread_scratch(th, rows_scratch_floats(I));
    for (int64_t j = b; j < end; j++) {
      const Job& job = down_jobs[j];
      const int64_t o = offset[job.expert], n = offset[job.expert + 1] - o;
      expert_matmul(w.experts[job.expert].down, job, down_tiles, g + o * I, n, d + o * H, H, s);
    }
  });
  pool_.parallel_for(T, 8, [&](int64_t b, int64_t end, int) {
    for (int64_t t = b; t < end; t++) {
      float* o = out + t * H;
      std::fill(o, o + H, 0.0f);
      for (int j = 0; j < K; j++) k_.axpy(weight[t * K + j], d + row_of[t * K + j] * H, o, H);
    }
  });
}

}  // namespace moe
