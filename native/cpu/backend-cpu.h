// The CPU backend: a persistent thread pool and the kernel set chosen at run time.
#pragma once
#include <memory>
#include <vector>

#include "core/backend.h"
#include "cpu/kernels.h"
#include "cpu/thread-pool.h"

namespace moe {

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(int threads);
  std::string name() const override;
  void init_kv(const ModelConfig& cfg, int num_blocks, int block_size) override;
  size_t kv_bytes_per_token() const override;
  void prepare_weights(ModelWeights& w, bool code_bf16) override;  // coding-cpu.cpp
  float* scratch(int slot, size_t n) override;
  int workers() const override { return pool_.size(); }
  void for_rows(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn) override { pool_.parallel_for(n, 1, fn); }
  VecMath vec_math() const override { return VecMath{k_.max, k_.exp_sum}; }

  void embed(const Matrix& table, const int32_t* tokens, int T, float* out) override;
  void rmsnorm(const float* x, const float* w, int rows, int dim, float eps, float* out) override;
  void matmul(const float* x, int T, const Matrix& w, float* out) override;
  void add(float* x, const float* y, size_t n) override;
  void qk_norm_rope(float* q, float* k, int T, const float* q_norm, const float* k_norm, const ModelConfig& cfg,
                    const int32_t* positions) override;
  void attention(int layer, const float* q, const float* k, const float* v, int T, const ModelConfig& cfg,
                 const AttnMeta& meta, float* out) override;
  void mlp(const float* h, int T, const Mlp& m, float* out) override;
  void moe(const float* h, int T, const LayerWeights& w, const ModelConfig& cfg, float* out) override;

  int threads() const { return pool_.size(); }
  const KernelSet& kernels() const { return k_; }

 private:
  // out[T × w.rows] = x · wᵀ, rows split across threads.
  void matmul_into(const float* x, int64_t T, const Matrix& w, float* out, int64_t ldo);
  // x (T × K) packed into scratch `slot` for k_.matmul_tiles against weights of dtype dt, tiles spread over the
  // threads; null where the kernel set has no tiled path for this shape (then matmul_rows reads x as it is).
  const float* pack_tiles(const float* x, int64_t T, int64_t K, DType dt, int slot);
  float* thread_scratch(int thread, size_t n);

  static constexpr int kTilesSlot = 30;  // scratch slot of matmul_into's packed tiles

  ThreadPool pool_;
  const KernelSet& k_;
  std::vector<std::vector<float>> scratch_;
  std::vector<std::vector<float>> thread_scratch_;
  // KV pool: per layer, [num_blocks × block_size][kv_dim] for K and for V.
  std::vector<std::vector<float>> k_cache_, v_cache_;
  int kv_dim_ = 0;
};

}  // namespace moe
