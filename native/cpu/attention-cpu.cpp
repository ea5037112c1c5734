// Causal GQA attention over the paged KV cache. Slot of position j of a sequence:
// block_tables[seq][j / block_size] * block_size + j % block_size; a block's slots are consecutive rows,
// so the kernels run over one block at a time.
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "core/half.h"
#include "cpu/backend-cpu.h"

namespace moe {

void CpuBackend::attention(int layer, const Buffer& qb, const Buffer& kb, const Buffer& vb, const Buffer& ob) {
  const ModelConfig& cfg = cfg_;
  const int T = T_, hd = cfg.head_dim, kvd = cfg.kv_dim(), group = cfg.heads / cfg.kv_heads, bs = block_size_;
  const float* q = qb.f32();
  const float* k = kb.f32();
  const float* v = vb.f32();
  float* out = ob.f32();
  // The pool in f32 or bf16 (kv_dtype_): K/V rows are indexed in elements; the kernels take the typed pointer.
  const bool bf16 = kv_dtype_ == DType::BF16;
  float* K = bf16 ? nullptr : k_cache_[layer].data();
  float* V = bf16 ? nullptr : v_cache_[layer].data();
  uint16_t* K16 = bf16 ? k_cache16_[layer].data() : nullptr;
  uint16_t* V16 = bf16 ? v_cache16_[layer].data() : nullptr;
  const int32_t* tables = block_tables_.data();
  const int32_t* seq_of_token = seq_of_token_.data();
  const int32_t* positions = positions_.data();
  const int table_width = table_width_;
  for (int t = 0; t < T; t++) {
    const int64_t s = slots_[t];
    const float* kt = k + static_cast<int64_t>(t) * kvd;
    const float* vt = v + static_cast<int64_t>(t) * kvd;
    if (bf16) {
      for (int i = 0; i < kvd; i++) K16[s * kvd + i] = f32_to_bf16(kt[i]), V16[s * kvd + i] = f32_to_bf16(vt[i]);
    } else {
      std::copy(kt, kt + kvd, K + s * kvd);
      std::copy(vt, vt + kvd, V + s * kvd);
    }
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
      // A bf16 pool with several queries in the tile: each block's rows of this head are widened once into `wide`
      // (bs × hd) for the f32 kernels, instead of once per query; a set's bf16 kernels give the same bits.
      const bool widen = bf16 && nt > 1;
      float* scores = thread_scratch(th, static_cast<size_t>(nt) * group * ld + (widen ? static_cast<size_t>(bs) * hd : 0));
      float* wide = scores + static_cast<int64_t>(nt) * group * ld;
      auto widen_block = [&](const uint16_t* src, int64_t rows) {
        for (int64_t r = 0; r < rows; r++) k_.to_f32(src + r * kvd, DType::BF16, wide + r * hd, hd);
      };
      auto row = [&](int tt) { return scores + static_cast<int64_t>(tt) * group * ld; };
      auto qh = [&](int tt) { return q + (static_cast<int64_t>(t0 + tt) * cfg.heads + kh * group) * hd; };
      auto oh = [&](int tt) { return out + (static_cast<int64_t>(t0 + tt) * cfg.heads + kh * group) * hd; };
      for (int64_t j0 = 0; j0 < ld; j0 += bs) {
        const int64_t off = static_cast<int64_t>(table[j0 / bs]) * bs * kvd + kh * hd;
        if (widen) widen_block(K16 + off, std::min<int64_t>(bs, ld - j0));
        for (int tt = 0; tt < nt; tt++) {
          const int64_t n = keys(tt);
          if (j0 >= n) continue;
          const int64_t len = std::min<int64_t>(bs, n - j0);
          if (widen) k_.attn_scores(qh(tt), group, hd, wide, hd, len, scale, row(tt) + j0, ld);
          else if (bf16) k_.attn_scores_bf16(qh(tt), group, hd, K16 + off, kvd, len, scale, row(tt) + j0, ld);
          else k_.attn_scores(qh(tt), group, hd, K + off, kvd, len, scale, row(tt) + j0, ld);
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
        const int64_t off = static_cast<int64_t>(table[j0 / bs]) * bs * kvd + kh * hd;
        if (widen) widen_block(V16 + off, std::min<int64_t>(bs, ld - j0));
        for (int tt = 0; tt < nt; tt++) {
          const int64_t n = keys(tt);
          if (j0 >= n) continue;
          const int64_t len = std::min<int64_t>(bs, n - j0);
          if (widen) k_.attn_values(row(tt) + j0, group, ld, wide, hd, len, hd, oh(tt));
          else if (bf16) k_.attn_values_bf16(row(tt) + j0, group, ld, V16 + off, kvd, len, hd, oh(tt));
          else k_.attn_values(row(tt) + j0, group, ld, V + off, kvd, len, hd, oh(tt));
        }
      }
    }
  });
}

}  // namespace moe
