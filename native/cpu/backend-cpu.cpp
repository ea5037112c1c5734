#include "cpu/backend-cpu.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "core/half.h"

namespace moe {

CpuBackend::CpuBackend(int threads, const KernelSet& kernels, DType kv_dtype, const KernelSet* exact)
    : pool_(std::max(1, threads)),
      k_(kernels),
      exact_(exact ? *exact : kernels),
      thread_scratch_(static_cast<size_t>(std::max(1, threads))),
      kv_dtype_(kv_dtype) {
  if (kv_dtype != DType::BF16 && kv_dtype != DType::F32) throw std::invalid_argument("the CPU's KV cache is bf16 or f32");
}

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

void CpuBackend::reserve(int max_tokens) {
  const int64_t H = cfg_.hidden, Q = cfg_.q_dim(), KV = cfg_.kv_dim();
  ws_store_.assign(7, std::vector<float>());
  Buffer* bufs[] = {&ws_.x, &ws_.h, &ws_.q, &ws_.k, &ws_.v, &ws_.attn, &ws_.tmp};
  const int64_t cols[] = {H, H, Q, KV, KV, Q, H};
  for (int i = 0; i < 7; i++) {
    ws_store_[i].assign(static_cast<size_t>(max_tokens) * cols[i], 0.0f);
    *bufs[i] = Buffer{ws_store_[i].data(), DType::F32, cols[i]};
  }
  ws_.max_tokens = max_tokens;
}

void CpuBackend::init_kv(int num_blocks, int block_size) {
  block_size_ = block_size;
  const size_t n = static_cast<size_t>(num_blocks) * block_size * cfg_.kv_dim();
  const bool bf16 = kv_dtype_ == DType::BF16;
  k_cache_.assign(cfg_.layers, std::vector<float>());
  v_cache_.assign(cfg_.layers, std::vector<float>());
  k_cache16_.assign(cfg_.layers, std::vector<uint16_t>());
  v_cache16_.assign(cfg_.layers, std::vector<uint16_t>());
  for (int l = 0; l < cfg_.layers; l++) {
    if (bf16) {
      k_cache16_[l].assign(n, 0);
      v_cache16_[l].assign(n, 0);
    } else {
      k_cache_[l].assign(n, 0.0f);
      v_cache_[l].assign(n, 0.0f);
    }
  }
}

size_t CpuBackend::kv_bytes_per_token() const {
  return static_cast<size_t>(cfg_.layers) * 2 * cfg_.kv_dim() * dtype_size(kv_dtype_);
}

void CpuBackend::begin_step(const StepMeta& m) {
  if (m.num_tokens > ws_.max_tokens) throw std::invalid_argument("step of " + std::to_string(m.num_tokens) + " tokens exceeds the workspace");
  T_ = m.num_tokens;
  S_ = m.num_seqs;
  table_width_ = m.table_width;
  tokens_.assign(m.tokens, m.tokens + T_);
  positions_.assign(m.positions, m.positions + T_);
  seq_of_token_.assign(m.seq_of_token, m.seq_of_token + T_);
  slots_.assign(m.slot_of_token, m.slot_of_token + T_);
  block_tables_.assign(m.block_tables, m.block_tables + static_cast<size_t>(S_) * table_width_);
}

void CpuBackend::embed(const Buffer& out) {
  const Matrix& table = w_.embed;
  float* o = out.f32();
  pool_.parallel_for(T_, 16, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; t++) k_.to_f32(table.row(tokens_[t]), table.dtype, o + t * table.cols, table.cols);
  });
}

void CpuBackend::rmsnorm_rows(const float* x, const float* w, int64_t rows, int dim, float* out) {
  pool_.parallel_for(rows, 64, [&](int64_t b, int64_t e, int) {
    for (int64_t r = b; r < e; r++) {
      const float* xr = x + r * dim;
      float* o = out + r * dim;
      const float ms = k_.dot(xr, xr, dim) / static_cast<float>(dim);
      const float inv = 1.0f / std::sqrt(ms + cfg_.rms_eps);
      for (int i = 0; i < dim; i++) o[i] = xr[i] * inv * w[i];
    }
  });
}

void CpuBackend::rmsnorm(Norm which, int layer, const Buffer& x, int rows, const Buffer& out) {
  const float* w = which == Norm::Final ? w_.final_norm.data()
                   : which == Norm::Input ? w_.layers[layer].input_norm.data()
                                          : w_.layers[layer].post_attn_norm.data();
  rmsnorm_rows(x.f32(), w, rows, cfg_.hidden, out.f32());
}

const float* CpuBackend::pack_tiles(const KernelSet& ks, const float* x, int64_t T, int64_t K, DType dt, int slot) {
  const size_t n = ks.tiled_floats ? ks.tiled_floats(T, K, dt) : 0;
  if (n == 0) return nullptr;
  float* buf = scratch(slot, n);
  pool_.parallel_for((T + kTileTokens - 1) / kTileTokens, 1,
                     [&](int64_t b, int64_t e, int) { ks.pack_tiles(x, T, K, b, e, buf); });
  return buf;
}

void CpuBackend::matmul_into(const KernelSet& ks, const float* x, int64_t T, const Matrix& w, float* out, int64_t ldo) {
  if (const float* tiles = pack_tiles(ks, x, T, w.cols, w.dtype, kTilesSlot)) {
    // Row chunks in whole micro-kernels, large enough to keep their weights in L2 across the tiles.
    const int64_t grain = std::max<int64_t>(kTileRows, std::min<int64_t>(256, w.rows / (8 * pool_.size())) / kTileRows * kTileRows);
    pool_.parallel_for(w.rows, grain, [&](int64_t b, int64_t e, int) { ks.matmul_tiles(w, b, e, tiles, x, T, out + b, ldo); });
    return;
  }
  // Grain: at most 512 rows, at least 8 chunks per thread. Each chunk starts with its row prefetch cold;
  // the lm_head decode (2 threads) measured 16.3 ms per step with 64-row chunks, 15.9 with 512 and more.
  const int64_t grain = std::max<int64_t>(4, std::min<int64_t>(512, w.rows / (8 * pool_.size()) / 4 * 4));
  pool_.parallel_for(w.rows, grain, [&](int64_t b, int64_t e, int th) {
    float* s = thread_scratch(th, rows_scratch_floats(w.cols));
    ks.matmul_rows(w, b, e, x, T, out + b, ldo, s);
  });
}

void CpuBackend::project(int layer, Proj p, const Buffer& in, const Buffer& out) {
  const LayerWeights& L = w_.layers[layer];
  const Matrix& m = p == Proj::Q ? L.q : p == Proj::K ? L.k : p == Proj::V ? L.v : L.o;
  matmul_into(in.f32(), T_, m, out.f32(), m.rows);
}

void CpuBackend::add(const Buffer& x, const Buffer& y, int rows) {
  float* a = x.f32();
  const float* b = y.f32();
  const size_t n = static_cast<size_t>(rows) * x.cols;
  for (size_t i = 0; i < n; i++) a[i] += b[i];
}

void CpuBackend::qk_norm_rope(int layer, const Buffer& qb, const Buffer& kb) {
  const int T = T_, hd = cfg_.head_dim, half = hd / 2, heads = cfg_.heads + cfg_.kv_heads;
  const float* q_norm = w_.layers[layer].q_norm.data();
  const float* k_norm = w_.layers[layer].k_norm.data();
  float* q = qb.f32();
  float* k = kb.f32();
  // cos/sin once per token; the angle in double since positions up to 128K times inv_freq lose too much in f32.
  float* cs = scratch(12, static_cast<size_t>(T) * hd);
  for (int t = 0; t < T; t++) {
    for (int j = 0; j < half; j++) {
      const double ang = static_cast<double>(positions_[t]) * static_cast<double>(cfg_.rope_inv_freq[j]);
      cs[t * hd + j] = static_cast<float>(std::cos(ang)) * cfg_.rope_attention_factor;
      cs[t * hd + half + j] = static_cast<float>(std::sin(ang)) * cfg_.rope_attention_factor;
    }
  }
  const bool round_q_heads = k_.bf16_activations && kv_dtype_ == DType::BF16;  // see the constructor
  pool_.parallel_for(static_cast<int64_t>(T) * heads, 32, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++) {
      const int64_t t = i / heads;
      const int h = static_cast<int>(i % heads);
      const bool is_q = h < cfg_.heads, round_q = is_q && round_q_heads;
      float* v = is_q ? q + (t * cfg_.heads + h) * hd : k + (t * cfg_.kv_heads + (h - cfg_.heads)) * hd;
      const float* w = is_q ? q_norm : k_norm;
      const float inv = 1.0f / std::sqrt(k_.dot(v, v, hd) / static_cast<float>(hd) + cfg_.rms_eps);
      for (int j = 0; j < hd; j++) v[j] = v[j] * inv * w[j];
      const float* c = cs + t * hd;
      const float* s = c + half;
      for (int j = 0; j < half; j++) {
        const float x0 = v[j], x1 = v[j + half];
        v[j] = x0 * c[j] - x1 * s[j];
        v[j + half] = x1 * c[j] + x0 * s[j];
      }
      if (round_q)
        for (int j = 0; j < hd; j++) v[j] = bf16_to_f32(f32_to_bf16(v[j]));
    }
  });
}

void CpuBackend::mlp(int layer, const Buffer& hb, const Buffer& out) {
  const Mlp& m = w_.layers[layer].dense;
  const int64_t I = m.gate.rows, T = T_;
  const float* h = hb.f32();
  float* g = scratch(10, static_cast<size_t>(T) * I);
  float* u = scratch(11, static_cast<size_t>(T) * I);
  matmul_into(h, T, m.gate, g, I);
  matmul_into(h, T, m.up, u, I);
  k_.silu_mul(g, u, T * I);
  matmul_into(g, T, m.down, out.f32(), m.down.rows);
}

}  // namespace moe
