#include "core/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_set>

namespace moe {

float log_sum_exp(const VecMath& m, const float* l, int n) {
  const float mx = m.max(l, n);
  return mx + std::log(m.exp_sum(l, n, mx, 1.0f, nullptr));
}

void top_logprobs(const float* l, int V, int n, float lse, int32_t* ids, float* lp) {
  n = std::min(n, V);
  if (n <= 0) return;
  std::vector<int32_t> best;
  best.reserve(static_cast<size_t>(n) + 1);
  auto worse = [&](int32_t a, int32_t b) { return l[a] < l[b] || (l[a] == l[b] && a > b); };
  // A small min-heap of the n best seen so far: O(V log n) without sorting the vocabulary.
  auto heap_cmp = [&](int32_t a, int32_t b) { return worse(b, a); };
  for (int32_t i = 0; i < V; i++) {
    if (static_cast<int>(best.size()) < n) {
      best.push_back(i);
      std::push_heap(best.begin(), best.end(), heap_cmp);
    } else if (worse(best.front(), i)) {
      std::pop_heap(best.begin(), best.end(), heap_cmp);
      best.back() = i;
      std::push_heap(best.begin(), best.end(), heap_cmp);
    }
  }
  std::sort(best.begin(), best.end(), [&](int32_t a, int32_t b) { return worse(b, a); });
  for (int i = 0; i < n; i++) {
    ids[i] = best[i];
    lp[i] = l[best[i]] - lse;
  }
}

void apply_processing(const SeqProcessing& p, float* l, int V) {
  for (int i = 0; i < p.n_bias; i++) l[p.bias_ids[i]] += p.bias_values[i];
  if (p.mask) {
    for (int i = 0; i < V; i++)
      if (!((p.mask[i >> 5] >> (i & 31)) & 1u)) l[i] = -std::numeric_limits<float>::infinity();
  }
  if (p.repetition != 1) {
    std::unordered_set<int32_t> seen;
    auto penalise = [&](int32_t t) {
      if (!seen.insert(t).second) return;
      l[t] = l[t] > 0 ? l[t] / p.repetition : l[t] * p.repetition;
    };
    for (int i = 0; i < p.n_prompt; i++) penalise(p.prompt_ids[i]);
    for (int i = 0; i < p.n_out; i++) penalise(p.out_ids[i]);
  }
  for (int i = 0; i < p.n_out; i++) l[p.out_ids[i]] -= p.frequency * static_cast<float>(p.out_counts[i]) + p.presence;
}

int32_t sample_token(const VecMath& m, const float* l, int V, float temperature, float top_p, int top_k, float min_p,
                     float u, std::vector<int32_t>& ids, std::vector<float>& p) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  int32_t best = 0;
  for (int32_t i = 1; i < V; i++)
    if (l[i] > l[best]) best = i;
  if (!(temperature > 0.0f) || l[best] == kNegInf) return best;
  const float mx = l[best], inv_t = 1.0f / temperature;
  const bool use_k = top_k > 0 && top_k < V, use_p = top_p > 0.0f && top_p < 1.0f, use_min_p = min_p > 0.0f;
  if (!use_k && !use_p && !use_min_p) {
    // The whole vocabulary: weights in one vectorised pass, then the inverse CDF in id order.
    p.resize(V);
    const double target = static_cast<double>(u) * m.exp_sum(l, V, mx, inv_t, p.data());
    double acc = 0;
    for (int32_t i = 0; i < V; i++) {
      acc += p[i];
      if (acc > target && p[i] > 0) return i;
    }
    return best;
  }
  // Order: min_p, then top_k, then top_p, each over what the previous left.
  // min_p: p_i / p_max = exp((l_i - mx) / T) >= min_p  ⇔  l_i >= mx + T·ln(min_p).
  const float floor = use_min_p ? mx + temperature * std::log(std::min(min_p, 1.0f)) : kNegInf;
  auto better = [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); };
  auto collect = [&](float from) {
    ids.clear();
    for (int32_t i = 0; i < V; i++)
      if (l[i] >= from && l[i] != kNegInf) ids.push_back(i);
  };
  std::vector<double> q;
  double sum = 0, mass = 0;
  auto weigh = [&](int n) {
    q.resize(n);
    sum = 0;
    for (int i = 0; i < n; i++) sum += (q[i] = std::exp(static_cast<double>(l[ids[i]] - mx) * inv_t));
  };
  int n;
  if (use_k) {
    collect(floor);
    n = std::min<int>(top_k, static_cast<int>(ids.size()));
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), better);
    weigh(n);
    mass = sum;
  } else if (use_p) {
    // Nucleus without sorting the vocabulary: when the tokens within a factor 1e-4 of the best already hold
    // top_p of the mass, the nucleus lies among them and sorting those is exact; otherwise sort every survivor.
    p.resize(V);
    m.exp_sum(l, V, mx, inv_t, p.data());
    const float cut = std::max(floor, mx + temperature * std::log(1e-4f));
    double head = 0;
    for (int32_t i = 0; i < V; i++) {
      if (l[i] < floor) continue;
      mass += p[i];
      if (l[i] >= cut) head += p[i];
    }
    collect(head >= top_p * mass ? cut : floor);
    n = static_cast<int>(ids.size());
    std::sort(ids.begin(), ids.end(), better);
    weigh(n);
  } else {
    collect(floor);
    n = static_cast<int>(ids.size());
    weigh(n);
    mass = sum;
  }
  if (use_p) {
    double acc = 0;
    int keep = n;
    for (int i = 0; i < n; i++) {
      acc += q[i];
      if (acc >= top_p * mass) {
        keep = i + 1;
        break;
      }
    }
    n = keep;
    sum = 0;
    for (int i = 0; i < n; i++) sum += q[i];
  }
  const double target = static_cast<double>(u) * sum;
  double acc = 0;
  for (int i = 0; i < n; i++) {
    acc += q[i];
    if (acc > target) return ids[i];
  }
  return ids[n - 1];
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

}  // namespace moe
