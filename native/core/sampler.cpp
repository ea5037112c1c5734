#include "core/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_set>

namespace moe {

float log_sum_exp(const float* l, int n) {
  const float mx = *std::max_element(l, l + n);
  double s = 0;
  for (int i = 0; i < n; i++) s += std::exp(static_cast<double>(l[i] - mx));
  return mx + static_cast<float>(std::log(s));
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

int32_t sample_token(const float* l, int V, float temperature, float top_p, int top_k, float min_p, float u,
                     std::vector<int32_t>& ids, std::vector<float>& p) {
  int32_t best = 0;
  for (int32_t i = 1; i < V; i++)
    if (l[i] > l[best]) best = i;
  if (!(temperature > 0.0f) || l[best] == -std::numeric_limits<float>::infinity()) return best;
  const float mx = l[best];
  // min_p: p_i / p_max = exp((l_i - mx) / T) >= min_p  ⇔  l_i >= mx + T·ln(min_p).
  const float floor = min_p > 0.0f ? mx + temperature * std::log(std::min(min_p, 1.0f)) : -std::numeric_limits<float>::infinity();
  ids.clear();
  for (int32_t i = 0; i < V; i++)
    if (l[i] >= floor && l[i] != -std::numeric_limits<float>::infinity()) ids.push_back(i);
  int n = static_cast<int>(ids.size());
  auto better = [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); };
  const bool use_k = top_k > 0 && top_k < n, use_p = top_p > 0.0f && top_p < 1.0f;
  if (use_k) {
    std::partial_sort(ids.begin(), ids.begin() + top_k, ids.end(), better);
    n = top_k;
  } else if (use_p) {
    std::sort(ids.begin(), ids.end(), better);
  }
  p.resize(n);
  double sum = 0;
  for (int i = 0; i < n; i++) sum += (p[i] = std::exp((l[ids[i]] - mx) / temperature));
  if (use_p) {
    double acc = 0;
    int keep = n;
    for (int i = 0; i < n; i++) {
      acc += p[i] / sum;
      if (acc >= top_p) {
        keep = i + 1;
        break;
      }
    }
    n = keep;
    sum = 0;
    for (int i = 0; i < n; i++) sum += p[i];
  }
  const double target = static_cast<double>(u) * sum;
  double acc = 0;
  for (int i = 0; i < n; i++) {
    acc += p[i];
    if (acc > target) return ids[i];
  }
  return ids[n - 1];
}

}  // namespace moe
