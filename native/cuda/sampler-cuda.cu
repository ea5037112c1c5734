// CudaSampler: logprobs, logits processing and sampling of rows of device logits, reproducing core/sampler.cpp
// (and the row loop of cpu/sample-cpu.cpp) on the device.
//
// One block of kThreads threads per row, one launch per run:
//   1. raw statistics: max, lse = max + log(Σ exp(x - max)) (fp32 terms, double sum), the target's logprob,
//      and the top-N raw logprobs (N ≤ 20, best first, ties to the lower id: each thread keeps the best of its
//      own strided elements not yet taken; N rounds of a block argmax over those, the winning thread alone
//      rescanning its elements for its next best);
//   2. for the sampled row, in place and after (1): the raw values at every id the processing lists name (and
//      at id 0) are stashed, then logit_bias, the allowed mask, repetition over prompt ∪ output (once per
//      distinct id, through a vocabulary bitmap in shared memory), frequency × count + presence, each with the
//      CPU's fp32 operations (no contraction); lists holding one id twice are applied by one thread in order;
//   3. sample_token's decision tree on the processed row (see sample_row below): argmax; or the inverse CDF in id
//      order (no filter; min_p alone); or, for top_k / top_p, the best-first walk, done without sorting by a
//      radix search on the fp32 key (4 bits a pass, the per-digit masses summed in double by deterministic block
//      reductions) for the element where the best-first cumulative mass crosses the threshold, the ties at that
//      value taken by ascending id;
//   4. the sampled token's logprob from its raw logit (the stash when processing touched it).
// The per-row parameters and the processing lists travel in one pinned buffer (one copy in), the results in
// one packed buffer (one copy out). A row whose processing lists do not fit the device capacity
// (max_rows × (vocab + ceil(vocab/32)) words for the whole run) is processed and sampled on the host with
// core/sampler.cpp after its raw row is copied down (its logprobs still come from the device).
#include "cuda/sampler-cuda.h"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/cuda-check.h"
#include "cuda/sampler-kernels.cuh"

namespace moe {

using namespace sampler_detail;

struct CudaSampler::Impl {
  int vocab = 0, max_rows = 0, mask_words = 0;
  size_t payload_cap = 0;  // int32 words, the stash included
  size_t param_bytes = 0;  // max_rows RowParams, padded to 16 bytes
  void* host_in = nullptr;  // pinned: params, then payload
  void* dev_in = nullptr;   // the same layout; the stash lives past the copied payload
  RowResult* host_out = nullptr;
  RowResult* dev_out = nullptr;
  size_t dev_bytes = 0;
  std::vector<int> host_rows;  // rows sampled on the host (lists over capacity)
  std::vector<float> host_logits, host_processed, host_p;
  std::vector<int32_t> host_ids;
};

CudaSampler::CudaSampler(int vocab, int max_rows) : impl_(new Impl) {
  if (vocab <= 0 || max_rows <= 0) throw std::invalid_argument("CudaSampler: vocab and max_rows must be positive");
  Impl& m = *impl_;
  m.vocab = vocab;
  m.max_rows = max_rows;
  m.mask_words = (vocab + 31) / 32;
  // Every row's bias, output and prompt lists with their stash, and its mask, while they total one vocabulary
  // and one mask per row; beyond that a row is sampled on the host.
  m.payload_cap = static_cast<size_t>(max_rows) * (static_cast<size_t>(vocab) + m.mask_words);
  m.param_bytes = (sizeof(RowParam) * static_cast<size_t>(max_rows) + 15) / 16 * 16;
  const size_t in_bytes = m.param_bytes + m.payload_cap * sizeof(int32_t);
  const size_t out_bytes = sizeof(RowResult) * static_cast<size_t>(max_rows);
  try {
    CUDA_CHECK_OP("CudaSampler", cudaMallocHost(&m.host_in, in_bytes));
    CUDA_CHECK_OP("CudaSampler", cudaMalloc(&m.dev_in, in_bytes));
    CUDA_CHECK_OP("CudaSampler", cudaMallocHost(reinterpret_cast<void**>(&m.host_out), out_bytes));
    CUDA_CHECK_OP("CudaSampler", cudaMalloc(reinterpret_cast<void**>(&m.dev_out), out_bytes));
    const size_t smem = static_cast<size_t>(m.mask_words) * sizeof(uint32_t);
    if (smem > 48 * 1024) {
      CUDA_CHECK_OP("CudaSampler", cudaFuncSetAttribute(sampler_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    }
  } catch (...) {
    if (m.host_in) cudaFreeHost(m.host_in);
    if (m.dev_in) cudaFree(m.dev_in);
    if (m.host_out) cudaFreeHost(m.host_out);
    if (m.dev_out) cudaFree(m.dev_out);
    throw;
  }
  m.dev_bytes = in_bytes + out_bytes;
}

CudaSampler::~CudaSampler() {
  Impl& m = *impl_;
  cudaFreeHost(m.host_in);
  cudaFree(m.dev_in);
  cudaFreeHost(m.host_out);
  cudaFree(m.dev_out);
}

size_t CudaSampler::device_bytes() const { return impl_->dev_bytes; }

void CudaSampler::run(float* logits, int n, const LogitRows& rows, int c0, const StepInput& in, StepOutput& out,
                      cudaStream_t stream) {
  Impl& m = *impl_;
  if (n <= 0) return;
  if (n > m.max_rows) throw std::invalid_argument("CudaSampler::run: more rows than max_rows");
  const int V = m.vocab;
  RowParam* params = static_cast<RowParam*>(m.host_in);
  int32_t* payload = reinterpret_cast<int32_t*>(static_cast<char*>(m.host_in) + m.param_bytes);
  // The pinned buffer is free: the previous run synchronised the stream before returning.
  const size_t used = pack_rows(n, rows, c0, in, V, params, payload, m.payload_cap, m.host_rows);

  CUDA_CHECK_OP("sample", cudaMemcpyAsync(m.dev_in, m.host_in, m.param_bytes + used * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
  const RowParam* dparams = static_cast<const RowParam*>(m.dev_in);
  int32_t* dpayload = reinterpret_cast<int32_t*>(static_cast<char*>(m.dev_in) + m.param_bytes);
  sampler_kernel<<<n, kThreads, static_cast<size_t>(m.mask_words) * sizeof(uint32_t), stream>>>(logits, V, dparams, dpayload,
                                                                                                  m.dev_out);
  cuda_check_launch("sample");
  CUDA_CHECK_OP("sample", cudaMemcpyAsync(m.host_out, m.dev_out, sizeof(RowResult) * static_cast<size_t>(n), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK_OP("sample", cudaStreamSynchronize(stream));

  // Rows whose lists did not fit: the kernel left their raw rows intact.
  for (int i : m.host_rows) {
    m.host_logits.resize(V);
    CUDA_CHECK_OP("sample", cudaMemcpyAsync(m.host_logits.data(), logits + static_cast<size_t>(i) * V, static_cast<size_t>(V) * sizeof(float),
                               cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK_OP("sample", cudaStreamSynchronize(stream));
    host_sample_row(m.host_logits.data(), V, in, rows.seq[c0 + i], m.host_out[i], m.host_processed, m.host_ids, m.host_p);
  }
  scatter_rows(n, rows, c0, in, V, params, m.host_out, out);
}

}  // namespace moe
