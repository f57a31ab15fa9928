#pragma once
// The one thread that runs every LibTorch computation of the server (model loading, warm-up and
// batches of every model).
//
// Why: LibTorch's CPU build parallelises with OpenMP, and every OS thread that runs a parallel
// region gets its own OpenMP team. With several teams alive (one per batcher worker, plus the
// thread that warmed the models up) libgomp has more threads than cores and throttles its spin
// waits, so every parallel region pays futex sleeps: measured here, a T2T-ViT_t-24 forward took
// ~1.7x longer on a second thread than on the first. One compute thread keeps one team; on a
// CPU each forward uses every core anyway, so batches of different models queue here instead.

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

namespace kdeserve::server {

class ComputeExecutor {
 public:
  ComputeExecutor();
  ~ComputeExecutor();
  ComputeExecutor(const ComputeExecutor&) = delete;
  ComputeExecutor& operator=(const ComputeExecutor&) = delete;

  /// Runs `work` on the compute thread and waits for it; rethrows what it throws. Calls from
  /// the compute thread itself run inline.
  void run(const std::function<void()>& work);

 private:
  void loop();

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::packaged_task<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace kdeserve::server
