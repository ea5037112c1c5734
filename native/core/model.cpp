#include "core/model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "core/step-profile.h"

namespace moe {
namespace {

constexpr int kMaxLogprobs = 20;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

void fail(const std::string& msg) { throw std::invalid_argument("invalid step batch: " + msg); }

// An optional per-sequence array is empty or has one entry per sequence.
template <typename T>
void check_optional(const std::vector<T>& v, size_t seqs, const char* name) {
  if (!v.empty() && v.size() != seqs) fail(std::string(name) + " must have one entry per sequence");
}

// An optional CSR: offsets (seqs + 1, from 0, non-decreasing, ending at ids.size()) and ids inside the vocabulary.
void check_csr(const std::vector<int32_t>& start, const std::vector<int32_t>& ids, size_t seqs, int vocab, const char* name) {
  if (start.empty()) {
    if (!ids.empty()) fail(std::string(name) + " ids given without offsets");
    return;
  }
  if (start.size() != seqs + 1 || start[0] != 0 || static_cast<size_t>(start.back()) != ids.size()) {
    fail(std::string(name) + " offsets must have numSeqs + 1 entries from 0 to the number of ids");
  }
  for (size_t i = 0; i < seqs; i++)
    if (start[i + 1] < start[i]) fail(std::string(name) + " offsets must not decrease");
  for (int32_t id : ids)
    if (id < 0 || id >= vocab) fail(std::string(name) + " token id " + std::to_string(id) + " outside the vocabulary");
}

}  // namespace

Model::Model(ModelConfig cfg, std::unique_ptr<Backend> backend, int kv_blocks, int block_size)
    : cfg_(std::move(cfg)), be_(std::move(backend)), kv_blocks_(kv_blocks), block_size_(block_size) {
  be_->init_kv(kv_blocks_, block_size_);
}

void Model::validate(const StepInput& in) const {
  const int T = in.num_tokens(), S = in.num_seqs();
  if (T == 0 || S <= 0) fail("no tokens");
  if (T > max_tokens()) {
    fail(std::to_string(T) + " tokens in one step, more than the " + std::to_string(max_tokens()) + " the model was loaded for (maxNumBatchedTokens)");
  }
  if (static_cast<int>(in.positions.size()) != T || static_cast<int>(in.targets.size()) != T) fail("positions/targets length must equal tokens length");
  const size_t s = static_cast<size_t>(S);
  if (in.sample.size() != s || in.temperature.size() != s || in.top_p.size() != s || in.top_k.size() != s ||
      in.uniform.size() != s || in.num_logprobs.size() != s || in.prompt_logprobs.size() != s) {
    fail("per-sequence arrays must have seqStart.length - 1 entries");
  }
  check_optional(in.min_p, s, "minP");
  check_optional(in.presence_penalty, s, "presencePenalty");
  check_optional(in.frequency_penalty, s, "frequencyPenalty");
  check_optional(in.repetition_penalty, s, "repetitionPenalty");
  check_optional(in.has_mask, s, "hasMask");
  check_csr(in.output_start, in.output_ids, s, cfg_.vocab, "outputToken");
  if (in.output_counts.size() != in.output_ids.size()) fail("outputTokenCounts must match outputTokenIds");
  check_csr(in.prompt_start, in.prompt_ids, s, cfg_.vocab, "promptToken");
  check_csr(in.bias_start, in.bias_ids, s, cfg_.vocab, "bias");
  if (in.bias_values.size() != in.bias_ids.size()) fail("biasValues must match biasIds");
  if (!in.has_mask.empty() && in.allowed_mask.size() != s * ((static_cast<size_t>(cfg_.vocab) + 31) / 32)) {
    fail("allowedMask must have numSeqs × ceil(vocabSize / 32) words");
  }
  if (in.block_table_width <= 0 || in.block_tables.size() != s * in.block_table_width) fail("blockTables must be numSeqs × blockTableWidth");
  if (in.seq_start[0] != 0 || in.seq_start[S] != T) fail("seqStart must run from 0 to tokens.length");
  for (int q = 0; q < S; q++) {
    const int b = in.seq_start[q], e = in.seq_start[q + 1];
    if (e <= b) fail("sequence " + std::to_string(q) + " has no tokens");
    if (in.num_logprobs[q] > kMaxLogprobs || in.prompt_logprobs[q] > kMaxLogprobs) fail("at most 20 logprobs");
    for (int t = b; t < e; t++) {
      if (in.tokens[t] < 0 || in.tokens[t] >= cfg_.vocab) fail("token id " + std::to_string(in.tokens[t]) + " outside the vocabulary");
      if (in.targets[t] >= cfg_.vocab) fail("target id outside the vocabulary");
      if (in.positions[t] < 0 || (t > b && in.positions[t] != in.positions[t - 1] + 1)) fail("positions of a sequence must be consecutive and >= 0");
    }
    const int64_t last_block = in.positions[e - 1] / block_size_;
    if (last_block >= in.block_table_width) fail("block table of sequence " + std::to_string(q) + " does not cover its positions");
    for (int64_t j = 0; j <= last_block; j++) {
      const int32_t blk = in.block_tables[static_cast<size_t>(q) * in.block_table_width + j];
      if (blk < 0 || blk >= kv_blocks_) fail("block id " + std::to_string(blk) + " outside the KV pool");
    }
  }
}

StepOutput Model::step(const StepInput& in) {
  validate(in);
  const int T = in.num_tokens(), S = in.num_seqs();
  std::vector<int32_t> seq_of_token(T);
  std::vector<int64_t> slots(T);
  for (int q = 0; q < S; q++) {
    for (int t = in.seq_start[q]; t < in.seq_start[q + 1]; t++) {
      seq_of_token[t] = q;
      const int32_t pos = in.positions[t];
      slots[t] = static_cast<int64_t>(in.block_tables[static_cast<size_t>(q) * in.block_table_width + pos / block_size_]) * block_size_ +
                 pos % block_size_;
    }
  }
  Backend& be = *be_;
  be.begin_step(StepMeta{T, S, in.tokens.data(), in.positions.data(), seq_of_token.data(), in.seq_start.data(), slots.data(),
                         in.block_tables.data(), in.block_table_width, block_size_});
  const Workspace& ws = be.workspace();
  StepProfile prof;
  be.embed(ws.x);
  be.rmsnorm(Norm::Input, 0, ws.x, T, ws.h);
  for (int l = 0; l < cfg_.layers; l++) {
    prof.start();
    be.qkv(l, ws.h, ws.q, ws.k, ws.v);
    be.qk_norm_rope(l, ws.q, ws.k);
    prof.lap(StepProfile::kQkv);
    be.attention(l, ws.q, ws.k, ws.v, ws.attn);
    prof.lap(StepProfile::kAttention);
    be.project(l, Proj::O, ws.attn, ws.tmp);
    be.add_rmsnorm(Norm::PostAttn, l, ws.x, ws.tmp, T, ws.h);
    prof.lap(StepProfile::kOutput);
    if (cfg_.moe_layers[l]) {
      be.moe(l, ws.h, ws.tmp);
    } else {
      be.mlp(l, ws.h, ws.tmp);
    }
    // The residual add, fused with the next layer's input norm.
    if (l + 1 < cfg_.layers) {
      be.add_rmsnorm(Norm::Input, l + 1, ws.x, ws.tmp, T, ws.h);
    } else {
      be.add(ws.x, ws.tmp, T);
    }
    prof.lap(StepProfile::kFfn);
  }
  StepOutput out;
  prof.start();
  const LogitRows rows = prepare_output(in, out);
  if (!rows.token.empty()) be.sample(ws.x, rows, in, out);
  prof.lap(StepProfile::kLogits);
  prof.report(T, S);
  return out;
}

LogitRows Model::prepare_output(const StepInput& in, StepOutput& out) const {
  const int S = in.num_seqs(), T = in.num_tokens();
  out.top_width = 0;
  out.prompt_top_width = 0;
  for (int q = 0; q < S; q++) {
    out.top_width = std::max(out.top_width, in.num_logprobs[q]);
    out.prompt_top_width = std::max(out.prompt_top_width, in.prompt_logprobs[q]);
  }
  out.tokens.assign(S, -1);
  out.logprobs.assign(S, kNaN);
  out.top_ids.assign(static_cast<size_t>(S) * out.top_width, -1);
  out.top_logprobs.assign(static_cast<size_t>(S) * out.top_width, kNaN);
  out.target_logprobs.assign(T, kNaN);
  out.prompt_top_ids.assign(static_cast<size_t>(T) * out.prompt_top_width, -1);
  out.prompt_top_logprobs.assign(static_cast<size_t>(T) * out.prompt_top_width, kNaN);

  // Rows that need logits: every token of a sequence asking for prompt logprobs, and each sampled last token.
  LogitRows rows;
  for (int q = 0; q < S; q++) {
    const int b = in.seq_start[q], e = in.seq_start[q + 1];
    if (in.prompt_logprobs[q] >= 0) {
      for (int t = b; t < e; t++) {
        rows.token.push_back(t);
        rows.seq.push_back(q);
      }
    } else if (in.sample[q]) {
      rows.token.push_back(e - 1);
      rows.seq.push_back(q);
    }
  }
  return rows;
}

}  // namespace moe
