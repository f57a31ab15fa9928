#pragma once
/// Dynamic batching: one worker thread per model collects queued tasks of the same key (attention
/// mode, …) into a batch of at most max_batch_size items, waiting at most max_queue_delay after
/// the oldest task arrived. Generic over the task payload (no gRPC, no LibTorch), so it is tested
/// on its own.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <list>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace kdeserve::server {

/// Limits of one batcher.
struct BatcherOptions {
  /// Items in one batch, ≥ 1. A task with more items than this is refused by submit().
  int64_t max_batch_size = 8;
  /// How long the oldest queued task waits for its batch to fill.
  std::chrono::microseconds max_queue_delay{5000};
  /// Tasks waiting (not yet taken into a batch), ≥ 1.
  int64_t max_queue_length = 64;
};

/// Outcome of Batcher::submit().
enum class SubmitResult {
  kAccepted,   ///< queued; the run or drop hook will see it exactly once
  kQueueFull,  ///< max_queue_length tasks already wait (answer RESOURCE_EXHAUSTED)
  kShutdown,   ///< the batcher is shutting down (answer UNAVAILABLE)
};

/// Why a queued task was not run.
enum class DropReason {
  kDeadline,   ///< its deadline passed while it was queued
  kCancelled,  ///< the client cancelled it while it was queued
};

/// "accepted", "queue_full", "shutdown" / "deadline", "cancelled".
const char* to_string(SubmitResult result);
const char* to_string(DropReason reason);

template <typename Payload>
class Batcher {
 public:
  using Clock = std::chrono::steady_clock;

  /// One queued request.
  struct Task {
    Payload payload;
    /// Tasks are batched only with tasks of the same key (e.g. the attention mode).
    std::string key;
    /// Items (images) of the task, 1..max_batch_size.
    int64_t items = 1;
    /// After this the task is dropped with kDeadline instead of being run.
    Clock::time_point deadline = Clock::time_point::max();
    /// Optional: true once the client has cancelled.
    std::function<bool()> cancelled;
    /// Set by submit().
    Clock::time_point enqueued{};
  };

  /// What the worker calls. run and drop are required; run must answer every task of the batch.
  struct Hooks {
    /// A batch (same key, FIFO order, total items ≤ max_batch_size).
    std::function<void(std::vector<Task>& batch)> run;
    /// A task dropped without running.
    std::function<void(Task& task, DropReason reason)> drop;
    /// run threw: the batch's tasks with the exception (if unset, the exception is swallowed).
    std::function<void(std::vector<Task>& batch, std::exception_ptr error)> fail;
    /// The number of queued tasks changed (called with the batcher's lock held).
    std::function<void(size_t depth)> depth_changed;
  };

  Batcher(BatcherOptions options, Hooks hooks)
      : options_(options), hooks_(std::move(hooks)) {
    if (options_.max_batch_size < 1 || options_.max_queue_length < 1 ||
        options_.max_queue_delay.count() < 0) {
      throw std::invalid_argument("Batcher: max_batch_size and max_queue_length must be >= 1");
    }
    if (!hooks_.run || !hooks_.drop) throw std::invalid_argument("Batcher: run and drop are required");
    worker_ = std::thread([this] { work(); });
  }

  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  ~Batcher() { shutdown(); }

  /// Queues a task. Throws std::invalid_argument when task.items is outside [1, max_batch_size].
  SubmitResult submit(Task task) {
    if (task.items < 1 || task.items > options_.max_batch_size) {
      throw std::invalid_argument("Batcher: task items outside [1, max_batch_size]");
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) return SubmitResult::kShutdown;
      if (static_cast<int64_t>(queue_.size()) >= options_.max_queue_length) {
        return SubmitResult::kQueueFull;
      }
      task.enqueued = Clock::now();
      queue_.push_back(std::move(task));
      notify_depth();
    }
    wake_.notify_one();
    return SubmitResult::kAccepted;
  }

  /// Stops accepting tasks, runs (or drops) everything still queued without waiting for the
  /// delay, and joins the worker. Idempotent.
  void shutdown() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    std::lock_guard<std::mutex> join_lock(join_mutex_);
    if (worker_.joinable()) worker_.join();
  }

  /// Tasks waiting now.
  size_t depth() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return queue_.size();
  }

  const BatcherOptions& options() const { return options_; }

 private:
  void notify_depth() {
    if (hooks_.depth_changed) hooks_.depth_changed(queue_.size());
  }

  int64_t queued_items(const std::string& key) const {
    int64_t n = 0;
    for (const Task& t : queue_) {
      if (t.key == key) n += t.items;
    }
    return n;
  }

  void work() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) {
        if (stopping_) return;
        continue;
      }
      const std::string key = queue_.front().key;
      const Clock::time_point due = queue_.front().enqueued + options_.max_queue_delay;
      while (!stopping_ && queued_items(key) < options_.max_batch_size && Clock::now() < due) {
        wake_.wait_until(lock, due);
      }
      std::vector<Task> batch;
      std::vector<std::pair<Task, DropReason>> dropped;
      int64_t items = 0;
      const Clock::time_point now = Clock::now();
      for (auto it = queue_.begin(); it != queue_.end();) {
        if (it->key != key) {
          ++it;
          continue;
        }
        // The deadline first: gRPC also marks a call cancelled once its deadline has passed.
        if (it->deadline <= now) {
          dropped.emplace_back(std::move(*it), DropReason::kDeadline);
          it = queue_.erase(it);
          continue;
        }
        if (it->cancelled && it->cancelled()) {
          dropped.emplace_back(std::move(*it), DropReason::kCancelled);
          it = queue_.erase(it);
          continue;
        }
        // FIFO within a key: stop at the first task that does not fit.
        if (items + it->items > options_.max_batch_size) break;
        items += it->items;
        batch.push_back(std::move(*it));
        it = queue_.erase(it);
      }
      notify_depth();
      lock.unlock();
      for (auto& [task, reason] : dropped) call_drop(task, reason);
      if (!batch.empty()) {
        try {
          hooks_.run(batch);
        } catch (...) {
          if (hooks_.fail) {
            try {
              hooks_.fail(batch, std::current_exception());
            } catch (...) {
            }
          }
        }
      }
      lock.lock();
    }
  }

  void call_drop(Task& task, DropReason reason) {
    try {
      hooks_.drop(task, reason);
    } catch (...) {
    }
  }

  const BatcherOptions options_;
  const Hooks hooks_;
  mutable std::mutex mutex_;
  std::mutex join_mutex_;
  std::condition_variable wake_;
  std::list<Task> queue_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace kdeserve::server
