// Causal GQA attention over the paged KV cache. Slot of position j of a sequence:
// block_tables[seq][j / block_size] * block_size + j % block_size; a block's slots are consecutive rows,
// so the kernels run over one block at a time.
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "cpu/backend-cpu.h"

namespace moe {

void CpuBackend::attention(int layer, const Buffer& qb, const Buffer& kb, const Buffer& vb, const Buffer& ob) {
  const ModelConfig& cfg = cfg_;
  const int T = T_, hd = cfg.head_dim, kvd = cfg.kv_dim(), group = cfg.heads / cfg.kv_heads, bs = block_size_;
  const float* q = qb.f32();
  const float* k = kb.f32();
  const float* v = vb.f32();
  float* out = ob.f32();
  float* K = k_cache_[layer].data();
  float* V = v_cache_[layer].data();
  const int32_t* tables = block_tables_.data();
  const int32_t* seq_of_token = seq_of_token_.data();
  const int32_t* positions = positions_.data();
  const int table_width = table_width_;
  for (int t = 0; t < T; t++) {
    const int64_t s = slots_[t];
    std::copy(k + static_cast<int64_t>(t) * kvd, k + static_cast<int64_t>(t + 1) * kvd, K + s * kvd);
    std::copy(v + static_cast<int64_t>(t) * kvd, v + static_cast<int64_t>(t + 1) * kvd, V + s * kvd);
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // Query tiles: up to kQueryTile tokens of one sequence take each K/V block in turn, so a block is read from
  // memory once per tile and then from L1 (a prefill chunk would otherwise re-read its whole K/V per token).
  constexpr int kQueryTile = 8;
  std::vector<std::pair<int, int>> tiles;  // [t0, t1)
  for (int t = 0; t < T;) {
    int e = t + 1;
    while (e < T && e - t < kQueryTile && seq_of_token[e] == seq_of_token[t]) e++;
    tiles.emplace_back(t, e);
    t = e;
  }
  const int kvh = cfg.kv_heads;
  pool_.parallel_for(static_cast<int64_t>(tiles.size()) * kvh, 1, [&](int64_t b, int64_t e, int th) {
    for (int64_t i = b; i < e; i++) {
      const int t0 = tiles[i / kvh].first, nt = tiles[i / kvh].second - t0, kh = static_cast<int>(i % kvh);
      const int32_t* table = tables + static_cast<int64_t>(seq_of_token[t0]) * table_width;
      auto keys = [&](int tt) { return static_cast<int64_t>(positions[t0 + tt]) + 1; };
      int64_t ld = 0;  // the longest row of the tile
      for (int tt = 0; tt < nt; tt++) ld = std::max(ld, keys(tt));
      // scores: row (tt, g) of ld floats; every query head of the group reads each K/V row once per block.
      float* scores = thread_scratch(th, static_cast<size_t>(nt) * group * ld);
      auto row = [&](int tt) { return scores + static_cast<int64_t>(tt) * group * ld; };
      auto qh = [&](int tt) { return q + (static_cast<int64_t>(t0 + tt) * cfg.heads + kh * group) * hd; };
      auto oh = [&](int tt) { return out + (static_cast<int64_t>(t0 + tt) * cfg.heads + kh * group) * hd; };
      for (int64_t j0 = 0; j0 < ld; j0 += bs) {
        const float* kb = K + static_cast<int64_t>(table[j0 / bs]) * bs * kvd + kh * hd;
        for (int tt = 0; tt < nt; tt++) {
          const int64_t n = keys(tt);
          if (j0 < n) k_.attn_scores(qh(tt), group, hd, kb, kvd, std::min<int64_t>(bs, n - j0), scale, row(tt) + j0, ld);
        }
      }
      for (int tt = 0; tt < nt; tt++) {
        const int64_t n = keys(tt);
        for (int g = 0; g < group; g++) {
          float* sg = row(tt) + g * ld;
          const float mx = k_.max(sg, n);
          const float inv = 1.0f / k_.exp_sum(sg, n, mx, 1.0f, sg);
          for (int64_t j = 0; j < n; j++) sg[j] *= inv;
        }
        std::fill(oh(tt), oh(tt) + static_cast<int64_t>(group) * hd, 0.0f);
      }
      for (int64_t j0 = 0; j0 < ld; j0 += bs) {
        const float* vb = V + static_cast<int64_t>(table[j0 / bs]) * bs * kvd + kh * hd;
        for (int tt = 0; tt < nt; tt++) {
          const int64_t n = keys(tt);
          if (j0 < n) k_.attn_values(row(tt) + j0, group, ld, vb, kvd, std::min<int64_t>(bs, n - j0), hd, oh(tt));
        }
      }
    }
  });
}

}  // namespace moe
