#include "core/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

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

int32_t sample_token(const float* l, int V, float temperature, float top_p, int top_k, float u,
                     std::vector<int32_t>& ids, std::vector<float>& p) {
  if (!(temperature > 0.0f)) {
    int32_t best = 0;
    for (int32_t i = 1; i < V; i++)
      if (l[i] > l[best]) best = i;
    return best;
  }
  const bool use_k = top_k > 0 && top_k < V, use_p = top_p > 0.0f && top_p < 1.0f;
  ids.resize(V);
  std::iota(ids.begin(), ids.end(), 0);
  auto better = [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); };
  int n = V;
  if (use_k) {
    std::partial_sort(ids.begin(), ids.begin() + top_k, ids.end(), better);
    n = top_k;
  } else if (use_p) {
    std::sort(ids.begin(), ids.end(), better);
  }
  const float mx = l[use_k || use_p ? ids[0] : *std::max_element(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return l[a] < l[b]; })];
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
