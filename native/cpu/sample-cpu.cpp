// The rows that need logits: gathered from the residual stream in chunks, final norm, lm_head, then per row
// (one worker each) logprobs of the raw distribution, logits processing and the draw (core/sampler.h).
#include <algorithm>

#include "core/sampler.h"
#include "cpu/backend-cpu.h"

namespace moe {
namespace {

// Rows of logits computed per lm_head pass: the weights are streamed once per chunk, so a decode batch of up
// to this many sequences reads them once.
constexpr int kLogitRowsPerChunk = 64;
enum { kRows = 40, kNormed = 41, kLogits = 42 };  // scratch slots

}  // namespace

void CpuBackend::sample(const Buffer& xb, const LogitRows& rows, const StepInput& in, StepOutput& out) {
  const int H = cfg_.hidden, V = cfg_.vocab;
  const float* x = xb.f32();
  const VecMath math{k_.max, k_.exp_sum};
  float* xr = scratch(kRows, static_cast<size_t>(kLogitRowsPerChunk) * H);
  float* hr = scratch(kNormed, static_cast<size_t>(kLogitRowsPerChunk) * H);
  float* logits = scratch(kLogits, static_cast<size_t>(kLogitRowsPerChunk) * V);
  struct RowScratch {
    std::vector<int32_t> ids;
    std::vector<float> p, processed;
  };
  std::vector<RowScratch> row_scratch(pool_.size());
  for (size_t c0 = 0; c0 < rows.token.size(); c0 += kLogitRowsPerChunk) {
    const int n = static_cast<int>(std::min<size_t>(kLogitRowsPerChunk, rows.token.size() - c0));
    for (int i = 0; i < n; i++) {
      const float* src = x + static_cast<int64_t>(rows.token[c0 + i]) * H;
      std::copy(src, src + H, xr + static_cast<int64_t>(i) * H);
    }
    rmsnorm_rows(xr, w_.final_norm.data(), n, H, hr);
    matmul_into(hr, n, w_.lm_head, logits, V);
    // Rows are independent and write disjoint outputs: one per worker at a time.
    pool_.parallel_for(n, 1, [&](int64_t b, int64_t e, int worker) {
      RowScratch& rs = row_scratch[worker];
      for (int64_t i = b; i < e; i++) {
        const int t = rows.token[c0 + i], q = rows.seq[c0 + i];
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
