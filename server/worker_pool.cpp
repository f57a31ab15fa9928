#include "server/worker_pool.h"

#include <pthread.h>

#include <stdexcept>

namespace kdeserve::server {

WorkerPool::WorkerPool(int threads, const std::string& name) {
  if (threads < 1) throw std::invalid_argument("WorkerPool: threads must be >= 1");
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this] { loop(); });
    pthread_setname_np(threads_.back().native_handle(), name.substr(0, 15).c_str());
  }
}

WorkerPool::~WorkerPool() { stop(); }

bool WorkerPool::post(std::function<void()> work) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stop_) return false;
    queue_.push_back(std::move(work));
  }
  cv_.notify_one();
  return true;
}

size_t WorkerPool::pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size();
}

void WorkerPool::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  std::lock_guard<std::mutex> join_lock(join_mutex_);
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void WorkerPool::loop() {
  for (;;) {
    std::function<void()> work;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      work = std::move(queue_.front());
      queue_.pop_front();
    }
    try {
      work();
    } catch (...) {
    }
  }
}

}  // namespace kdeserve::server
