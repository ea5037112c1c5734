// CudaBackend: device and stream, the workspace (reserve), the KV pool (init_kv), the step's metadata
// (begin_step) and sampling. The ops are in ops-cuda.cu, weight placement in weights-cuda.cu.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cuda/backend-cuda-impl.h"
#include "cuda/backend-cuda.h"
#include "cuda/cuda-check.h"

namespace moe {
namespace {

// Rows of logits per lm_head pass and sampler call (the sampler's max_rows).
constexpr int kLogitChunk = 64;
// Block-table entries the step buffer holds per token of max_tokens (at least kMinTableEntries in all). A step
// needs numSeqs × blockTableWidth: e.g. 256 sequences of 128K tokens at block size 16 need 2M, and 8192 sequences
// of 32K tokens 16M (64 MiB at max_tokens 8192). Sized at reserve() so memory() already counts it.
constexpr size_t kTableEntriesPerToken = 2048;
constexpr size_t kMinTableEntries = size_t{1} << 20;

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

}  // namespace

void* DeviceArena::alloc(size_t bytes, const char* op) {
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 16));
  if (e != cudaSuccess) cuda_fail(op, ("cudaMalloc of " + std::to_string(bytes >> 20) + " MiB").c_str(), e);
  ptrs_.push_back(p);
  bytes_ += bytes;
  return p;
}

void DeviceArena::release() {
  for (void* p : ptrs_) cudaFree(p);
  ptrs_.clear();
  bytes_ = 0;
}

std::unique_ptr<Backend> make_cuda_backend(int device, int host_threads) { return std::make_unique<CudaBackend>(device, host_threads); }

CudaBackend::CudaBackend(int device, int /*host_threads: conversion at load is single-threaded for now*/) : device_(device) {
  int n = 0;
  CUDA_CHECK_OP("init", cudaGetDeviceCount(&n));
  if (device < 0 || device >= n) {
    throw std::runtime_error("CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(n) + " found)");
  }
  set_device();
  cudaDeviceProp p;
  CUDA_CHECK_OP("init", cudaGetDeviceProperties(&p, device));
  if (p.major < 8) {
    throw std::runtime_error(std::string("CUDA device ") + p.name + " has compute capability " + std::to_string(p.major) + "." +
                             std::to_string(p.minor) + "; the CUDA backend needs 8.0 or newer (bf16 tensor cores)");
  }
  device_name_ = p.name;
  CUDA_CHECK_OP("init", cudaEventCreateWithFlags(&meta_copied_, cudaEventDisableTiming));
  CUDA_CHECK_OP("init", cudaEventCreateWithFlags(&rows_copied_, cudaEventDisableTiming));
  CUDA_CHECK_OP("init", cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

CudaBackend::~CudaBackend() {
  cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  release_workspace();
  weights_.release();
  if (kv_) cudaFree(kv_);
  if (meta_copied_) cudaEventDestroy(meta_copied_);
  if (rows_copied_) cudaEventDestroy(rows_copied_);
  if (stream_) cudaStreamDestroy(stream_);
}

std::string CudaBackend::name() const { return "cuda/" + device_name_; }

void CudaBackend::set_device() const { CUDA_CHECK_OP("set device", cudaSetDevice(device_)); }

size_t CudaBackend::kv_bytes_per_token() const {
  return static_cast<size_t>(cfg_.layers) * 2 * cfg_.kv_dim() * sizeof(uint16_t);
}

void CudaBackend::release_workspace() {
  sampler_.reset();
  scratch_.release();
  if (meta_host_) cudaFreeHost(meta_host_);
  if (logit_rows_host_) cudaFreeHost(logit_rows_host_);
  meta_host_ = nullptr;
  logit_rows_host_ = nullptr;
  ws_ = Workspace();
  max_tokens_ = 0;
  T_ = S_ = W_ = 0;
}

void CudaBackend::reserve(int max_tokens) {
  const char* op = "reserve";
  set_device();
  if (!placed_) throw std::logic_error("reserve: place_weights first");
  if (max_tokens <= 0) throw std::invalid_argument("reserve: max_tokens must be positive");
  CUDA_CHECK_OP(op, cudaStreamSynchronize(stream_));
  release_workspace();
  const size_t Tm = static_cast<size_t>(max_tokens);
  const int H = cfg_.hidden, qd = cfg_.q_dim(), kvd = cfg_.kv_dim(), E = cfg_.experts, K = cfg_.top_k;
  auto f32 = [&](size_t n) { return scratch_.alloc_n<float>(n, op); };
  auto buffer = [&](int64_t cols) { return Buffer{f32(Tm * cols), DType::F32, cols}; };
  ws_.max_tokens = max_tokens;
  ws_.x = buffer(H);
  ws_.h = buffer(H);
  ws_.tmp = buffer(H);
  ws_.q = buffer(qd);
  ws_.attn = buffer(qd);
  ws_.k = buffer(kvd);
  ws_.v = buffer(kvd);
  rope_table_ = f32(Tm * cfg_.head_dim);

  size_t gated_cols = 0;
  bool any_moe = false;
  for (const Layer& L : layers_) {
    any_moe = any_moe || L.moe;
    gated_cols = std::max(gated_cols, L.moe ? static_cast<size_t>(K) * L.inter : static_cast<size_t>(L.inter));
  }
  gated_ = f32(Tm * gated_cols);
  if (any_moe) {
    const size_t NK = Tm * K;
    router_logits_ = f32(Tm * E);
    choice_ = scratch_.alloc_n<int32_t>(NK, op);
    topk_weight_ = f32(NK);
    row_of_ = scratch_.alloc_n<int32_t>(NK, op);
    src_row_ = scratch_.alloc_n<int32_t>(NK, op);
    max_tiles_ = static_cast<int>((NK + kGemmTileRows - 1) / kGemmTileRows) + E;
    tiles_ = scratch_.alloc_n<int4>(max_tiles_, op);
    num_tiles_ = scratch_.alloc_n<int32_t>(1, op);
    down_out_ = f32(NK * H);
  }
  norm_rows_ = f32(static_cast<size_t>(kLogitChunk) * H);
  logits_ = f32(static_cast<size_t>(kLogitChunk) * cfg_.vocab);
  logit_rows_dev_ = scratch_.alloc_n<int32_t>(kLogitChunk, op);
  CUDA_CHECK_OP(op, cudaMallocHost(&logit_rows_host_, kLogitChunk * sizeof(int32_t)));

  table_capacity_ = std::max(kMinTableEntries, Tm * kTableEntriesPerToken);
  meta_bytes_ = align_up(Tm * sizeof(int64_t) + (4 * Tm + 1 + table_capacity_) * sizeof(int32_t), 256);
  meta_dev_ = scratch_.alloc(meta_bytes_, op);
  CUDA_CHECK_OP(op, cudaMallocHost(&meta_host_, meta_bytes_));
  sampler_ = std::make_unique<CudaSampler>(cfg_.vocab, kLogitChunk);
  max_tokens_ = max_tokens;
}

MemoryInfo CudaBackend::memory() const {
  set_device();
  MemoryInfo m;
  m.has_device = true;
  m.device_name = device_name_;
  CUDA_CHECK_OP("memory", cudaMemGetInfo(&m.free, &m.total));
  return m;
}

void CudaBackend::init_kv(int num_blocks, int block_size) {
  const char* op = "init_kv";
  set_device();
  if (!placed_) throw std::logic_error("init_kv: place_weights first");
  if (num_blocks <= 0 || block_size <= 0) throw std::invalid_argument("init_kv: num_blocks and block_size must be positive");
  CUDA_CHECK_OP(op, cudaStreamSynchronize(stream_));
  if (kv_) {
    cudaFree(kv_);
    kv_ = nullptr;
  }
  kv_layer_elems_ = static_cast<size_t>(num_blocks) * block_size * cfg_.kv_dim();
  const size_t bytes = static_cast<size_t>(2) * cfg_.layers * kv_layer_elems_ * sizeof(uint16_t);
  CUDA_CHECK_OP(op, cudaMalloc(&kv_, bytes));
  CUDA_CHECK_OP(op, cudaMemsetAsync(kv_, 0, bytes, stream_));
  CUDA_CHECK_OP(op, cudaStreamSynchronize(stream_));
  num_blocks_ = num_blocks;
  block_size_ = block_size;
}

void CudaBackend::begin_step(const StepMeta& m) {
  const char* op = "begin_step";
  set_device();
  if (!max_tokens_) throw std::logic_error("begin_step: reserve first");
  if (!kv_) throw std::logic_error("begin_step: init_kv first");
  const int T = m.num_tokens, S = m.num_seqs, W = m.table_width;
  T_ = S_ = W_ = 0;  // a step that fails its checks leaves no step: the ops refuse to run on the previous one's metadata
  auto fail = [&](const std::string& why) { throw std::invalid_argument("begin_step: " + why); };
  if (T <= 0 || T > max_tokens_) fail(std::to_string(T) + " tokens; the workspace holds 1 to " + std::to_string(max_tokens_));
  if (S <= 0 || S > T) fail("the step needs 1 to numTokens sequences");
  if (W <= 0) fail("block table width must be positive");
  if (static_cast<size_t>(S) * W > table_capacity_) {
    fail(std::to_string(S) + " sequences × block table width " + std::to_string(W) + " exceed the " + std::to_string(table_capacity_) +
         " block-table entries reserved (2048 per token of --max-num-batched-tokens)");
  }
  if (m.block_size != 0 && m.block_size != block_size_) fail("block size differs from init_kv's");
  if (!m.tokens || !m.positions || !m.seq_start || !m.block_tables) fail("tokens, positions, seq_start and block_tables are required");

  CUDA_CHECK_OP(op, cudaEventSynchronize(meta_copied_));  // the previous step's copy has left the pinned buffer
  uint8_t* hb = static_cast<uint8_t*>(meta_host_);
  const size_t o_tok = sizeof(int64_t) * T, o_pos = o_tok + 4 * T, o_seq = o_pos + 4 * T, o_start = o_seq + 4 * T;
  const size_t o_tab = o_start + 4 * (static_cast<size_t>(S) + 1), end = o_tab + 4 * static_cast<size_t>(S) * W;
  int64_t* slots = reinterpret_cast<int64_t*>(hb);
  int32_t* seq = reinterpret_cast<int32_t*>(hb + o_seq);
  std::memcpy(hb + o_tok, m.tokens, 4 * static_cast<size_t>(T));
  std::memcpy(hb + o_pos, m.positions, 4 * static_cast<size_t>(T));
  std::memcpy(hb + o_start, m.seq_start, 4 * (static_cast<size_t>(S) + 1));
  std::memcpy(hb + o_tab, m.block_tables, 4 * static_cast<size_t>(S) * W);
  if (m.seq_of_token) {
    std::memcpy(seq, m.seq_of_token, 4 * static_cast<size_t>(T));
  } else {
    for (int s = 0; s < S; s++)
      for (int t = m.seq_start[s]; t < m.seq_start[s + 1] && t < T; t++) seq[t] = s;
  }
  // Indices the kernels address memory with are checked here (model.cpp checks the rest of the batch).
  const int64_t num_slots = static_cast<int64_t>(num_blocks_) * block_size_;
  for (int t = 0; t < T; t++) {
    if (m.tokens[t] < 0 || m.tokens[t] >= cfg_.vocab) fail("token id outside the vocabulary");
    if (seq[t] < 0 || seq[t] >= S) fail("seq_of_token outside [0, numSeqs)");
    if (m.positions[t] < 0 || m.positions[t] / block_size_ >= W) fail("position not covered by the block table");
    slots[t] = m.slot_of_token ? m.slot_of_token[t]
                               : static_cast<int64_t>(m.block_tables[static_cast<size_t>(seq[t]) * W + m.positions[t] / block_size_]) *
                                         block_size_ + m.positions[t] % block_size_;
    if (slots[t] < 0 || slots[t] >= num_slots) fail("KV slot outside the pool");
  }
  CUDA_CHECK_OP(op, cudaMemcpyAsync(meta_dev_, meta_host_, end, cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK_OP(op, cudaEventRecord(meta_copied_, stream_));
  const uint8_t* db = static_cast<const uint8_t*>(meta_dev_);
  d_slots_ = reinterpret_cast<const int64_t*>(db);
  d_tokens_ = reinterpret_cast<const int32_t*>(db + o_tok);
  d_positions_ = reinterpret_cast<const int32_t*>(db + o_pos);
  d_seq_of_token_ = reinterpret_cast<const int32_t*>(db + o_seq);
  d_tables_ = reinterpret_cast<const int32_t*>(db + o_tab);
  launch_rope_table(d_positions_, T, inv_freq_, cfg_.head_dim, cfg_.rope_attention_factor, rope_table_, stream_);
  T_ = T;
  S_ = S;
  W_ = W;
}

void CudaBackend::sample(const Buffer& x, const LogitRows& rows, const StepInput& in, StepOutput& out) {
  const char* op = "sample";
  set_device();
  if (!max_tokens_) throw std::logic_error("sample: reserve first");
  check_buffer(x, cfg_.hidden, op, "x");
  const int n = static_cast<int>(rows.token.size());
  if (rows.seq.size() != rows.token.size()) throw std::invalid_argument("sample: LogitRows token and seq differ in length");
  for (int c0 = 0; c0 < n; c0 += kLogitChunk) {
    const int cn = std::min(kLogitChunk, n - c0);
    CUDA_CHECK_OP(op, cudaEventSynchronize(rows_copied_));
    for (int i = 0; i < cn; i++) {
      const int32_t r = rows.token[c0 + i];
      if (r < 0 || r >= max_tokens_) throw std::invalid_argument("sample: logit row outside the workspace");
      logit_rows_host_[i] = r;
    }
    CUDA_CHECK_OP(op, cudaMemcpyAsync(logit_rows_dev_, logit_rows_host_, cn * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK_OP(op, cudaEventRecord(rows_copied_, stream_));
    launch_rmsnorm(x.f32(), x.cols, logit_rows_dev_, final_norm_, cn, cfg_.hidden, cfg_.rms_eps, norm_rows_, cfg_.hidden, stream_);
    launch_gemm(gemm_args(norm_rows_, cfg_.hidden, lm_head_, cn, cfg_.vocab, cfg_.hidden, logits_, cfg_.vocab), "sample (lm_head)", stream_);
    sampler_->run(logits_, cn, rows, c0, in, out, stream_);
  }
}

// Workspace buffers are F32 on this backend, so no conversion; ordered after the stream's work, synchronous.
void CudaBackend::upload(const Buffer& dst, const float* src, size_t n) {
  set_device();
  if (dst.dtype != DType::F32) throw std::invalid_argument("upload: CUDA workspace buffers are F32");
  CUDA_CHECK_OP("upload", cudaMemcpyAsync(dst.data, src, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK_OP("upload", cudaStreamSynchronize(stream_));
}

void CudaBackend::download(const Buffer& src, float* dst, size_t n) {
  set_device();
  if (src.dtype != DType::F32) throw std::invalid_argument("download: CUDA workspace buffers are F32");
  CUDA_CHECK_OP("download", cudaMemcpyAsync(dst, src.data, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK_OP("download", cudaStreamSynchronize(stream_));
}

}  // namespace moe
