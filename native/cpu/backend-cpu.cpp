#include "cpu/backend-cpu.h"

#include <algorithm>
#include <cmath>

namespace moe {

CpuBackend::CpuBackend(int threads)
    : pool_(std::max(1, threads)), k_(select_kernels()), thread_scratch_(static_cast<size_t>(std::max(1, threads))) {}

std::string CpuBackend::name() const { return std::string("cpu/") + k_.name; }

float* CpuBackend::scratch(int slot, size_t n) {
  if (scratch_.size() <= static_cast<size_t>(slot)) scratch_.resize(slot + 1);
  if (scratch_[slot].size() < n) scratch_[slot].resize(n);
  return scratch_[slot].data();
}

float* CpuBackend::thread_scratch(int thread, size_t n) {
  auto& s = thread_scratch_[thread];
  if (s.size() < n) s.resize(n);
  return s.data();
}

void CpuBackend::init_kv(const ModelConfig& cfg, int num_blocks, int block_size) {
  kv_dim_ = cfg.kv_dim();
  const size_t n = static_cast<size_t>(num_blocks) * block_size * kv_dim_;
  k_cache_.assign(cfg.layers, std::vector<float>());
  v_cache_.assign(cfg.layers, std::vector<float>());
  for (int l = 0; l < cfg.layers; l++) {
    k_cache_[l].assign(n, 0.0f);
    v_cache_[l].assign(n, 0.0f);
  }
}

size_t CpuBackend::kv_bytes_per_token() const { return k_cache_.size() * 2 * kv_dim_ * sizeof(float); }

void CpuBackend::embed(const Matrix& table, const int32_t* tokens, int T, float* out) {
  pool_.parallel_for(T, 16, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; t++) k_.to_f32(table.row(tokens[t]), table.dtype, out + t * table.cols, table.cols);
  });
}

void CpuBackend::rmsnorm(const float* x, const float* w, int rows, int dim, float eps, float* out) {
  pool_.parallel_for(rows, 64, [&](int64_t b, int64_t e, int) {
    for (int64_t r = b; r < e; r++) {
      const float* xr = x + r * dim;
      float* o = out + r * dim;
      const float ms = k_.dot(xr, xr, dim) / static_cast<float>(dim);
      const float inv = 1.0f / std::sqrt(ms + eps);
      for (int i = 0; i < dim; i++) o[i] = xr[i] * inv * w[i];
    }
  });
}

const float* CpuBackend::pack_tiles(const float* x, int64_t T, int64_t K, DType dt, int slot) {
  const size_t n = k_.tiled_floats ? k_.tiled_floats(T, K, dt) : 0;
  if (n == 0) return nullptr;
  float* buf = scratch(slot, n);
  pool_.parallel_for((T + kTileTokens - 1) / kTileTokens, 1,
                     [&](int64_t b, int64_t e, int) { k_.pack_tiles(x, T, K, b, e, buf); });
  return buf;
}

void CpuBackend::matmul_into(const float* x, int64_t T, const Matrix& w, float* out, int64_t ldo) {
  if (const float* tiles = pack_tiles(x, T, w.cols, w.dtype, kTilesSlot)) {
    // Row chunks in whole micro-kernels, large enough to keep their weights in L2 across the tiles.
    const int64_t grain = std::max<int64_t>(kTileRows, std::min<int64_t>(256, w.rows / (8 * pool_.size())) / kTileRows * kTileRows);
    pool_.parallel_for(w.rows, grain, [&](int64_t b, int64_t e, int) { k_.matmul_tiles(w, b, e, tiles, x, T, out + b, ldo); });
    return;
  }
  // Grain: at most 512 rows, at least 8 chunks per thread. Each chunk starts with its row prefetch cold;
  // the lm_head decode (2 threads) measured 16.3 ms per step with 64-row chunks, 15.9 with 512 and more.
  const int64_t grain = std::max<int64_t>(4, std::min<int64_t>(512, w.rows / (8 * pool_.size()) / 4 * 4));
  pool_.parallel_for(w.rows, grain, [&](int64_t b, int64_t e, int th) {
    float* s = thread_scratch(th, 4 * static_cast<size_t>(w.cols));
    k_.matmul_rows(w, b, e, x, T, out + b, ldo, s);
  });
}

void CpuBackend::matmul(const float* x, int T, const Matrix& w, float* out) { matmul_into(x, T, w, out, w.rows); }

void CpuBackend::add(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] += y[i];
}

void CpuBackend::qk_norm_rope(float* q, float* k, int T, const float* q_norm, const float* k_norm,
                              const ModelConfig& cfg, const int32_t* positions) {
  const int hd = cfg.head_dim, half = hd / 2, heads = cfg.heads + cfg.kv_heads;
  // cos/sin once per token; the angle in double since positions up to 128K times inv_freq lose too much in f32.
  float* cs = scratch(12, static_cast<size_t>(T) * hd);
  for (int t = 0; t < T; t++) {
    for (int j = 0; j < half; j++) {
      const double ang = static_cast<double>(positions[t]) * static_cast<double>(cfg.rope_inv_freq[j]);
      cs[t * hd + j] = static_cast<float>(std::cos(ang)) * cfg.rope_attention_factor;
      cs[t * hd + half + j] = static_cast<float>(std::sin(ang)) * cfg.rope_attention_factor;
    }
  }
  pool_.parallel_for(static_cast<int64_t>(T) * heads, 32, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++) {
      const int64_t t = i / heads;
      const int h = static_cast<int>(i % heads);
      const bool is_q = h < cfg.heads;
      float* v = is_q ? q + (t * cfg.heads + h) * hd : k + (t * cfg.kv_heads + (h - cfg.heads)) * hd;
      const float* w = is_q ? q_norm : k_norm;
      const float inv = 1.0f / std::sqrt(k_.dot(v, v, hd) / static_cast<float>(hd) + cfg.rms_eps);
      for (int j = 0; j < hd; j++) v[j] = v[j] * inv * w[j];
      const float* c = cs + t * hd;
      const float* s = c + half;
      for (int j = 0; j < half; j++) {
        const float x0 = v[j], x1 = v[j + half];
        v[j] = x0 * c[j] - x1 * s[j];
        v[j + half] = x1 * c[j] + x0 * s[j];
      }
    }
  });
}

void CpuBackend::mlp(const float* h, int T, const Mlp& m, float* out) {
  const int64_t I = m.gate.rows;
  float* g = scratch(10, static_cast<size_t>(T) * I);
  float* u = scratch(11, static_cast<size_t>(T) * I);
  matmul_into(h, T, m.gate, g, I);
  matmul_into(h, T, m.up, u, I);
  k_.silu_mul(g, u, T * I);
  matmul_into(g, T, m.down, out, m.down.rows);
}

}  // namespace moe
