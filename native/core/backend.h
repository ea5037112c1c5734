// The seam between the model graph (core/model.cpp) and the hardware. The CPU backend (native/cpu) is the
// readable reference; the CUDA backend (native/cuda) implements the same interface, one kernel family per
// op, and tools/backend-ops.cpp checks each op of one against the other.
//
// What a GPU needs from this line (learned from ggml-backend, nano-vllm's model runner, llm.c):
// - the backend owns the weights once loaded (place_weights): where they live and how they are laid out;
//   ops that read weights name them by layer index, never by pointer;
// - every buffer a step touches is allocated once at load (reserve: the Workspace for --max-num-batched-tokens
//   and the KV pool), so addresses are fixed across steps (what a captured CUDA graph replays);
// - the step's metadata (token ids, positions, KV slots, block tables) goes in once per step (begin_step),
//   not once per layer;
// - logits rows, their processing, sampling and logprobs stay behind the backend (sample): only token ids
//   and top logprobs come back, never vocabulary-wide rows;
// - fused ops (add_rmsnorm, qkv) have composing defaults, so a backend fuses only where it pays;
// - the element types of activations and of the KV cache are the backend's choice (Buffer carries them).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/step-io.h"
#include "core/weights.h"

namespace moe {

// A workspace buffer: backend memory (host for the CPU, device for CUDA) of rows × cols elements of dtype.
struct Buffer {
  void* data = nullptr;
  DType dtype = DType::F32;
  int64_t cols = 0;  // row width in elements
  float* f32() const { return static_cast<float*>(data); }
};

// The step's activations, each sized for max_tokens rows at reserve() and never moved afterwards.
struct Workspace {
  int max_tokens = 0;
  Buffer x;     // residual stream [T × hidden]
  Buffer h;     // normed input of the next projection [T × hidden]
  Buffer q;     // [T × heads·head_dim]
  Buffer k, v;  // [T × kv_heads·head_dim]
  Buffer attn;  // attention output [T × heads·head_dim]
  Buffer tmp;   // a sublayer's output before it joins the residual [T × hidden]
};

// One step as the backend needs it, host arrays; begin_step copies (uploads) what it keeps.
struct StepMeta {
  int num_tokens = 0, num_seqs = 0;
  const int32_t* tokens = nullptr;        // [T]
  const int32_t* positions = nullptr;     // [T]
  const int32_t* seq_of_token = nullptr;  // [T]
  const int32_t* seq_start = nullptr;     // [S + 1]
  const int64_t* slot_of_token = nullptr; // [T] KV slot each token's k, v are written to
  const int32_t* block_tables = nullptr;  // [S × table_width]; slot of position j: table[j / bs] · bs + j % bs
  int table_width = 0;
  int block_size = 0;
};

// The rows of the step that need logits, in the order their outputs are written.
struct LogitRows {
  std::vector<int32_t> token;  // row of the workspace's x
  std::vector<int32_t> seq;    // its sequence
};

enum class Norm { Input, PostAttn, Final };  // Final ignores the layer index
enum class Proj { Q, K, V, O };

struct PlaceOptions {
  bool code_bf16 = true;  // CPU: exponent-code bf16 matrices where the kernel set reads them (core/coded-bf16.h)
  bool mlock = false;     // CPU: lock what the steps read in RAM; a failure is reported, not fatal
  // Called (from the loading thread) as weights are paged in or uploaded.
  std::function<void(double done, double total)> progress;
};

// What place_weights did, for the start-up log and NativeModel's accessors.
struct WeightStats {
  size_t bytes = 0;         // the checkpoint's tensors
  size_t device_bytes = 0;  // backend memory holding them (0 for the CPU: the mapping is used in place)
  size_t coded_matrices = 0, coded_source_bytes = 0, coded_bytes = 0, coded_escapes = 0;
  bool locked = false;
  std::string lock_error;  // --mlock failed: why ("" otherwise)
};

// Device memory as the driver reports it; has_device false for the CPU (its KV is sized by bytes).
struct MemoryInfo {
  bool has_device = false;
  std::string device_name;
  size_t total = 0, free = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // ---- load time, in this order ----
  // Takes the host view of the checkpoint (mapped safetensors, or the shapes alone for dummy weights: every
  // Matrix data null, to be generated where the backend keeps them, core/dummy-weights.h).
  virtual void place_weights(const ModelConfig& cfg, ModelWeights w, const PlaceOptions& o) = 0;
  virtual const WeightStats& weight_stats() const = 0;
  virtual DType kv_dtype() const = 0;
  virtual size_t kv_bytes_per_token() const = 0;  // all layers, K and V
  // Allocates the workspace for max_tokens tokens per step and everything the ops need for them.
  virtual void reserve(int max_tokens) = 0;
  virtual const Workspace& workspace() const = 0;
  virtual MemoryInfo memory() const = 0;  // after reserve: what is left for the KV pool
  virtual void init_kv(int num_blocks, int block_size) = 0;

  // ---- once per step ----
  virtual void begin_step(const StepMeta& m) = 0;

  // ---- the ops, over the step's T tokens unless given rows ----
  virtual void embed(const Buffer& out) = 0;
  virtual void rmsnorm(Norm which, int layer, const Buffer& x, int rows, const Buffer& out) = 0;
  // x += y, then out = rmsnorm(x) (the residual add and the next sublayer's norm).
  virtual void add_rmsnorm(Norm which, int layer, const Buffer& x, const Buffer& y, int rows, const Buffer& out) {
    add(x, y, rows);
    rmsnorm(which, layer, x, rows, out);
  }
  // out[T × W.rows] = in · Wᵀ for the layer's projection.
  virtual void project(int layer, Proj p, const Buffer& in, const Buffer& out) = 0;
  virtual void qkv(int layer, const Buffer& h, const Buffer& q, const Buffer& k, const Buffer& v) {
    project(layer, Proj::Q, h, q);
    project(layer, Proj::K, h, k);
    project(layer, Proj::V, h, v);
  }
  virtual void add(const Buffer& x, const Buffer& y, int rows) = 0;  // x += y over rows × x.cols
  // Per-head RMSNorm of q and k (q_norm, k_norm), then NeoX RoPE at each token's position, in place.
  virtual void qk_norm_rope(int layer, const Buffer& q, const Buffer& k) = 0;
  // Writes the step's k, v into their KV slots, then causal GQA attention of q over each sequence's KV.
  virtual void attention(int layer, const Buffer& q, const Buffer& k, const Buffer& v, const Buffer& out) = 0;
  // Router softmax (fp32) → top-k → optional renormalisation → experts grouped by expert → weighted sum.
  virtual void moe(int layer, const Buffer& h, const Buffer& out) = 0;
  // down(silu(gate(h)) · up(h)) of a dense layer.
  virtual void mlp(int layer, const Buffer& h, const Buffer& out) = 0;
  // For each row: final norm of x's row, lm_head, logits processing, sampling and logprobs as StepInput
  // asks (core/sampler.h semantics); writes out's per-sequence and per-token fields for these rows
  // (model.cpp sizes them and fills the rest with -1 / NaN).
  virtual void sample(const Buffer& x, const LogitRows& rows, const StepInput& in, StepOutput& out) = 0;

  // ---- for tools and tests (tools/backend-ops.cpp): synchronous copies of n elements between host f32 and a
  // workspace buffer (converted when the buffer's dtype is not F32) ----
  virtual void upload(const Buffer& dst, const float* src, size_t n) = 0;
  virtual void download(const Buffer& src, float* dst, size_t n) = 0;
};

}  // namespace moe
