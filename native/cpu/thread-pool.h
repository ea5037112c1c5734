// A persistent pool: parallel_for hands out chunks of [0, n) to the calling thread and the workers,
// and returns when all are done. No allocation per call.
//
// A decode step is a few dozen parallel_for calls of tens of microseconds each, so a condition-variable
// wake-up (tens of microseconds in a VM) per call would cost as much as the work. Workers therefore spin
// for a short while after each call before they sleep, and the caller spins while it waits for them; both
// fall back to blocking, so an idle pool (between steps, or when its threads are preempted) costs nothing.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace moe {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // fn(begin, end, thread_index) over chunks of `grain` items. Not reentrant: one call at a time.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn);

 private:
  void worker_loop(int index);
  void run_chunks(int thread_index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_start_, cv_done_;
  // seq_cst throughout: a sleeper registers (sleepers_/caller_waiting_) and then re-checks the state, the
  // other side changes the state and then checks for sleepers, so one of them always sees the other.
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> caller_waiting_{false};
  std::atomic<bool> stop_{false};
  const std::function<void(int64_t, int64_t, int)>* fn_ = nullptr;
  int64_t n_ = 0, grain_ = 1;
  std::atomic<int64_t> next_{0};
};

}  // namespace moe
