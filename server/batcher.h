#pragma once
/// Dynamic batching: one worker thread per model collects queued tasks of the same key (attention
/// mode, …) into a batch of at most max_batch_size items, waiting at most max_queue_delay after
/// the oldest task arrived. Generic over the task payload (no gRPC, no LibTorch), so it is tested
/// on its own.
///
/// Admission comes first and is all or nothing: admit() reserves queue slots and bytes for a
/// whole request before any work is done on it (decoding, splitting), and enqueue() later turns
/// the reservation into queued tasks. Dead tasks (deadline passed, cancelled) leave the queue as
/// soon as reap() is called or the worker wakes, so they never hold a slot that a live request
/// could use.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
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
  /// Items in one batch, ≥ 1. A task with more items than this is refused by enqueue().
  int64_t max_batch_size = 8;
  /// How long the oldest queued task waits for its batch to fill.
  std::chrono::microseconds max_queue_delay{5000};
  /// Tasks admitted and not yet taken into a batch (reserved or queued), ≥ 1.
  int64_t max_queue_length = 64;
  /// Bytes those tasks may hold (Task::bytes, reservations), ≥ 1.
  int64_t max_queue_bytes = std::numeric_limits<int64_t>::max();
};

/// Outcome of Batcher::admit() / submit().
enum class SubmitResult {
  kAccepted,        ///< admitted; the run or drop hook will see each task exactly once
  kQueueFull,       ///< max_queue_length tasks already wait (answer RESOURCE_EXHAUSTED)
  kQueueBytesFull,  ///< the tasks would exceed max_queue_bytes (answer RESOURCE_EXHAUSTED)
  kShutdown,        ///< the batcher is shutting down (answer UNAVAILABLE)
};

/// Why a queued task was not run.
enum class DropReason {
  kDeadline,   ///< its deadline passed while it was queued
  kCancelled,  ///< the client cancelled it while it was queued
  kShutdown,   ///< the shutdown deadline passed before it could run
};

/// "accepted", "queue_full", "queue_bytes_full", "shutdown" / "deadline", "cancelled",
/// "shutdown".
const char* to_string(SubmitResult result);
const char* to_string(DropReason reason);

template <typename Payload>
class Batcher {
 public:
  using Clock = std::chrono::steady_clock;

  /// One queued request (or request part).
  struct Task {
    Payload payload;
    /// Tasks are batched only with tasks of the same key (e.g. the attention mode).
    std::string key;
    /// Items (images) of the task, 1..max_batch_size.
    int64_t items = 1;
    /// Memory the task holds while queued (counted against max_queue_bytes).
    int64_t bytes = 0;
    /// After this the task is dropped with kDeadline instead of being run.
    Clock::time_point deadline = Clock::time_point::max();
    /// Optional: true once the client has cancelled.
    std::function<bool()> cancelled;
    /// Set by enqueue().
    Clock::time_point enqueued{};
  };

  /// Slots and bytes admitted for one request and not yet queued. Move-only; what is neither
  /// enqueued nor released is given back when it is destroyed.
  class Reservation {
   public:
    Reservation() = default;
    Reservation(Reservation&& o) noexcept { *this = std::move(o); }
    Reservation& operator=(Reservation&& o) noexcept {
      if (this != &o) {
        release();
        owner_ = std::exchange(o.owner_, nullptr);
        slots_ = std::exchange(o.slots_, 0);
        bytes_ = std::exchange(o.bytes_, 0);
      }
      return *this;
    }
    Reservation(const Reservation&) = delete;
    Reservation& operator=(const Reservation&) = delete;
    ~Reservation() { release(); }

    /// Gives the slots and bytes back (idempotent).
    void release() {
      if (owner_ != nullptr) owner_->unreserve(slots_, bytes_);
      owner_ = nullptr;
      slots_ = bytes_ = 0;
    }
    int64_t slots() const { return slots_; }
    int64_t bytes() const { return bytes_; }
    explicit operator bool() const { return owner_ != nullptr; }

   private:
    friend class Batcher;
    Batcher* owner_ = nullptr;
    int64_t slots_ = 0, bytes_ = 0;
  };

  /// What the worker calls. run and drop are required; run must answer every task of the batch.
  struct Hooks {
    /// A batch (same key, FIFO order, total items ≤ max_batch_size).
    std::function<void(std::vector<Task>& batch)> run;
    /// A task dropped without running (called without the batcher's lock, on the thread that
    /// found it dead: the worker or a reap() caller).
    std::function<void(Task& task, DropReason reason)> drop;
    /// run threw: the batch's tasks with the exception (if unset, the exception is swallowed).
    std::function<void(std::vector<Task>& batch, std::exception_ptr error)> fail;
    /// Admitted tasks or their bytes changed (called with the batcher's lock held).
    std::function<void(size_t depth, int64_t bytes)> depth_changed;
  };

  Batcher(BatcherOptions options, Hooks hooks)
      : options_(options), hooks_(std::move(hooks)) {
    if (options_.max_batch_size < 1 || options_.max_queue_length < 1 ||
        options_.max_queue_bytes < 1 || options_.max_queue_delay.count() < 0) {
      throw std::invalid_argument(
          "Batcher: max_batch_size, max_queue_length and max_queue_bytes must be >= 1");
    }
    if (!hooks_.run || !hooks_.drop) throw std::invalid_argument("Batcher: run and drop are required");
    worker_ = std::thread([this] { work(); });
  }

  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  ~Batcher() { shutdown(); }

  /// Reserves `slots` tasks and `bytes` for one request, all or nothing. Dead tasks are reaped
  /// first, so they never cause a refusal. `result` says why an empty reservation was returned.
  Reservation admit(int64_t slots, int64_t bytes, SubmitResult* result) {
    if (slots < 1 || bytes < 0) throw std::invalid_argument("Batcher: admit needs slots >= 1");
    reap();
    Reservation r;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) {
        *result = SubmitResult::kShutdown;
        return r;
      }
      if (admitted_slots() + slots > options_.max_queue_length) {
        *result = SubmitResult::kQueueFull;
        return r;
      }
      if (bytes > options_.max_queue_bytes - admitted_bytes()) {
        *result = SubmitResult::kQueueBytesFull;
        return r;
      }
      reserved_slots_ += slots;
      reserved_bytes_ += bytes;
      notify_depth();
    }
    r.owner_ = this;
    r.slots_ = slots;
    r.bytes_ = bytes;
    *result = SubmitResult::kAccepted;
    return r;
  }

  /// Queues tasks in place of a reservation (at most its slots; their bytes replace its
  /// bytes). kShutdown (and nothing queued: the caller answers the tasks) once shutdown began.
  /// Throws std::invalid_argument when a task's items are outside [1, max_batch_size].
  SubmitResult enqueue(Reservation& reservation, std::vector<Task> tasks) {
    if (reservation.owner_ != this || static_cast<int64_t>(tasks.size()) > reservation.slots_) {
      throw std::invalid_argument("Batcher: enqueue needs a reservation of this batcher");
    }
    for (const Task& t : tasks) {
      if (t.items < 1 || t.items > options_.max_batch_size) {
        throw std::invalid_argument("Batcher: task items outside [1, max_batch_size]");
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      reserved_slots_ -= reservation.slots_;
      reserved_bytes_ -= reservation.bytes_;
      reservation.owner_ = nullptr;
      reservation.slots_ = reservation.bytes_ = 0;
      if (stopping_) {
        notify_depth();
        return SubmitResult::kShutdown;
      }
      const Clock::time_point now = Clock::now();
      for (Task& t : tasks) {
        t.enqueued = now;
        queued_bytes_ += t.bytes;
        queue_.push_back(std::move(t));
      }
      notify_depth();
    }
    wake_.notify_one();
    return SubmitResult::kAccepted;
  }

  /// admit() and enqueue() of one task.
  SubmitResult submit(Task task) {
    if (task.items < 1 || task.items > options_.max_batch_size) {
      throw std::invalid_argument("Batcher: task items outside [1, max_batch_size]");
    }
    SubmitResult result;
    Reservation r = admit(1, task.bytes, &result);
    if (result != SubmitResult::kAccepted) return result;
    std::vector<Task> tasks;
    tasks.push_back(std::move(task));
    return enqueue(r, std::move(tasks));
  }

  /// Drops every queued task whose deadline passed or whose client cancelled, now, on the
  /// calling thread (drop hook without the lock). Cheap: call it when a call is cancelled.
  void reap() {
    std::vector<std::pair<Task, DropReason>> dead;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      take_dead(Clock::now(), dead);
    }
    for (auto& [task, reason] : dead) call_drop(task, reason);
  }

  /// Stops admitting, runs what is queued without waiting for the delay until `deadline`, drops
  /// (kShutdown) what is still queued then, and joins the worker. A batch already running is
  /// waited for. Idempotent.
  void shutdown(Clock::time_point deadline = Clock::time_point::max()) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      shutdown_deadline_ = std::min(shutdown_deadline_, deadline);
    }
    wake_.notify_all();
    std::lock_guard<std::mutex> join_lock(join_mutex_);
    if (worker_.joinable()) worker_.join();
  }

  /// Tasks admitted and not yet taken into a batch (reserved or queued).
  size_t depth() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return static_cast<size_t>(admitted_slots());
  }

  /// Bytes those tasks hold.
  int64_t bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return admitted_bytes();
  }

  const BatcherOptions& options() const { return options_; }

 private:
  int64_t admitted_slots() const { return static_cast<int64_t>(queue_.size()) + reserved_slots_; }
  int64_t admitted_bytes() const { return queued_bytes_ + reserved_bytes_; }

  void notify_depth() {
    if (hooks_.depth_changed) {
      hooks_.depth_changed(static_cast<size_t>(admitted_slots()), admitted_bytes());
    }
  }

  void unreserve(int64_t slots, int64_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    reserved_slots_ -= slots;
    reserved_bytes_ -= bytes;
    notify_depth();
  }

  // Moves dead tasks out of the queue (lock held).
  void take_dead(Clock::time_point now, std::vector<std::pair<Task, DropReason>>& dead) {
    const size_t before = dead.size();
    for (auto it = queue_.begin(); it != queue_.end();) {
      // The deadline first: gRPC also marks a call cancelled once its deadline has passed.
      if (it->deadline <= now) {
        dead.emplace_back(std::move(*it), DropReason::kDeadline);
      } else if (it->cancelled && it->cancelled()) {
        dead.emplace_back(std::move(*it), DropReason::kCancelled);
      } else {
        ++it;
        continue;
      }
      queued_bytes_ -= dead.back().first.bytes;
      it = queue_.erase(it);
    }
    if (dead.size() != before) notify_depth();
  }

  Clock::time_point earliest_deadline() const {
    Clock::time_point t = Clock::time_point::max();
    for (const Task& task : queue_) t = std::min(t, task.deadline);
    return t;
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
      std::vector<std::pair<Task, DropReason>> dead;
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) {
        if (stopping_) return;
        continue;
      }
      if (stopping_ && Clock::now() >= shutdown_deadline_) {
        for (Task& t : queue_) dead.emplace_back(std::move(t), DropReason::kShutdown);
        queue_.clear();
        queued_bytes_ = 0;
        notify_depth();
        lock.unlock();
        for (auto& [task, reason] : dead) call_drop(task, reason);
        lock.lock();
        continue;
      }
      const std::string key = queue_.front().key;
      const Clock::time_point due = queue_.front().enqueued + options_.max_queue_delay;
      // Waits for the batch to fill, waking at the first queued deadline to free its slot.
      bool front_died = false;
      while (!stopping_ && queued_items(key) < options_.max_batch_size && Clock::now() < due) {
        wake_.wait_until(lock, std::min(due, earliest_deadline()));
        take_dead(Clock::now(), dead);
        if (queue_.empty() || queue_.front().enqueued + options_.max_queue_delay != due ||
            queue_.front().key != key) {
          front_died = true;  // another task is now the oldest: start over with its delay
          break;
        }
      }
      if (front_died) {
        lock.unlock();
        for (auto& [task, reason] : dead) call_drop(task, reason);
        lock.lock();
        continue;
      }
      take_dead(Clock::now(), dead);
      std::vector<Task> batch;
      int64_t items = 0;
      for (auto it = queue_.begin(); it != queue_.end();) {
        if (it->key != key) {
          ++it;
          continue;
        }
        // FIFO within a key: stop at the first task that does not fit.
        if (items + it->items > options_.max_batch_size) break;
        items += it->items;
        queued_bytes_ -= it->bytes;
        batch.push_back(std::move(*it));
        it = queue_.erase(it);
      }
      notify_depth();
      lock.unlock();
      for (auto& [task, reason] : dead) call_drop(task, reason);
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
  int64_t queued_bytes_ = 0;
  int64_t reserved_slots_ = 0, reserved_bytes_ = 0;
  bool stopping_ = false;
  Clock::time_point shutdown_deadline_ = Clock::time_point::max();
  std::thread worker_;
};

}  // namespace kdeserve::server
