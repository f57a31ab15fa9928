#pragma once
/// A fixed set of threads running posted work in FIFO order: the server's decode pool, which
/// keeps image decoding off gRPC's callback threads (so health checks and admission answer in
/// milliseconds under any decode load) and bounds how many cores decoding can take. Its queue
/// is bounded by admission: only admitted requests (queue slots, server/batcher.h) post work.

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace kdeserve::server {

class WorkerPool {
 public:
  /// Starts `threads` ≥ 1 threads named `name` (in ps/top, at most 15 characters).
  WorkerPool(int threads, const std::string& name);
  /// stop().
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  /// Queues `work`; false (and `work` not run) once stop() began. Exceptions `work` throws are
  /// swallowed: work answers its own errors.
  bool post(std::function<void()> work);
  /// Work posted and not yet started.
  size_t pending() const;
  /// Refuses new work, runs what is queued, joins the threads. Idempotent.
  void stop();

 private:
  void loop();

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
  std::mutex join_mutex_;
};

}  // namespace kdeserve::server
