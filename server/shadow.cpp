#include "server/shadow.h"

#include <utility>

namespace kdeserve::server {

std::string to_string(ShadowOutcome outcome) {
  switch (outcome) {
    case ShadowOutcome::kRun: return "run";
    case ShadowOutcome::kNotSampled: return "not_sampled";
    case ShadowOutcome::kBusy: return "busy";
    case ShadowOutcome::kQueue: return "queue";
    case ShadowOutcome::kPreempted: return "preempted";
    case ShadowOutcome::kBudget: return "budget";
    case ShadowOutcome::kFailed: return "failed";
  }
  return "unknown";
}

ShadowSampler::ShadowSampler(const ShadowConfig& config, Clock::time_point start)
    : config_(config), start_(start) {}

bool ShadowSampler::pick() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (config_.fraction <= 0) return false;
  credit_ += config_.fraction;
  // The tolerance keeps fractions like 0.1 exact over many batches despite rounding.
  if (credit_ < 1.0 - 1e-9) return false;
  credit_ -= 1.0;
  return true;
}

bool ShadowSampler::within_budget(Clock::time_point now) const {
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  std::lock_guard<std::mutex> lock(mutex_);
  return spent_ <= config_.max_compute_share * elapsed;
}

void ShadowSampler::spent(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  spent_ += seconds;
}

double ShadowSampler::spent_seconds() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return spent_;
}

ShadowWorker::ShadowWorker() : thread_([this] { loop(); }) {}

ShadowWorker::~ShadowWorker() { stop(); }

bool ShadowWorker::offer(std::function<void()> check) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stop_ || pending_ || running_) return false;
    pending_ = std::move(check);
  }
  cv_.notify_one();
  return true;
}

void ShadowWorker::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
    pending_ = nullptr;
  }
  cv_.notify_one();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void ShadowWorker::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || pending_; });
    if (stop_) return;
    std::function<void()> check = std::move(pending_);
    pending_ = nullptr;
    running_ = true;
    lock.unlock();
    check();  // the caller's check never throws (it counts its own failures)
    check = nullptr;
    lock.lock();
    running_ = false;
  }
}

}  // namespace kdeserve::server
