// The ops the model graph (core/model.cpp) is written against. The CPU backend (native/cpu) is the
// readable reference; a CUDA backend implements the same interface, one kernel family per op, and is
// tested op by op against the CPU one. Float pointers are backend memory (host for CPU, device for CUDA);
// index arrays are host memory describing the step.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "core/config.h"
#include "core/sampler.h"
#include "core/weights.h"

namespace moe {

// Where each token of the step sits: its position and, through its sequence's block table, its KV slots.
struct AttnMeta {
  const int32_t* positions = nullptr;  // per token
  const int32_t* seq_of_token = nullptr;
  const int32_t* block_tables = nullptr;  // num_seqs × table_width
  int table_width = 0;
  int block_size = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // Allocates the paged KV pool: per layer, num_blocks × block_size slots of K and V.
  virtual void init_kv(const ModelConfig& cfg, int num_blocks, int block_size) = 0;
  // Once after load, before the first step: the backend may re-lay weights where that pays (the CPU backend
  // codes bf16 matrices, core/coded-bf16.h, when code_bf16 is set and its kernels read them). Default: as they are.
  virtual void prepare_weights(ModelWeights& w, bool code_bf16) {
    (void)w;
    (void)code_bf16;
  }
  virtual size_t kv_bytes_per_token() const = 0;
  // Named scratch buffers reused across steps (grown on demand, never shrunk).
  virtual float* scratch(int slot, size_t n) = 0;
  // Host-side work over rows of logits (sampling, logprobs): fn(begin, end, worker) on up to workers() threads.
  virtual int workers() const = 0;
  virtual void for_rows(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn) = 0;
  virtual VecMath vec_math() const = 0;

  virtual void embed(const Matrix& table, const int32_t* tokens, int T, float* out) = 0;
  virtual void rmsnorm(const float* x, const float* w, int rows, int dim, float eps, float* out) = 0;
  // out[T × W.rows] = x[T × W.cols] · Wᵀ
  virtual void matmul(const float* x, int T, const Matrix& w, float* out) = 0;
  virtual void add(float* x, const float* y, size_t n) = 0;
  // Per-head RMSNorm of q and k (weights of head_dim), then NeoX RoPE at each token's position, in place.
  virtual void qk_norm_rope(float* q, float* k, int T, const float* q_norm, const float* k_norm, const ModelConfig& cfg,
                            const int32_t* positions) = 0;
  // Writes k, v of the step's tokens into their slots, then causal attention of q over each sequence's KV.
  virtual void attention(int layer, const float* q, const float* k, const float* v, int T, const ModelConfig& cfg,
                         const AttnMeta& meta, float* out) = 0;
  // out = down(silu(gate(h)) * up(h))
  virtual void mlp(const float* h, int T, const Mlp& m, float* out) = 0;
  // Router softmax (fp32) → top-k → optional renormalisation → experts grouped by expert, each read once.
  virtual void moe(const float* h, int T, const LayerWeights& w, const ModelConfig& cfg, float* out) = 0;
};

}  // namespace moe
