// Causal GQA attention over the paged KV cache. Slot of position j of a sequence:
// block_tables[seq][j / block_size] * block_size + j % block_size.
#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/backend-cpu.h"

namespace moe {

void CpuBackend::attention(int layer, const float* q, const float* k, const float* v, int T, const ModelConfig& cfg,
                           const AttnMeta& m, float* out) {
  const int hd = cfg.head_dim, kvd = cfg.kv_dim(), group = cfg.heads / cfg.kv_heads;
  float* K = k_cache_[layer].data();
  float* V = v_cache_[layer].data();
  auto slot_of = [&](int seq, int64_t pos) -> int64_t {
    const int32_t block = m.block_tables[static_cast<int64_t>(seq) * m.table_width + pos / m.block_size];
    return static_cast<int64_t>(block) * m.block_size + pos % m.block_size;
  };
  for (int t = 0; t < T; t++) {
    const int64_t s = slot_of(m.seq_of_token[t], m.positions[t]);
    std::copy(k + static_cast<int64_t>(t) * kvd, k + static_cast<int64_t>(t + 1) * kvd, K + s * kvd);
    std::copy(v + static_cast<int64_t>(t) * kvd, v + static_cast<int64_t>(t + 1) * kvd, V + s * kvd);
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  pool_.parallel_for(static_cast<int64_t>(T) * cfg.kv_heads, 1, [&](int64_t b, int64_t e, int th) {
    for (int64_t i = b; i < e; i++) {
      const int t = static_cast<int>(i / cfg.kv_heads), kh = static_cast<int>(i % cfg.kv_heads);
      const int seq = m.seq_of_token[t];
      const int64_t n = static_cast<int64_t>(m.positions[t]) + 1;
      float* scores = thread_scratch(th, static_cast<size_t>(group) * n + 4 * static_cast<size_t>(kvd));
      const float* qh = q + (static_cast<int64_t>(t) * cfg.heads + kh * group) * hd;
      float mx[64];
      float* maxes = group <= 64 ? mx : nullptr;
      std::vector<float> big;
      if (!maxes) { big.resize(group); maxes = big.data(); }
      std::fill(maxes, maxes + group, -std::numeric_limits<float>::infinity());
      for (int64_t j = 0; j < n; j++) {
        const float* kj = K + slot_of(seq, j) * kvd + kh * hd;
        for (int g = 0; g < group; g++) {
          const float sc = k_.dot(qh + g * hd, kj, hd) * scale;
          scores[g * n + j] = sc;
          maxes[g] = std::max(maxes[g], sc);
        }
      }
      for (int g = 0; g < group; g++) {
        float* sg = scores + g * n;
        float sum = 0;
        for (int64_t j = 0; j < n; j++) {
          sg[j] = std::exp(sg[j] - maxes[g]);
          sum += sg[j];
        }
        const float inv = 1.0f / sum;
        float* o = out + (static_cast<int64_t>(t) * cfg.heads + kh * group + g) * hd;
        std::fill(o, o + hd, 0.0f);
        for (int64_t j = 0; j < n; j++) k_.axpy(sg[j] * inv, V + slot_of(seq, j) * kvd + kh * hd, o, hd);
      }
    }
  });
}

}  // namespace moe
