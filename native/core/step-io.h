// One engine step as the model runner sees it: the plain arrays of src/native/addon-types.ts StepBatch/StepResult.
#pragma once
#include <cstdint>
#include <vector>

namespace moe {

struct StepInput {
  std::vector<int32_t> tokens, positions, seq_start, block_tables;
  int block_table_width = 0;
  std::vector<uint8_t> sample;
  std::vector<float> temperature, top_p, uniform;
  std::vector<int32_t> top_k, num_logprobs, prompt_logprobs, targets;
  // Logits processing of the sampled position (each empty = off); see src/native/addon-types.ts.
  std::vector<float> min_p, presence_penalty, frequency_penalty, repetition_penalty;
  std::vector<int32_t> output_start, output_ids, output_counts, prompt_start, prompt_ids;
  std::vector<int32_t> bias_start, bias_ids;
  std::vector<float> bias_values;
  std::vector<uint32_t> allowed_mask;
  std::vector<uint8_t> has_mask;

  int num_seqs() const { return static_cast<int>(seq_start.size()) - 1; }
  int num_tokens() const { return static_cast<int>(tokens.size()); }
};

struct StepOutput {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  int top_width = 0;
  std::vector<int32_t> top_ids;
  std::vector<float> top_logprobs;
  int prompt_top_width = 0;
  std::vector<float> target_logprobs;
  std::vector<int32_t> prompt_top_ids;
  std::vector<float> prompt_top_logprobs;
};

}  // namespace moe
