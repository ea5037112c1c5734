#include "core/dummy-weights.h"

#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

namespace moe {
namespace {

Matrix shape(int32_t& next_id, int64_t rows, int64_t cols, float scale) {
  Matrix m;
  m.dtype = DType::BF16;
  m.rows = rows;
  m.cols = cols;
  m.dummy_id = next_id++;
  m.dummy_scale = scale;
  return m;
}

Matrix proj(int32_t& id, int64_t rows, int64_t cols) { return shape(id, rows, cols, 1.0f / std::sqrt(static_cast<float>(cols))); }

}  // namespace

ModelWeights dummy_weights(const ModelConfig& c) {
  ModelWeights w;
  int32_t id = 0;
  const int64_t H = c.hidden;
  w.embed = shape(id, c.vocab, H, 1.0f);
  w.lm_head = c.tie_word_embeddings ? w.embed : proj(id, c.vocab, H);
  w.final_norm.assign(H, 1.0f);
  w.layers.resize(c.layers);
  for (int l = 0; l < c.layers; l++) {
    LayerWeights& L = w.layers[l];
    L.input_norm.assign(H, 1.0f);
    L.post_attn_norm.assign(H, 1.0f);
    L.q_norm.assign(c.head_dim, 1.0f);
    L.k_norm.assign(c.head_dim, 1.0f);
    L.q = proj(id, c.q_dim(), H);
    L.k = proj(id, c.kv_dim(), H);
    L.v = proj(id, c.kv_dim(), H);
    L.o = proj(id, H, c.q_dim());
    L.moe = c.moe_layers[l];
    auto mlp = [&](int64_t I) { return Mlp{proj(id, I, H), proj(id, I, H), proj(id, H, I)}; };
    if (L.moe) {
      L.router = proj(id, c.experts, H);
      for (int e = 0; e < c.experts; e++) L.experts.push_back(mlp(c.moe_intermediate));
    } else {
      L.dense = mlp(c.intermediate);
    }
  }
  std::vector<const Matrix*> all{&w.embed};
  if (!c.tie_word_embeddings) all.push_back(&w.lm_head);
  for (const LayerWeights& L : w.layers) {
    for (const Matrix* m : {&L.q, &L.k, &L.v, &L.o, &L.router, &L.dense.gate, &L.dense.up, &L.dense.down}) all.push_back(m);
    for (const Mlp& e : L.experts)
      for (const Matrix* m : {&e.gate, &e.up, &e.down}) all.push_back(m);
  }
  for (const Matrix* m : all) w.bytes += static_cast<size_t>(m->rows) * m->cols * 2;
  w.bytes += (static_cast<size_t>(H) * (1 + 2 * c.layers) + static_cast<size_t>(2) * c.head_dim * c.layers) * 4;
  return w;
}

void fill_dummy_host(ModelWeights& w, int threads) {
  std::vector<Matrix*> ms{&w.embed};
  for (Matrix* m : weight_matrices(w)) ms.push_back(m);
  for (LayerWeights& L : w.layers)
    if (L.moe) ms.push_back(&L.router);
  std::vector<Matrix*> todo;
  for (Matrix* m : ms) {
    if (m->data || m->dummy_id < 0) continue;  // a tied lm_head shares the embedding table's memory
    const size_t bytes = static_cast<size_t>(m->rows) * m->cols * 2;
    w.owned.push_back({std::unique_ptr<uint8_t[]>(new uint8_t[bytes]), bytes});
    m->data = w.owned.back().data.get();
    todo.push_back(m);
  }
  if (w.lm_head.dummy_id == w.embed.dummy_id) w.lm_head.data = w.embed.data;
  // Row chunks of every matrix, spread over plain threads (this runs once, before the backend's pool is busy).
  std::vector<std::pair<Matrix*, int64_t>> chunks;
  constexpr int64_t kRows = 1024;
  for (Matrix* m : todo)
    for (int64_t r = 0; r < m->rows; r += kRows) chunks.emplace_back(m, r);
  std::vector<std::thread> pool;
  const int n = std::max(1, threads);
  for (int t = 0; t < n; t++) {
    pool.emplace_back([&, t] {
      for (size_t i = t; i < chunks.size(); i += n) {
        Matrix* m = chunks[i].first;
        uint16_t* d = static_cast<uint16_t*>(const_cast<void*>(m->data));
        const int64_t r1 = std::min(m->rows, chunks[i].second + kRows);
        for (int64_t e = chunks[i].second * m->cols; e < r1 * m->cols; e++) d[e] = dummy_bf16(m->dummy_id, e, m->dummy_scale);
      }
    });
  }
  for (auto& th : pool) th.join();
}

}  // namespace moe
