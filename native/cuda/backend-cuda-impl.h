// CudaBackend's declaration, shared by backend-cuda.cu (workspace, step metadata, ops, sampling) and
// weights-cuda.cu (place_weights). Everything a step touches is allocated by place_weights, reserve and init_kv;
// steps allocate nothing.
#pragma once
#include <cuda_runtime_api.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/backend.h"
#include "cuda/kernels-cuda.h"
#include "cuda/sampler-cuda.h"

namespace moe {

// An op's activation buffer: F32 backend memory with rows of at least cols elements.
inline void check_buffer(const Buffer& b, int64_t cols, const char* op, const char* what) {
  if (!b.data || b.dtype != DType::F32 || b.cols < cols) {
    throw std::invalid_argument(std::string(op) + ": buffer " + what + " must be F32 device memory of at least " +
                                std::to_string(cols) + " columns");
  }
}

// Device allocations released together (weights, or the workspace and scratch).
class DeviceArena {
 public:
  DeviceArena() = default;
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;
  ~DeviceArena() { release(); }
  void* alloc(size_t bytes, const char* op);
  template <typename T>
  T* alloc_n(size_t n, const char* op) { return static_cast<T*>(alloc(n * sizeof(T), op)); }
  void release();
  size_t bytes() const { return bytes_; }

 private:
  std::vector<void*> ptrs_;
  size_t bytes_ = 0;
};

class CudaBackend : public Backend {
 public:
  CudaBackend(int device, int host_threads);
  ~CudaBackend() override;

  std::string name() const override;
  void place_weights(const ModelConfig& cfg, ModelWeights w, const PlaceOptions& o) override;  // weights-cuda.cu
  const WeightStats& weight_stats() const override { return stats_; }
  DType kv_dtype() const override { return DType::BF16; }
  size_t kv_bytes_per_token() const override;
  void reserve(int max_tokens) override;
  const Workspace& workspace() const override { return ws_; }
  MemoryInfo memory() const override;
  void init_kv(int num_blocks, int block_size) override;
  void begin_step(const StepMeta& m) override;

  void embed(const Buffer& out) override;
  void rmsnorm(Norm which, int layer, const Buffer& x, int rows, const Buffer& out) override;
  void add_rmsnorm(Norm which, int layer, const Buffer& x, const Buffer& y, int rows, const Buffer& out) override;
  void project(int layer, Proj p, const Buffer& in, const Buffer& out) override;
  void qkv(int layer, const Buffer& h, const Buffer& q, const Buffer& k, const Buffer& v) override;
  void add(const Buffer& x, const Buffer& y, int rows) override;
  void qk_norm_rope(int layer, const Buffer& q, const Buffer& k) override;
  void attention(int layer, const Buffer& q, const Buffer& k, const Buffer& v, const Buffer& out) override;
  void moe(int layer, const Buffer& h, const Buffer& out) override;
  void mlp(int layer, const Buffer& h, const Buffer& out) override;
  void sample(const Buffer& x, const LogitRows& rows, const StepInput& in, StepOutput& out) override;
  void upload(const Buffer& dst, const float* src, size_t n) override;
  void download(const Buffer& src, float* dst, size_t n) override;

 private:
  // A layer's weights on the device: matrices bf16 [rows × cols] row-major as in the checkpoint.
  struct Layer {
    bf16* qkv = nullptr;  // q, k, v stacked: [(q_dim + 2·kv_dim) × hidden]
    bf16* o = nullptr;
    bool moe = false;
    bf16* router = nullptr;                           // [E × H]
    bf16 *gate = nullptr, *up = nullptr;              // [E × I × H] (dense: [I × H])
    bf16* down = nullptr;                             // [E × H × I] (dense: [H × I])
    int inter = 0;                                    // I
    float *input_norm = nullptr, *post_norm = nullptr, *q_norm = nullptr, *k_norm = nullptr;
  };

  void set_device() const;
  const Layer& layer(int l, const char* op) const;
  const float* norm_weight(Norm which, int layer, const char* op) const;
  void require_step(const char* op) const;
  void release_workspace();
  bf16* k_cache(int l) const { return kv_ + static_cast<size_t>(2 * l) * kv_layer_elems_; }
  bf16* v_cache(int l) const { return kv_ + static_cast<size_t>(2 * l + 1) * kv_layer_elems_; }

  int device_;
  cudaStream_t stream_ = nullptr;
  std::string device_name_;
  ModelConfig cfg_;
  bool placed_ = false;
  WeightStats stats_;

  DeviceArena weights_;
  std::vector<Layer> layers_;
  bf16* embed_ = nullptr;
  bf16* lm_head_ = nullptr;  // == embed_ when tied
  float* final_norm_ = nullptr;
  float* inv_freq_ = nullptr;

  // reserve(): workspace and scratch for max_tokens tokens.
  DeviceArena scratch_;
  Workspace ws_;
  int max_tokens_ = 0;
  float* rope_table_ = nullptr;     // [T × head_dim]: cos then sin (× attention factor) per token
  float* router_logits_ = nullptr;  // [T × E]
  int32_t* choice_ = nullptr;       // [T × k]
  float* topk_weight_ = nullptr;    // [T × k]
  int32_t* row_of_ = nullptr;       // [T × k] assignment → grouped row
  int32_t* src_row_ = nullptr;      // [T × k] grouped row → token
  int4* tiles_ = nullptr;           // grouped GEMM tile list
  int32_t* num_tiles_ = nullptr;
  int max_tiles_ = 0;
  float* gated_ = nullptr;      // [T × k × I] silu(gate)·up of each assignment (dense: [T × intermediate])
  float* down_out_ = nullptr;   // [T × k × H] each assignment's expert output
  float* norm_rows_ = nullptr;  // [kLogitChunk × H] final-normed rows for lm_head
  float* logits_ = nullptr;     // [kLogitChunk × vocab]
  int32_t* logit_rows_dev_ = nullptr;
  int32_t* logit_rows_host_ = nullptr;  // pinned
  cudaEvent_t rows_copied_ = nullptr;   // the last copy of logit_rows_host_ is done
  std::unique_ptr<CudaSampler> sampler_;

  // Step metadata: packed in pinned host memory, one async copy to the same layout on the device.
  // Layout (bytes): slot_of_token int64 [T] | tokens [T] | positions [T] | seq_of_token [T] | seq_start [S + 1] |
  // block_tables [S × W]. Capacity: T, S ≤ max_tokens and S × W ≤ table_capacity_ entries.
  void* meta_host_ = nullptr;
  void* meta_dev_ = nullptr;
  size_t meta_bytes_ = 0;
  size_t table_capacity_ = 0;
  cudaEvent_t meta_copied_ = nullptr;  // the previous step's copy has left meta_host_
  int T_ = 0, S_ = 0, W_ = 0;
  const int64_t* d_slots_ = nullptr;
  const int32_t *d_tokens_ = nullptr, *d_positions_ = nullptr, *d_seq_of_token_ = nullptr, *d_tables_ = nullptr;

  // init_kv(): per layer K then V, each [num_blocks × block_size × kv_dim] bf16, in one allocation.
  bf16* kv_ = nullptr;
  size_t kv_layer_elems_ = 0;
  int num_blocks_ = 0, block_size_ = 0;
};

}  // namespace moe
