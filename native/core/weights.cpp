#include "core/weights.h"

#include <cstring>
#include <unordered_set>

#include "core/half.h"

namespace moe {
namespace {

Matrix matrix(const TensorSet& ts, const std::string& name, int64_t rows, int64_t cols) {
  const TensorView& t = ts.require(name, {rows, cols});
  return Matrix{t.data, t.dtype, rows, cols};
}

std::vector<float> vec_f32(const TensorSet& ts, const std::string& name, int64_t n) {
  const TensorView& t = ts.require(name, {n});
  std::vector<float> out(static_cast<size_t>(n));
  const uint8_t* p = static_cast<const uint8_t*>(t.data);
  for (int64_t i = 0; i < n; i++) {
    uint16_t h;
    switch (t.dtype) {
      case DType::F32: std::memcpy(&out[i], p + 4 * i, 4); break;
      case DType::BF16: std::memcpy(&h, p + 2 * i, 2); out[i] = bf16_to_f32(h); break;
      case DType::F16: std::memcpy(&h, p + 2 * i, 2); out[i] = f16_to_f32(h); break;
    }
  }
  return out;
}

Mlp mlp(const TensorSet& ts, const std::string& prefix, int64_t hidden, int64_t inter) {
  return Mlp{matrix(ts, prefix + "gate_proj.weight", inter, hidden), matrix(ts, prefix + "up_proj.weight", inter, hidden),
             matrix(ts, prefix + "down_proj.weight", hidden, inter)};
}

}  // namespace

ModelWeights load_weights(const std::vector<std::string>& files, const ModelConfig& c) {
  if (files.empty()) throw LoadError("no safetensors files given");
  ModelWeights w;
  w.tensors = std::make_unique<TensorSet>();
  for (const auto& f : files) w.tensors->add(SafetensorsFile::open(f));
  const TensorSet& ts = *w.tensors;
  const int64_t H = c.hidden;
  w.embed = matrix(ts, "model.embed_tokens.weight", c.vocab, H);
  w.lm_head = c.tie_word_embeddings ? w.embed : matrix(ts, "lm_head.weight", c.vocab, H);
  w.final_norm = vec_f32(ts, "model.norm.weight", H);
  w.layers.resize(c.layers);
  for (int l = 0; l < c.layers; l++) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights& L = w.layers[l];
    L.input_norm = vec_f32(ts, p + "input_layernorm.weight", H);
    L.post_attn_norm = vec_f32(ts, p + "post_attention_layernorm.weight", H);
    L.q = matrix(ts, p + "self_attn.q_proj.weight", c.q_dim(), H);
    L.k = matrix(ts, p + "self_attn.k_proj.weight", c.kv_dim(), H);
    L.v = matrix(ts, p + "self_attn.v_proj.weight", c.kv_dim(), H);
    L.o = matrix(ts, p + "self_attn.o_proj.weight", H, c.q_dim());
    L.q_norm = vec_f32(ts, p + "self_attn.q_norm.weight", c.head_dim);
    L.k_norm = vec_f32(ts, p + "self_attn.k_norm.weight", c.head_dim);
    L.moe = c.moe_layers[l];
    if (L.moe) {
      L.router = matrix(ts, p + "mlp.gate.weight", c.experts, H);
      L.experts.reserve(c.experts);
      for (int e = 0; e < c.experts; e++) {
        L.experts.push_back(mlp(ts, p + "mlp.experts." + std::to_string(e) + ".", H, c.moe_intermediate));
      }
    } else {
      L.dense = mlp(ts, p + "mlp.", H, c.intermediate);
    }
  }
  w.bytes = ts.total_bytes();
  return w;
}

std::vector<Matrix*> weight_matrices(ModelWeights& w) {
  std::vector<Matrix*> out;
  // A tied lm_head is also the embedding table (dummy weights: the same tensor id, data not generated yet).
  if (w.lm_head.data != w.embed.data || w.lm_head.dummy_id != w.embed.dummy_id) out.push_back(&w.lm_head);
  auto mlp_of = [&](Mlp& m) {
    out.push_back(&m.gate);
    out.push_back(&m.up);
    out.push_back(&m.down);
  };
  for (LayerWeights& L : w.layers) {
    for (Matrix* m : {&L.q, &L.k, &L.v, &L.o}) out.push_back(m);
    if (L.moe) {
      for (Mlp& e : L.experts) mlp_of(e);
    } else {
      mlp_of(L.dense);
    }
  }
  return out;
}

void lock_weights(ModelWeights& w) {
  std::unordered_set<const void*> replaced;
  for (const auto& c : w.coded) replaced.insert(c->source);
  std::string err;
  for (size_t i = 0; err.empty() && i < w.owned.size(); i++) {
    if (replaced.count(w.owned[i].data.get())) continue;
    if (!(err = lock_range(w.owned[i].data.get(), w.owned[i].bytes)).empty()) err = "mlock of the generated weights failed: " + err;
  }
  static const std::vector<std::unique_ptr<SafetensorsFile>> kNoFiles;
  for (const auto& f : w.tensors ? w.tensors->files() : kNoFiles) {
    bool whole = true;
    for (const auto& t : f->tensors()) whole = whole && !replaced.count(t.data);
    if (whole) {
      if (!(err = f->lock_memory()).empty()) err = "mlock of " + f->path() + " failed: " + err;
    } else {
      for (const auto& t : f->tensors()) {
        if (replaced.count(t.data)) continue;
        if (!(err = lock_range(t.data, t.nbytes)).empty()) {
          err = "mlock of " + t.name + " in " + f->path() + " failed: " + err;
          break;
        }
      }
    }
    if (!err.empty()) break;
  }
  for (size_t i = 0; err.empty() && i < w.coded.size(); i++) {
    if (!(err = lock_range(w.coded[i]->data.get(), w.coded[i]->bytes())).empty()) err = "mlock of the coded weights failed: " + err;
  }
  w.locked = err.empty();
  w.lock_error = err;
}

}  // namespace moe
