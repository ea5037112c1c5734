// The model's tensors, resolved by name from the checkpoint and checked against the config.
// Large matrices stay in the mmap (used in place); only the small norm vectors are copied to f32.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/coded-bf16.h"
#include "core/config.h"
#include "core/safetensors.h"

namespace moe {

// A row-major [rows, cols] matrix (HF layout [out, in]) inside a mapping.
struct Matrix {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  // Set when the backend coded this matrix at load (core/coded-bf16.h); data then stays the checkpoint's
  // bf16 (mapped, possibly released from RAM) and only kernels with KernelSet::codes_bf16 see the matrix.
  const CodedBf16* coded = nullptr;
  // --load-format dummy: data is null until the backend generates the matrix (core/dummy-weights.h); this is
  // its tensor id there, and its values' scale. -1 for a checkpoint's matrix.
  int32_t dummy_id = -1;
  float dummy_scale = 0;
  size_t row_bytes() const { return static_cast<size_t>(cols) * dtype_size(dtype); }
  const void* row(int64_t r) const { return static_cast<const uint8_t*>(data) + r * row_bytes(); }
};

struct Mlp {
  Matrix gate, up, down;  // gate/up [I, H], down [H, I]
};

struct LayerWeights {
  std::vector<float> input_norm, post_attn_norm, q_norm, k_norm;
  Matrix q, k, v, o;
  bool moe = false;
  Matrix router;             // [E, H] (MoE layers)
  std::vector<Mlp> experts;  // MoE layers
  Mlp dense;                 // dense layers
};

struct ModelWeights {
  std::unique_ptr<TensorSet> tensors;  // null for dummy weights
  // Host memory the matrices point into when they were not mapped from a checkpoint (dummy weights).
  struct Owned {
    std::unique_ptr<uint8_t[]> data;
    size_t bytes = 0;
  };
  std::vector<Owned> owned;
  Matrix embed, lm_head;
  std::vector<float> final_norm;
  std::vector<LayerWeights> layers;
  size_t bytes = 0;
  // Matrices the backend coded at load (Matrix::coded points into these), and what that changed.
  std::vector<std::unique_ptr<CodedBf16>> coded;
  size_t coded_source_bytes = 0, coded_bytes = 0, coded_escapes = 0;
  // --mlock: whether every file is locked in RAM, else why not ("" when it was not asked for).
  bool locked = false;
  std::string lock_error;
};

// Opens every file, validates it, and resolves every tensor the config needs (throws LoadError naming file and tensor).
ModelWeights load_weights(const std::vector<std::string>& files, const ModelConfig& cfg);

// Every matrix a backend may re-lay at load (all but the embedding table, the router and the norms).
std::vector<Matrix*> weight_matrices(ModelWeights& w);

// --mlock: locks what the steps read (the checkpoint's tensors, except those whose coded form replaced
// them, and the coded forms); sets w.locked / w.lock_error (a failure is reported, not fatal).
void lock_weights(ModelWeights& w);

}  // namespace moe
