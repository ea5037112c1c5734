#include "cpu/thread-pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MOE_CPU_RELAX() _mm_pause()
#else
#define MOE_CPU_RELAX() std::this_thread::yield()
#endif

namespace moe {
namespace {

// How long a worker keeps polling for the next call before it sleeps, and how long the caller polls for the
// workers to finish before it sleeps. Long enough to span the serial gaps inside a step, short enough that
// the threads do not hold the cores while the server's JavaScript runs between steps.
constexpr auto kWorkerSpin = std::chrono::microseconds(200);
constexpr auto kCallerSpin = std::chrono::microseconds(2000);

// Polls `done` until it holds or `budget` has passed; true if it holds.
template <typename Done>
bool spin_until(Done done, std::chrono::microseconds budget) {
  const auto until = std::chrono::steady_clock::now() + budget;
  for (int i = 1;; i++) {
    if (done()) return true;
    MOE_CPU_RELAX();
    if (i % 64 == 0 && std::chrono::steady_clock::now() > until) return done();
  }
}

}  // namespace

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < std::max(1, threads); i++) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_start_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks(int thread_index) {
  for (;;) {
    int64_t b = next_.fetch_add(grain_);
    if (b >= n_) return;
    (*fn_)(b, std::min(n_, b + grain_), thread_index);
  }
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    auto woken = [&] { return stop_ || generation_ != seen; };
    if (!spin_until(woken, kWorkerSpin)) {
      std::unique_lock<std::mutex> lk(mu_);
      sleepers_++;
      cv_start_.wait(lk, woken);
      sleepers_--;
    }
    if (stop_) return;
    seen = generation_;
    run_chunks(index);
    if (--pending_ == 0 && caller_waiting_) {
      std::lock_guard<std::mutex> lk(mu_);
      cv_done_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (workers_.empty() || n <= grain) {
    for (int64_t b = 0; b < n; b += grain) fn(b, std::min(n, b + grain), 0);
    return;
  }
  fn_ = &fn;
  n_ = n;
  grain_ = grain;
  next_ = 0;
  pending_ = static_cast<int>(workers_.size());
  generation_++;
  if (sleepers_ > 0) {
    std::lock_guard<std::mutex> lk(mu_);
    cv_start_.notify_all();
  }
  run_chunks(0);
  auto done = [&] { return pending_ == 0; };
  if (!spin_until(done, kCallerSpin)) {
    std::unique_lock<std::mutex> lk(mu_);
    caller_waiting_ = true;
    cv_done_.wait(lk, done);
    caller_waiting_ = false;
  }
}

}  // namespace moe
