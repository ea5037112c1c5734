// The model shape the native side runs; filled from the JS NativeModelConfig (src/native/addon-types.ts).
#pragma once
#include <cstdint>
#include <vector>

namespace moe {

struct ModelConfig {
  int hidden = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0;
  int intermediate = 0, moe_intermediate = 0, experts = 0, top_k = 0;
  bool norm_topk_prob = false, tie_word_embeddings = false;
  float rms_eps = 1e-6f;
  std::vector<bool> moe_layers;      // per layer: sparse MoE block or dense MLP
  std::vector<float> rope_inv_freq;  // head_dim / 2
  float rope_attention_factor = 1.0f;

  int q_dim() const { return heads * head_dim; }
  int kv_dim() const { return kv_heads * head_dim; }
};

}  // namespace moe
