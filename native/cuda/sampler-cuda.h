// Logits processing, sampling and logprobs of rows of logits on the device, with the semantics of
// core/sampler.h and cpu/sample-cpu.cpp: logprobs of the raw distribution; logit_bias, allowed mask, repetition,
// frequency and presence penalties shape only the draw; temperature <= 0 is argmax; min_p, top_k, top_p; the
// draw uses the step's uniform u; ties to the lower token id. Only ids and logprobs are copied back.
#pragma once
#include <cuda_runtime_api.h>

#include <memory>

#include "core/backend.h"

namespace moe {

class CudaSampler {
 public:
  // Device buffers for up to max_rows rows of a vocab-wide row are allocated here, once.
  CudaSampler(int vocab, int max_rows);
  ~CudaSampler();
  CudaSampler(const CudaSampler&) = delete;
  CudaSampler& operator=(const CudaSampler&) = delete;

  // logits: device memory, n × vocab fp32, row i being rows.token[c0 + i] of sequence rows.seq[c0 + i]; may be
  // overwritten. Writes what StepInput asks for these rows into out, whose arrays model.cpp has already sized
  // (tokens, logprobs, top_ids/top_logprobs at top_width, target_logprobs, prompt_top_* at prompt_top_width).
  // Synchronises stream before returning.
  void run(float* logits, int n, const LogitRows& rows, int c0, const StepInput& in, StepOutput& out, cudaStream_t stream);

  size_t device_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe
