// CudaBackend's per-step ops: argument checks, then the launches of the kernel families (kernels-cuda.h) on the
// backend's stream. Ops over "the step's tokens" use begin_step's T; buffers' row strides are their cols.
#include <stdexcept>
#include <string>

#include "cuda/backend-cuda-impl.h"
#include "cuda/cuda-check.h"

namespace moe {
const CudaBackend::Layer& CudaBackend::layer(int l, const char* op) const {
  if (!placed_) throw std::logic_error(std::string(op) + ": place_weights first");
  if (l < 0 || l >= static_cast<int>(layers_.size())) throw std::invalid_argument(std::string(op) + ": layer " + std::to_string(l) + " out of range");
  return layers_[l];
}

const float* CudaBackend::norm_weight(Norm which, int l, const char* op) const {
  if (which == Norm::Final) {
    if (!placed_) throw std::logic_error(std::string(op) + ": place_weights first");
    return final_norm_;
  }
  const Layer& L = layer(l, op);
  return which == Norm::Input ? L.input_norm : L.post_norm;
}

void CudaBackend::require_step(const char* op) const {
  if (T_ <= 0) throw std::logic_error(std::string(op) + ": no step (begin_step first)");
}

// The ops given a row count run over rows of workspace buffers: at most max_tokens (reserve).
static void check_rows(int rows, int max_tokens, const char* op) {
  if (rows < 0 || rows > max_tokens) {
    throw std::invalid_argument(std::string(op) + ": " + std::to_string(rows) + " rows; the workspace holds " + std::to_string(max_tokens));
  }
}

void CudaBackend::embed(const Buffer& out) {
  const char* op = "embed";
  set_device();
  require_step(op);
  check_buffer(out, cfg_.hidden, op, "out");
  launch_embed(embed_, cfg_.hidden, d_tokens_, T_, out.f32(), out.cols, stream_);
}

void CudaBackend::rmsnorm(Norm which, int l, const Buffer& x, int rows, const Buffer& out) {
  const char* op = "rmsnorm";
  set_device();
  check_rows(rows, max_tokens_, op);
  const float* w = norm_weight(which, l, op);
  check_buffer(x, cfg_.hidden, op, "x");
  check_buffer(out, cfg_.hidden, op, "out");
  launch_rmsnorm(x.f32(), x.cols, nullptr, w, rows, cfg_.hidden, cfg_.rms_eps, out.f32(), out.cols, stream_);
}

void CudaBackend::add_rmsnorm(Norm which, int l, const Buffer& x, const Buffer& y, int rows, const Buffer& out) {
  const char* op = "add_rmsnorm";
  set_device();
  check_rows(rows, max_tokens_, op);
  const float* w = norm_weight(which, l, op);
  check_buffer(x, cfg_.hidden, op, "x");
  check_buffer(y, cfg_.hidden, op, "y");
  check_buffer(out, cfg_.hidden, op, "out");
  launch_add_rmsnorm(x.f32(), x.cols, y.f32(), y.cols, w, rows, cfg_.hidden, cfg_.rms_eps, out.f32(), out.cols, stream_);
}

void CudaBackend::add(const Buffer& x, const Buffer& y, int rows) {
  const char* op = "add";
  set_device();
  check_rows(rows, max_tokens_, op);
  check_buffer(x, 1, op, "x");
  check_buffer(y, x.cols, op, "y");
  launch_add(x.f32(), x.cols, y.f32(), y.cols, rows, x.cols, stream_);
}

void CudaBackend::project(int l, Proj p, const Buffer& in, const Buffer& out) {
  const char* op = "project";
  set_device();
  require_step(op);
  const Layer& L = layer(l, op);
  const int H = cfg_.hidden, qd = cfg_.q_dim(), kvd = cfg_.kv_dim();
  const bf16* w = L.o;
  int N = H, K = qd;
  switch (p) {
    case Proj::Q: w = L.qkv, N = qd, K = H; break;
    case Proj::K: w = L.qkv + static_cast<size_t>(qd) * H, N = kvd, K = H; break;
    case Proj::V: w = L.qkv + static_cast<size_t>(qd + kvd) * H, N = kvd, K = H; break;
    case Proj::O: break;
  }
  check_buffer(in, K, op, "in");
  check_buffer(out, N, op, "out");
  launch_gemm(gemm_args(in.f32(), in.cols, w, T_, N, K, out.f32(), out.cols), op, stream_);
}

// One GEMM against the stacked [q; k; v] weights, its output columns split into q, k and v.
void CudaBackend::qkv(int l, const Buffer& h, const Buffer& q, const Buffer& k, const Buffer& v) {
  const char* op = "qkv";
  set_device();
  require_step(op);
  const Layer& L = layer(l, op);
  const int H = cfg_.hidden, qd = cfg_.q_dim(), kvd = cfg_.kv_dim();
  check_buffer(h, H, op, "h");
  check_buffer(q, qd, op, "q");
  check_buffer(k, kvd, op, "k");
  check_buffer(v, kvd, op, "v");
  GemmArgs g = gemm_args(h.f32(), h.cols, L.qkv, T_, qd + 2 * kvd, H, q.f32(), q.cols);
  g.n1 = qd;
  g.C1 = k.f32();
  g.ldc1 = k.cols;
  g.n2 = qd + kvd;
  g.C2 = v.f32();
  g.ldc2 = v.cols;
  launch_gemm(g, op, stream_);
}

void CudaBackend::qk_norm_rope(int l, const Buffer& q, const Buffer& k) {
  const char* op = "qk_norm_rope";
  set_device();
  require_step(op);
  const Layer& L = layer(l, op);
  check_buffer(q, cfg_.q_dim(), op, "q");
  check_buffer(k, cfg_.kv_dim(), op, "k");
  launch_qk_norm_rope(q.f32(), q.cols, k.f32(), k.cols, T_, cfg_.heads, cfg_.kv_heads, cfg_.head_dim, L.q_norm, L.k_norm, cfg_.rms_eps,
                      rope_table_, stream_);
}

void CudaBackend::attention(int l, const Buffer& q, const Buffer& k, const Buffer& v, const Buffer& out) {
  const char* op = "attention";
  set_device();
  require_step(op);
  layer(l, op);
  if (!kv_) throw std::logic_error("attention: init_kv first");
  const int qd = cfg_.q_dim(), kvd = cfg_.kv_dim();
  check_buffer(q, qd, op, "q");
  check_buffer(k, kvd, op, "k");
  check_buffer(v, kvd, op, "v");
  check_buffer(out, qd, op, "out");
  launch_kv_write(k.f32(), k.cols, v.f32(), v.cols, T_, kvd, d_slots_, k_cache(l), v_cache(l), stream_);
  AttnArgs a;
  a.q = q.f32();
  a.ldq = q.cols;
  a.out = out.f32();
  a.ldo = out.cols;
  a.k_cache = k_cache(l);
  a.v_cache = v_cache(l);
  a.T = T_;
  a.heads = cfg_.heads;
  a.kv_heads = cfg_.kv_heads;
  a.head_dim = cfg_.head_dim;
  a.positions = d_positions_;
  a.seq_of_token = d_seq_of_token_;
  a.block_tables = d_tables_;
  a.table_width = W_;
  a.block_size = block_size_;
  launch_attention(a, stream_);
}

void CudaBackend::moe(int l, const Buffer& h, const Buffer& out) {
  const char* op = "moe";
  set_device();
  require_step(op);
  const Layer& L = layer(l, op);
  if (!L.moe) throw std::invalid_argument("moe: layer " + std::to_string(l) + " is dense (use mlp)");
  const int T = T_, E = cfg_.experts, K = cfg_.top_k, H = cfg_.hidden, I = L.inter, NK = T * K;
  check_buffer(h, H, op, "h");
  check_buffer(out, H, op, "out");
  launch_router(h.f32(), h.cols, L.router, T, E, H, router_logits_, stream_);
  launch_topk(router_logits_, T, E, K, cfg_.norm_topk_prob, choice_, topk_weight_, stream_);
  launch_moe_sort(choice_, NK, K, E, row_of_, src_row_, tiles_, num_tiles_, stream_);
  // Grid bound of the grouped GEMMs: Σ_e ceil(n_e / 64) <= ceil(NK / 64) + E.
  const int max_tiles = (NK + kGemmTileRows - 1) / kGemmTileRows + E;
  GemmArgs gu = gemm_args(h.f32(), h.cols, L.gate, NK, I, H, gated_, I);
  gu.B1 = L.up;
  gu.a_row_map = src_row_;
  gu.b_expert_stride = static_cast<int64_t>(I) * H;
  gu.tiles = tiles_;
  gu.num_tiles = num_tiles_;
  gu.max_tiles = max_tiles;
  launch_gemm(gu, "moe (gate/up)", stream_);
  GemmArgs dn = gemm_args(gated_, I, L.down, NK, H, I, down_out_, H);
  dn.b_expert_stride = static_cast<int64_t>(H) * I;
  dn.tiles = tiles_;
  dn.num_tiles = num_tiles_;
  dn.max_tiles = max_tiles;
  launch_gemm(dn, "moe (down)", stream_);
  launch_moe_combine(down_out_, H, row_of_, topk_weight_, T, K, out.f32(), out.cols, stream_);
}

void CudaBackend::mlp(int l, const Buffer& h, const Buffer& out) {
  const char* op = "mlp";
  set_device();
  require_step(op);
  const Layer& L = layer(l, op);
  if (L.moe) throw std::invalid_argument("mlp: layer " + std::to_string(l) + " is a MoE layer (use moe)");
  const int H = cfg_.hidden, I = L.inter;
  check_buffer(h, H, op, "h");
  check_buffer(out, H, op, "out");
  GemmArgs gu = gemm_args(h.f32(), h.cols, L.gate, T_, I, H, gated_, I);
  gu.B1 = L.up;
  launch_gemm(gu, "mlp (gate/up)", stream_);
  launch_gemm(gemm_args(gated_, I, L.down, T_, H, I, out.f32(), out.cols), "mlp (down)", stream_);
}

}  // namespace moe
