// Sampling and logprobs on one row of logits (host memory). Logprobs are always of the raw model
// distribution (log-softmax of the logits), as vLLM reports them; temperature/top-k/top-p shape only the draw.
#pragma once
#include <cstdint>
#include <vector>

#include "core/step-io.h"

namespace moe {

// The vocabulary-wide reductions, supplied by the backend (SIMD on the CPU).
struct VecMath {
  float (*max)(const float* x, int64_t n);
  // Σ exp((x[i] - shift) * scale), also stored to out[i] when out is not null; -inf inputs give exactly 0.
  float (*exp_sum)(const float* x, int64_t n, float shift, float scale, float* out);
};

// log(sum(exp(logits))), computed stably.
float log_sum_exp(const VecMath& m, const float* logits, int n);

// The n best tokens (best first; ties to the lower id) with their logprobs.
void top_logprobs(const float* logits, int n_vocab, int n, float lse, int32_t* ids, float* logprobs);

// Logits processing for one sequence's sampled position (vLLM semantics); pointers into the step's CSR arrays.
struct SeqProcessing {
  float presence = 0, frequency = 0, repetition = 1;
  const int32_t* out_ids = nullptr;
  const int32_t* out_counts = nullptr;
  int n_out = 0;
  const int32_t* prompt_ids = nullptr;
  int n_prompt = 0;
  const int32_t* bias_ids = nullptr;
  const float* bias_values = nullptr;
  int n_bias = 0;
  const uint32_t* mask = nullptr;  // ceil(V / 32) words, bit set = allowed
  bool active() const { return presence != 0 || frequency != 0 || repetition != 1 || n_bias > 0 || mask; }
};

// Sequence q's processing as the step carries it (pointers into in's CSR arrays; neutral where a field is absent).
SeqProcessing processing_of(const StepInput& in, int q, int vocab);

// In place: logit_bias, then the allowed mask (others -inf), then repetition over prompt ∪ output (once per
// distinct token), then frequency × count + presence over the output.
void apply_processing(const SeqProcessing& p, float* logits, int n_vocab);

// temperature <= 0: argmax (min_p, top_k, top_p do not change it). Otherwise draws with u ∈ [0,1) from softmax(logits / temperature) restricted to
// tokens within min_p of the best (0 = off), then the top_k best (0 = all), then the smallest best-first prefix
// whose mass reaches top_p. Tokens at -inf are never drawn.
int32_t sample_token(const VecMath& m, const float* logits, int n_vocab, float temperature, float top_p, int top_k,
                     float min_p, float u, std::vector<int32_t>& scratch_ids, std::vector<float>& scratch_p);

}  // namespace moe
