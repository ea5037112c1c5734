// The model graph, written once against Backend: embed → layers (attention, MoE or dense MLP) → norm →
// lm_head on the rows that need logits → sampling and logprobs.
#pragma once
#include <memory>

#include "core/backend.h"
#include "core/step-io.h"
#include "core/weights.h"

namespace moe {

class Model {
 public:
  Model(ModelConfig cfg, ModelWeights weights, std::unique_ptr<Backend> backend, int kv_blocks, int block_size);
  // Throws std::invalid_argument (nothing written) when the batch is malformed.
  StepOutput step(const StepInput& in);

  const ModelConfig& config() const { return cfg_; }
  const ModelWeights& weights() const { return w_; }
  Backend& backend() { return *be_; }
  int kv_blocks() const { return kv_blocks_; }
  int block_size() const { return block_size_; }

 private:
  void validate(const StepInput& in) const;
  void logits_and_sample(const StepInput& in, const float* x, StepOutput& out);

  ModelConfig cfg_;
  ModelWeights w_;
  std::unique_ptr<Backend> be_;
  int kv_blocks_, block_size_;
};

}  // namespace moe
