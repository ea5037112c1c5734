#include "core/model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "core/sampler.h"
#include "core/step-profile.h"

namespace moe {
namespace {

enum { kX = 0, kH = 1, kQ = 2, kK = 3, kV = 4, kAttn = 5, kTmp = 6, kRows = 7, kLogits = 8 };
// Rows of logits computed per lm_head pass: the weights are streamed once per chunk, so a decode batch of up
// to this many sequences reads them once.
constexpr int kLogitRowsPerChunk = 64;
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

SeqProcessing processing_of(const StepInput& in, int q, int vocab) {
  SeqProcessing p;
  if (!in.presence_penalty.empty()) p.presence = in.presence_penalty[q];
  if (!in.frequency_penalty.empty()) p.frequency = in.frequency_penalty[q];
  if (!in.repetition_penalty.empty()) p.repetition = in.repetition_penalty[q];
  if (!in.output_start.empty()) {
    p.out_ids = in.output_ids.data() + in.output_start[q];
    p.out_counts = in.output_counts.data() + in.output_start[q];
    p.n_out = in.output_start[q + 1] - in.output_start[q];
  }
  if (!in.prompt_start.empty()) {
    p.prompt_ids = in.prompt_ids.data() + in.prompt_start[q];
    p.n_prompt = in.prompt_start[q + 1] - in.prompt_start[q];
  }
  if (!in.bias_start.empty()) {
    p.bias_ids = in.bias_ids.data() + in.bias_start[q];
    p.bias_values = in.bias_values.data() + in.bias_start[q];
    p.n_bias = in.bias_start[q + 1] - in.bias_start[q];
  }
  if (!in.has_mask.empty() && in.has_mask[q]) p.mask = in.allowed_mask.data() + static_cast<size_t>(q) * ((vocab + 31) / 32);
  return p;
}

}  // namespace

Model::Model(ModelConfig cfg, ModelWeights weights, std::unique_ptr<Backend> backend, int kv_blocks, int block_size)
    : cfg_(std::move(cfg)), w_(std::move(weights)), be_(std::move(backend)), kv_blocks_(kv_blocks), block_size_(block_size) {
  be_->init_kv(cfg_, kv_blocks_, block_size_);
}

void Model::validate(const StepInput& in) const {
  const int T = in.num_tokens(), S = in.num_seqs();
  if (T == 0 || S <= 0) fail("no tokens");
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
  const int T = in.num_tokens(), H = cfg_.hidden;
  std::vector<int32_t> seq_of_token(T);
  for (int q = 0; q < in.num_seqs(); q++)
    for (int t = in.seq_start[q]; t < in.seq_start[q + 1]; t++) seq_of_token[t] = q;
  AttnMeta meta{in.positions.data(), seq_of_token.data(), in.block_tables.data(), in.block_table_width, block_size_};

  Backend& be = *be_;
  float* x = be.scratch(kX, static_cast<size_t>(T) * H);
  float* h = be.scratch(kH, static_cast<size_t>(T) * H);
  float* q = be.scratch(kQ, static_cast<size_t>(T) * cfg_.q_dim());
  float* k = be.scratch(kK, static_cast<size_t>(T) * cfg_.kv_dim());
  float* v = be.scratch(kV, static_cast<size_t>(T) * cfg_.kv_dim());
  float* attn = be.scratch(kAttn, static_cast<size_t>(T) * cfg_.q_dim());
  float* tmp = be.scratch(kTmp, static_cast<size_t>(T) * H);
  StepProfile prof;
  be.embed(w_.embed, in.tokens.data(), T, x);
  for (int l = 0; l < cfg_.layers; l++) {
    const LayerWeights& L = w_.layers[l];
    prof.start();
    be.rmsnorm(x, L.input_norm.data(), T, H, cfg_.rms_eps, h);
    be.matmul(h, T, L.q, q);
    be.matmul(h, T, L.k, k);
    be.matmul(h, T, L.v, v);
    be.qk_norm_rope(q, k, T, L.q_norm.data(), L.k_norm.data(), cfg_, in.positions.data());
    prof.lap(StepProfile::kQkv);
    be.attention(l, q, k, v, T, cfg_, meta, attn);
    prof.lap(StepProfile::kAttention);
    be.matmul(attn, T, L.o, tmp);
    be.add(x, tmp, static_cast<size_t>(T) * H);
    be.rmsnorm(x, L.post_attn_norm.data(), T, H, cfg_.rms_eps, h);
    prof.lap(StepProfile::kOutput);
    if (L.moe) {
      be.moe(h, T, L, cfg_, tmp);
    } else {
      be.mlp(h, T, L.dense, tmp);
    }
    be.add(x, tmp, static_cast<size_t>(T) * H);
    prof.lap(StepProfile::kFfn);
  }
  StepOutput out;
  prof.start();
  logits_and_sample(in, x, out);
  prof.lap(StepProfile::kLogits);
  prof.report(T, in.num_seqs());
  return out;
}

void Model::logits_and_sample(const StepInput& in, const float* x, StepOutput& out) {
  const int S = in.num_seqs(), T = in.num_tokens(), H = cfg_.hidden, V = cfg_.vocab;
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
  std::vector<int> rows;
  std::vector<int> row_seq;
  for (int q = 0; q < S; q++) {
    const int b = in.seq_start[q], e = in.seq_start[q + 1];
    if (in.prompt_logprobs[q] >= 0) {
      for (int t = b; t < e; t++) { rows.push_back(t); row_seq.push_back(q); }
    } else if (in.sample[q]) {
      rows.push_back(e - 1);
      row_seq.push_back(q);
    }
  }
  if (rows.empty()) return;
  Backend& be = *be_;
  const VecMath math = be.vec_math();
  float* xr = be.scratch(kRows, static_cast<size_t>(kLogitRowsPerChunk) * H);
  float* hr = be.scratch(kH, static_cast<size_t>(kLogitRowsPerChunk) * H);
  float* logits = be.scratch(kLogits, static_cast<size_t>(kLogitRowsPerChunk) * V);
  struct RowScratch {
    std::vector<int32_t> ids;
    std::vector<float> p, processed;
  };
  std::vector<RowScratch> scratch(be.workers());
  for (size_t c0 = 0; c0 < rows.size(); c0 += kLogitRowsPerChunk) {
    const int n = static_cast<int>(std::min<size_t>(kLogitRowsPerChunk, rows.size() - c0));
    for (int i = 0; i < n; i++) std::copy(x + static_cast<int64_t>(rows[c0 + i]) * H, x + static_cast<int64_t>(rows[c0 + i] + 1) * H, xr + static_cast<int64_t>(i) * H);
    be.rmsnorm(xr, w_.final_norm.data(), n, H, cfg_.rms_eps, hr);
    be.matmul(hr, n, w_.lm_head, logits);
    // Rows are independent and write disjoint outputs: one per worker at a time.
    be.for_rows(n, [&](int64_t b, int64_t e, int worker) {
      RowScratch& rs = scratch[worker];
      for (int64_t i = b; i < e; i++) {
        const int t = rows[c0 + i], q = row_seq[c0 + i];
        const float* l = logits + i * V;
        const bool sampled = in.sample[q] && t == in.seq_start[q + 1] - 1;
        // The log-normaliser is a full pass over the vocabulary: only when some logprob is asked for.
        const bool need_lse = in.prompt_logprobs[q] >= 0 || (sampled && in.num_logprobs[q] >= 0);
        const float lse = need_lse ? log_sum_exp(math, l, V) : 0.0f;
        if (in.prompt_logprobs[q] >= 0) {
          if (in.targets[t] >= 0) out.target_logprobs[t] = l[in.targets[t]] - lse;
          top_logprobs(l, V, in.prompt_logprobs[q], lse, out.prompt_top_ids.data() + static_cast<int64_t>(t) * out.prompt_top_width,
                       out.prompt_top_logprobs.data() + static_cast<int64_t>(t) * out.prompt_top_width);
        }
        if (!sampled) continue;
        const SeqProcessing proc = processing_of(in, q, V);
        const float* draw_from = l;
        if (proc.active()) {
          rs.processed.assign(l, l + V);
          apply_processing(proc, rs.processed.data(), V);
          draw_from = rs.processed.data();
        }
        const float min_p = in.min_p.empty() ? 0.0f : in.min_p[q];
        const int32_t tok = sample_token(math, draw_from, V, in.temperature[q], in.top_p[q], in.top_k[q], min_p, in.uniform[q], rs.ids, rs.p);
        out.tokens[q] = tok;
        if (in.num_logprobs[q] >= 0) out.logprobs[q] = l[tok] - lse;
        if (in.num_logprobs[q] > 0) {
          top_logprobs(l, V, in.num_logprobs[q], lse, out.top_ids.data() + static_cast<int64_t>(q) * out.top_width,
                       out.top_logprobs.data() + static_cast<int64_t>(q) * out.top_width);
        }
      }
    });
  }
}

}  // namespace moe
