// The model graph, written once against Backend: embed → layers (attention, MoE or dense MLP) → the rows that
// need logits → Backend::sample. The backend arrives with its weights placed and its workspace reserved.
#pragma once
#include <memory>

#include "core/backend.h"
#include "core/step-io.h"

namespace moe {

class Model {
 public:
  // Allocates the backend's KV pool (kv_blocks × block_size slots).
  Model(ModelConfig cfg, std::unique_ptr<Backend> backend, int kv_blocks, int block_size);
  // Throws std::invalid_argument (nothing written) when the batch is malformed.
  StepOutput step(const StepInput& in);

  const ModelConfig& config() const { return cfg_; }
  Backend& backend() { return *be_; }
  const Backend& backend() const { return *be_; }
  int kv_blocks() const { return kv_blocks_; }
  int block_size() const { return block_size_; }
  int max_tokens() const { return be_->workspace().max_tokens; }

 private:
  void validate(const StepInput& in) const;
  // Sizes out's arrays (-1 / NaN everywhere) and lists the rows whose logits the step needs.
  LogitRows prepare_output(const StepInput& in, StepOutput& out) const;

  ModelConfig cfg_;
  std::unique_ptr<Backend> be_;
  int kv_blocks_, block_size_;
};

}  // namespace moe
