// The CPU backend: a persistent thread pool, the kernel set chosen at run time, and the checkpoint's mapping
// read in place (the readable reference every other backend is tested against).
#pragma once
#include <algorithm>
#include <memory>
#include <vector>

#include "core/backend.h"
#include "cpu/kernels.h"
#include "cpu/thread-pool.h"

namespace moe {

class CpuBackend : public Backend {
 public:
  // kv_dtype: the KV cache's storage, BF16 (k and v rounded to nearest even as they are written) or F32 (exact).
  // exact: the set for the router where `kernels` rounds activations to bf16 (null: `kernels` itself). With
  // rounded activations and a bf16 KV cache, q is rounded to bf16 after RoPE as well (llama.cpp's flash
  // attention rounds q to the K cache's type), so that the mode is llama.cpp's bf16 arithmetic throughout.
  CpuBackend(int threads, const KernelSet& kernels, DType kv_dtype = DType::F32, const KernelSet* exact = nullptr);
  std::string name() const override;

  void place_weights(const ModelConfig& cfg, ModelWeights w, const PlaceOptions& o) override;  // place-cpu.cpp
  const WeightStats& weight_stats() const override { return stats_; }
  DType kv_dtype() const override { return kv_dtype_; }
  size_t kv_bytes_per_token() const override;
  void reserve(int max_tokens) override;
  const Workspace& workspace() const override { return ws_; }
  MemoryInfo memory() const override { return MemoryInfo{}; }
  void init_kv(int num_blocks, int block_size) override;
  void begin_step(const StepMeta& m) override;

  void embed(const Buffer& out) override;
  void rmsnorm(Norm which, int layer, const Buffer& x, int rows, const Buffer& out) override;
  void project(int layer, Proj p, const Buffer& in, const Buffer& out) override;
  void add(const Buffer& x, const Buffer& y, int rows) override;
  void qk_norm_rope(int layer, const Buffer& q, const Buffer& k) override;
  void attention(int layer, const Buffer& q, const Buffer& k, const Buffer& v, const Buffer& out) override;  // attention-cpu.cpp
  void moe(int layer, const Buffer& h, const Buffer& out) override;  // moe-cpu.cpp
  void mlp(int layer, const Buffer& h, const Buffer& out) override;
  void sample(const Buffer& x, const LogitRows& rows, const StepInput& in, StepOutput& out) override;  // sample-cpu.cpp

  void upload(const Buffer& dst, const float* src, size_t n) override { std::copy(src, src + n, dst.f32()); }
  void download(const Buffer& src, float* dst, size_t n) override { std::copy(src.f32(), src.f32() + n, dst); }

  int threads() const { return pool_.size(); }
  const KernelSet& kernels() const { return k_; }

 private:
  // out[T × w.rows] = x · wᵀ, rows split across threads, on kernel set ks (default k_).
  void matmul_into(const float* x, int64_t T, const Matrix& w, float* out, int64_t ldo) { matmul_into(k_, x, T, w, out, ldo); }
  void matmul_into(const KernelSet& ks, const float* x, int64_t T, const Matrix& w, float* out, int64_t ldo);
  // x (T × K) packed into scratch `slot` for ks.matmul_tiles against weights of dtype dt, tiles spread over the
  // threads; null where the kernel set has no tiled path for this shape (then matmul_rows reads x as it is).
  const float* pack_tiles(const float* x, int64_t T, int64_t K, DType dt, int slot) { return pack_tiles(k_, x, T, K, dt, slot); }
  const float* pack_tiles(const KernelSet& ks, const float* x, int64_t T, int64_t K, DType dt, int slot);
  void rmsnorm_rows(const float* x, const float* w, int64_t rows, int dim, float* out);
  // Private scratch of the ops: grown on demand (host memory has no fixed-address need), never shrunk.
  float* scratch(int slot, size_t n);
  float* thread_scratch(int thread, size_t n);
  void code_weights();  // coding-cpu.cpp

  static constexpr int kTilesSlot = 30;  // scratch slot of matmul_into's packed tiles

  ThreadPool pool_;
  const KernelSet& k_;
  const KernelSet& exact_;  // the router's set (k_ unless k_ rounds activations)
  ModelConfig cfg_;
  ModelWeights w_;
  WeightStats stats_;
  Workspace ws_;
  std::vector<std::vector<float>> ws_store_;
  std::vector<std::vector<float>> scratch_;
  std::vector<std::vector<float>> thread_scratch_;
  // The step (begin_step): host arrays, copied so the op calls need no lifetime guarantee from the caller.
  int T_ = 0, S_ = 0, table_width_ = 0;
  std::vector<int32_t> tokens_, positions_, seq_of_token_, block_tables_;
  std::vector<int64_t> slots_;
  // KV pool: per layer, [num_blocks × block_size][kv_dim] for K and for V, in f32 or bf16 (kv_dtype_; the
  // other pair stays empty).
  DType kv_dtype_;
  std::vector<std::vector<float>> k_cache_, v_cache_;
  std::vector<std::vector<uint16_t>> k_cache16_, v_cache16_;
  int block_size_ = 0;
};

}  // namespace moe
