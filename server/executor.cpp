#include "server/executor.h"

#include <malloc.h>

namespace kdeserve::server {

ComputeExecutor::ComputeExecutor() : ComputeExecutor(Options{}) {}

ComputeExecutor::ComputeExecutor(Options options) : options_(std::move(options)) {
  if (!options_.trim) options_.trim = [] { malloc_trim(0); };
  thread_ = std::thread([this] { loop(); });
}

ComputeExecutor::~ComputeExecutor() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void ComputeExecutor::run(const std::function<void()>& work) {
  if (std::this_thread::get_id() == thread_.get_id()) {
    work();
    return;
  }
  std::packaged_task<void()> task(work);
  std::future<void> done = task.get_future();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
  done.get();  // rethrows the work's exception
}

size_t ComputeExecutor::pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size();
}

int64_t ComputeExecutor::trims() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return trims_;
}

void ComputeExecutor::loop() {
  const bool trimming = options_.trim_interval.count() > 0;
  Clock::time_point last_trim = Clock::now();
  bool worked_since_trim = false;
  for (;;) {
    std::packaged_task<void()> task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      const auto ready = [this] { return stop_ || !queue_.empty(); };
      if (trimming && worked_since_trim) {
        const Clock::time_point due = last_trim + options_.trim_interval;
        if (!cv_.wait_until(lock, due, ready)) {
          lock.unlock();
          options_.trim();
          last_trim = Clock::now();
          worked_since_trim = false;
          lock.lock();
          ++trims_;
          continue;
        }
      } else {
        cv_.wait(lock, ready);
      }
      if (queue_.empty()) return;  // stop_ and nothing left
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
    worked_since_trim = true;
  }
}

}  // namespace kdeserve::server
