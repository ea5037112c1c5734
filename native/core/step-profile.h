// Opt-in per-phase timing of a step (MOESERVE_PROFILE=1): one line per step on stderr. Off, it costs a branch.
#pragma once
#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace moe {

class StepProfile {
 public:
  enum Phase { kQkv, kAttention, kOutput, kFfn, kLogits, kPhases };

  StepProfile() : on_(enabled()) {}
  void start() {
    if (on_) t_ = std::chrono::steady_clock::now();
  }
  void lap(Phase p) {
    if (!on_) return;
    const auto now = std::chrono::steady_clock::now();
    ms_[p] += std::chrono::duration<double, std::milli>(now - t_).count();
    t_ = now;
  }
  void report(int tokens, int seqs) const {
    if (!on_) return;
    std::fprintf(stderr, "[moeserve step] tokens %d seqs %d | qkv %.2f attn %.2f out %.2f ffn %.2f logits %.2f ms\n", tokens,
                 seqs, ms_[kQkv], ms_[kAttention], ms_[kOutput], ms_[kFfn], ms_[kLogits]);
  }

 private:
  static bool enabled() {
    static const bool on = std::getenv("MOESERVE_PROFILE") != nullptr;
    return on;
  }
  bool on_;
  std::chrono::steady_clock::time_point t_{};
  double ms_[kPhases] = {};
};

}  // namespace moe
