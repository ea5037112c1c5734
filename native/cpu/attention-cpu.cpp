// Causal GQA attention over the paged KV cache. Slot of position j of a sequence:
// block_tables[seq][j / block_size] * block_size + j % block_size; a block's slots are consecutive rows,
// so the kernels run over one block at a time.
#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/backend-cpu.h"

namespace moe {

void CpuBackend::attention(int layer, const float* q, const float* k, const float* v, int T, const ModelConfig& cfg,
                           const AttnMeta& m, float* out) {
  const int hd = cfg.head_dim, kvd = cfg.kv_dim(), group = cfg.heads / cfg.kv_heads, bs = m.block_size;
  float* K = k_cache_[layer].data();
  float* V = v_cache_[layer].data();
  const int32_t* tables = m.block_tables;
  for (int t = 0; t < T; t++) {
    const int64_t pos = m.positions[t];
    const int32_t block = tables[static_cast<int64_t>(m.seq_of_token[t]) * m.table_width + pos / bs];
    const int64_t s = static_cast<int64_t>(block) * bs + pos % bs;
    std::copy(k + static_cast<int64_t>(t) * kvd, k + static_cast<int64_t>(t + 1) * kvd, K + s * kvd);
    std::copy(v + static_cast<int64_t>(t) * kvd, v + static_cast<int64_t>(t + 1) * kvd, V + s * kvd);
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  pool_.parallel_for(static_cast<int64_t>(T) * cfg.kv_heads, 1, [&](int64_t b, int64_t e, int th) {
    for (int64_t i = b; i < e; i++) {
      const int t = static_cast<int>(i / cfg.kv_heads), kh = static_cast<int>(i % cfg.kv_heads);
      const int32_t* table = tables + static_cast<int64_t>(m.seq_of_token[t]) * m.table_width;
      const int64_t n = static_cast<int64_t>(m.positions[t]) + 1;
      // scores: group rows of n; every query head of the group reads each K/V row once per block.
      float* scores = thread_scratch(th, static_cast<size_t>(group) * n);
      const float* qh = q + (static_cast<int64_t>(t) * cfg.heads + kh * group) * hd;
      for (int64_t j0 = 0; j0 < n; j0 += bs) {
        const int64_t len = std::min<int64_t>(bs, n - j0);
        const float* kb = K + static_cast<int64_t>(table[j0 / bs]) * bs * kvd + kh * hd;
        k_.attn_scores(qh, group, hd, kb, kvd, len, scale, scores + j0, n);
      }
      float* o = out + (static_cast<int64_t>(t) * cfg.heads + kh * group) * hd;
      std::fill(o, o + static_cast<int64_t>(group) * hd, 0.0f);
      for (int g = 0; g < group; g++) {
        float* sg = scores + g * n;
        const float mx = k_.max(sg, n);
        const float inv = 1.0f / k_.exp_sum(sg, n, mx, 1.0f, sg);
        for (int64_t j = 0; j < n; j++) sg[j] *= inv;
      }
      for (int64_t j0 = 0; j0 < n; j0 += bs) {
        const int64_t len = std::min<int64_t>(bs, n - j0);
        const float* vb = V + static_cast<int64_t>(table[j0 / bs]) * bs * kvd + kh * hd;
        k_.attn_values(scores + j0, group, n, vb, kvd, len, hd, o);
      }
    }
  });
}

}  // namespace moe
