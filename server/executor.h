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
//
// The same thread hands freed heap memory back to the OS when it goes idle (see
// ComputeExecutor::Options::trim_interval).

#include <chrono>
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
  struct Options {
    /// After work, once no more is queued and at least this long since the last trim, the
    /// thread calls `trim` (an idle wait ends early for it). 0 disables trimming.
    ///
    /// Why: glibc keeps what a thread frees in that thread's arena until the top of the heap
    /// is free, so the activation tensors of a large batch, decoded photos and gRPC's message
    /// slices stay resident between bursts. Measured in the soak test: RSS stepped up by
    /// 120-390 MiB after a burst and stayed there; one malloc_trim(0) took it from 1017 to
    /// 634 MiB. Trimming only when idle keeps it off every request's path.
    std::chrono::milliseconds trim_interval{2000};
    /// What a trim does; the default is malloc_trim(0) (every arena, pages inside the heaps
    /// too). Tests inject a counter.
    std::function<void()> trim;
  };

  ComputeExecutor();
  explicit ComputeExecutor(Options options);
  ~ComputeExecutor();
  ComputeExecutor(const ComputeExecutor&) = delete;
  ComputeExecutor& operator=(const ComputeExecutor&) = delete;

  /// Runs `work` on the compute thread and waits for it; rethrows what it throws. Calls from
  /// the compute thread itself run inline.
  void run(const std::function<void()>& work);

  /// How many trims have run.
  int64_t trims() const;
  /// Work queued and not yet started (what is running is not counted).
  size_t pending() const;

 private:
  using Clock = std::chrono::steady_clock;
  void loop();

  Options options_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::packaged_task<void()>> queue_;
  bool stop_ = false;
  int64_t trims_ = 0;
  std::thread thread_;
};

}  // namespace kdeserve::server
