// Sampling and logprobs on one row of logits (host memory). Logprobs are always of the raw model
// distribution (log-softmax of the logits), as vLLM reports them; temperature/top-k/top-p shape only the draw.
#pragma once
#include <cstdint>
#include <vector>

namespace moe {

// log(sum(exp(logits))), computed stably.
float log_sum_exp(const float* logits, int n);

// The n best tokens (best first; ties to the lower id) with their logprobs.
void top_logprobs(const float* logits, int n_vocab, int n, float lse, int32_t* ids, float* logprobs);

// temperature <= 0: argmax. Otherwise draws with u ∈ [0,1) from softmax(logits / temperature) restricted to
// the top_k best (0 = all) and then to the smallest best-first prefix whose mass reaches top_p.
int32_t sample_token(const float* logits, int n_vocab, float temperature, float top_p, int top_k, float u,
                     std::vector<int32_t>& scratch_ids, std::vector<float>& scratch_p);

}  // namespace moe
