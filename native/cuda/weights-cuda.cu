// CudaBackend::place_weights: every matrix to the device as bf16 (bf16 copied as is, f16 and f32 rounded to
// nearest even on the host), the norm vectors and RoPE frequencies as fp32. Host data goes through two pinned
// staging buffers so conversion of one chunk overlaps the copy of the other. Dummy weights are generated on the
// device (core/dummy-weights.h). Each MoE layer's experts are stacked ([E × I × H] gate and up, [E × H × I]
// down) so a grouped GEMM reaches expert e at e × rows × cols. The host ModelWeights (and its mapping) is
// released when this returns.
#include <cstring>
#include <stdexcept>
#include <string>

#include "core/half.h"
#include "cuda/backend-cuda-impl.h"
#include "cuda/cuda-check.h"

namespace moe {
namespace {

constexpr const char* kOp = "place_weights";

uint16_t f32_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN stays (quiet) NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

size_t matrix_bytes(const Matrix& m) { return static_cast<size_t>(m.rows) * m.cols * dtype_size(m.dtype); }

class Uploader {
 public:
  Uploader(cudaStream_t s, const std::function<void(double, double)>& progress, double total)
      : s_(s), progress_(progress), total_(total) {
    try {
      for (int i = 0; i < 2; i++) {
        CUDA_CHECK_OP(kOp, cudaMallocHost(&stage_[i], kStageElems * sizeof(uint16_t)));
        CUDA_CHECK_OP(kOp, cudaEventCreateWithFlags(&done_[i], cudaEventDisableTiming));
      }
    } catch (...) {
      release();  // a constructor that throws runs no destructor
      throw;
    }
  }
  ~Uploader() { release(); }
  Uploader(const Uploader&) = delete;
  Uploader& operator=(const Uploader&) = delete;

  // dst[rows × cols] bf16 = m, after checking m's shape.
  void matrix(const Matrix& m, int64_t rows, int64_t cols, bf16* dst, const std::string& what) {
    if (m.rows != rows || m.cols != cols) {
      throw std::invalid_argument(std::string(kOp) + ": " + what + " is [" + std::to_string(m.rows) + ", " + std::to_string(m.cols) +
                                  "], the config needs [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
    }
    const size_t n = static_cast<size_t>(rows) * cols;
    if (!m.data) {
      if (m.dummy_id < 0) throw std::invalid_argument(std::string(kOp) + ": " + what + " has neither data nor a dummy id");
      launch_fill_dummy(reinterpret_cast<uint16_t*>(dst), n, static_cast<uint32_t>(m.dummy_id), 0, m.dummy_scale, s_);
      advance(n * dtype_size(m.dtype));
      return;
    }
    const uint8_t* src = static_cast<const uint8_t*>(m.data);
    const size_t es = dtype_size(m.dtype);
    for (size_t i0 = 0; i0 < n; i0 += kStageElems) {
      const size_t cnt = n - i0 < kStageElems ? n - i0 : kStageElems;
      CUDA_CHECK_OP(kOp, cudaEventSynchronize(done_[cur_]));  // the copy that last read this buffer is done
      uint16_t* st = stage_[cur_];
      const uint8_t* p = src + i0 * es;
      switch (m.dtype) {
        case DType::BF16: std::memcpy(st, p, cnt * 2); break;
        case DType::F16:
          for (size_t i = 0; i < cnt; i++) {
            uint16_t h;
            std::memcpy(&h, p + 2 * i, 2);
            st[i] = f32_to_bf16_bits(f16_to_f32(h));
          }
          break;
        case DType::F32:
          for (size_t i = 0; i < cnt; i++) {
            float f;
            std::memcpy(&f, p + 4 * i, 4);
            st[i] = f32_to_bf16_bits(f);
          }
          break;
      }
      CUDA_CHECK_OP(kOp, cudaMemcpyAsync(dst + i0, st, cnt * 2, cudaMemcpyHostToDevice, s_));
      CUDA_CHECK_OP(kOp, cudaEventRecord(done_[cur_], s_));
      cur_ ^= 1;
      advance(cnt * es);
    }
  }

  // Small fp32 vectors: pageable copies (staged by the driver before the call returns).
  void floats(const std::vector<float>& v, size_t n, float* dst, const std::string& what) {
    if (v.size() != n) {
      throw std::invalid_argument(std::string(kOp) + ": " + what + " has " + std::to_string(v.size()) + " entries, the config needs " +
                                  std::to_string(n));
    }
    CUDA_CHECK_OP(kOp, cudaMemcpyAsync(dst, v.data(), n * sizeof(float), cudaMemcpyHostToDevice, s_));
  }

  void finish() { CUDA_CHECK_OP(kOp, cudaStreamSynchronize(s_)); }

 private:
  void release() {
    cudaStreamSynchronize(s_);
    for (int i = 0; i < 2; i++) {
      if (done_[i]) cudaEventDestroy(done_[i]);
      if (stage_[i]) cudaFreeHost(stage_[i]);
      done_[i] = nullptr;
      stage_[i] = nullptr;
    }
  }

  void advance(size_t bytes) {
    done_bytes_ += static_cast<double>(bytes);
    if (progress_) progress_(done_bytes_, total_);
  }

  static constexpr size_t kStageElems = size_t{8} << 20;  // 16 MiB of bf16 per staging buffer
  cudaStream_t s_;
  std::function<void(double, double)> progress_;
  double total_, done_bytes_ = 0;
  uint16_t* stage_[2] = {nullptr, nullptr};
  cudaEvent_t done_[2] = {nullptr, nullptr};
  int cur_ = 0;
};

}  // namespace

void CudaBackend::place_weights(const ModelConfig& cfg, ModelWeights w, const PlaceOptions& o) {
  set_device();
  if (placed_) throw std::logic_error("place_weights: weights are already placed");
  const int H = cfg.hidden, E = cfg.experts, qd = cfg.q_dim(), kvd = cfg.kv_dim(), hd = cfg.head_dim;
  if (cfg.layers <= 0 || H <= 0 || cfg.heads <= 0 || cfg.kv_heads <= 0 || hd <= 0 || hd % 2 != 0 || cfg.vocab <= 0 ||
      cfg.heads % cfg.kv_heads != 0) {
    throw std::invalid_argument("place_weights: unsupported shape (heads a multiple of kv_heads, even head_dim)");
  }
  if (static_cast<int>(w.layers.size()) != cfg.layers || static_cast<int>(cfg.moe_layers.size()) != cfg.layers) {
    throw std::invalid_argument("place_weights: layer count differs from the config");
  }
  if (static_cast<int>(cfg.rope_inv_freq.size()) != hd / 2) throw std::invalid_argument("place_weights: rope_inv_freq must have head_dim / 2 entries");
  bool any_moe = false;
  for (const LayerWeights& L : w.layers) any_moe = any_moe || L.moe;
  if (any_moe && (E <= 0 || E > 1024 || cfg.top_k <= 0 || cfg.top_k > E || cfg.moe_intermediate <= 0)) {
    throw std::invalid_argument("place_weights: MoE layers need 1 <= top_k <= experts <= 1024");
  }
  const bool tied = cfg.tie_word_embeddings || (w.lm_head.data && w.lm_head.data == w.embed.data) ||
                    (!w.lm_head.data && w.lm_head.dummy_id >= 0 && w.lm_head.dummy_id == w.embed.dummy_id);

  size_t total = matrix_bytes(w.embed) + (tied ? 0 : matrix_bytes(w.lm_head));
  for (const LayerWeights& L : w.layers) {
    for (const Matrix* m : {&L.q, &L.k, &L.v, &L.o}) total += matrix_bytes(*m);
    if (L.moe) {
      total += matrix_bytes(L.router);
      for (const Mlp& x : L.experts) total += matrix_bytes(x.gate) + matrix_bytes(x.up) + matrix_bytes(x.down);
    } else {
      total += matrix_bytes(L.dense.gate) + matrix_bytes(L.dense.up) + matrix_bytes(L.dense.down);
    }
  }
  // A failure part way frees what was allocated (after ~Uploader has waited for the copies into it).
  struct Undo {
    CudaBackend& b;
    bool keep = false;
    ~Undo() {
      if (keep) return;
      b.weights_.release();
      b.layers_.clear();
      b.embed_ = b.lm_head_ = nullptr;
      b.final_norm_ = b.inv_freq_ = nullptr;
    }
  } undo{*this};
  Uploader up(stream_, o.progress, static_cast<double>(total));
  auto mat = [&](int64_t rows, int64_t cols) { return weights_.alloc_n<bf16>(static_cast<size_t>(rows) * cols, kOp); };
  auto vec = [&](const std::vector<float>& v, size_t n, const std::string& what) {
    float* d = weights_.alloc_n<float>(n, kOp);
    up.floats(v, n, d, what);
    return d;
  };

  embed_ = mat(cfg.vocab, H);
  up.matrix(w.embed, cfg.vocab, H, embed_, "embed_tokens");
  if (tied) {
    lm_head_ = embed_;
  } else {
    lm_head_ = mat(cfg.vocab, H);
    up.matrix(w.lm_head, cfg.vocab, H, lm_head_, "lm_head");
  }
  final_norm_ = vec(w.final_norm, H, "model.norm");
  inv_freq_ = vec(cfg.rope_inv_freq, hd / 2, "rope_inv_freq");
  layers_.assign(cfg.layers, Layer());
  for (int l = 0; l < cfg.layers; l++) {
    const LayerWeights& L = w.layers[l];
    Layer& d = layers_[l];
    const std::string p = "layer " + std::to_string(l) + " ";
    if (L.moe != static_cast<bool>(cfg.moe_layers[l])) throw std::invalid_argument("place_weights: " + p + "MoE flag differs from the config");
    d.qkv = mat(qd + 2 * kvd, H);
    up.matrix(L.q, qd, H, d.qkv, p + "q_proj");
    up.matrix(L.k, kvd, H, d.qkv + static_cast<size_t>(qd) * H, p + "k_proj");
    up.matrix(L.v, kvd, H, d.qkv + static_cast<size_t>(qd + kvd) * H, p + "v_proj");
    d.o = mat(H, qd);
    up.matrix(L.o, H, qd, d.o, p + "o_proj");
    d.input_norm = vec(L.input_norm, H, p + "input_layernorm");
    d.post_norm = vec(L.post_attn_norm, H, p + "post_attention_layernorm");
    d.q_norm = vec(L.q_norm, hd, p + "q_norm");
    d.k_norm = vec(L.k_norm, hd, p + "k_norm");
    d.moe = L.moe;
    if (L.moe) {
      const int I = cfg.moe_intermediate;
      if (static_cast<int>(L.experts.size()) != E) throw std::invalid_argument("place_weights: " + p + "expert count differs from the config");
      d.inter = I;
      d.router = mat(E, H);
      up.matrix(L.router, E, H, d.router, p + "router");
      d.gate = mat(static_cast<int64_t>(E) * I, H);
      d.up = mat(static_cast<int64_t>(E) * I, H);
      d.down = mat(static_cast<int64_t>(E) * H, I);
      const size_t per = static_cast<size_t>(I) * H;
      for (int e = 0; e < E; e++) {
        const std::string pe = p + "expert " + std::to_string(e) + " ";
        up.matrix(L.experts[e].gate, I, H, d.gate + e * per, pe + "gate_proj");
        up.matrix(L.experts[e].up, I, H, d.up + e * per, pe + "up_proj");
        up.matrix(L.experts[e].down, H, I, d.down + e * per, pe + "down_proj");
      }
    } else {
      const int I = cfg.intermediate;
      if (I <= 0) throw std::invalid_argument("place_weights: " + p + "is dense but intermediate_size is 0");
      d.inter = I;
      d.gate = mat(I, H);
      d.up = mat(I, H);
      d.down = mat(H, I);
      up.matrix(L.dense.gate, I, H, d.gate, p + "gate_proj");
      up.matrix(L.dense.up, I, H, d.up, p + "up_proj");
      up.matrix(L.dense.down, H, I, d.down, p + "down_proj");
    }
  }
  up.finish();
  undo.keep = true;
  cfg_ = cfg;
  stats_ = WeightStats();
  size_t norms = static_cast<size_t>(H) * (1 + 2 * cfg.layers) + static_cast<size_t>(2) * hd * cfg.layers;
  stats_.bytes = w.bytes ? w.bytes : total + norms * sizeof(float);
  stats_.device_bytes = weights_.bytes();
  placed_ = true;
}  // w, and with it the checkpoint's mapping, is released here

}  // namespace moe
