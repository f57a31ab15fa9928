#pragma once
/// Per-model inference statistics in the form of Triton's ModelStatistics (the Open Inference
/// Protocol's statistics extension): counts and summed durations of requests, queueing and
/// batches, kept beside the Prometheus metrics (which are histograms, not exact sums).

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>

namespace kdeserve::server {

/// A count and its summed duration.
struct DurationStat {
  uint64_t count = 0;
  uint64_t ns = 0;
  void add(double seconds) {
    ++count;
    ns += seconds > 0 ? static_cast<uint64_t>(seconds * 1e9) : 0;
  }
};

/// One model's statistics since the server started.
struct ModelStats {
  uint64_t inference_count = 0;  ///< items computed
  uint64_t execution_count = 0;  ///< batches run
  uint64_t last_inference_ms = 0;  ///< end of the last batch, ms since the epoch (0: none)
  DurationStat success, fail;    ///< inference requests answered OK / with an error, end to end
  DurationStat queue;            ///< time requests waited for their batch
  DurationStat compute;          ///< model forwards
  std::map<int64_t, DurationStat> batches;  ///< forwards per batch size
};

/// Thread-safe recorder of a ModelStats.
class ModelStatsRecorder {
 public:
  void request_done(bool ok, double seconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    (ok ? stats_.success : stats_.fail).add(seconds);
  }
  void queued(double seconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.queue.add(seconds);
  }
  void batch_done(int64_t items, double compute_seconds) {
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now().time_since_epoch());
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.inference_count += static_cast<uint64_t>(items);
    ++stats_.execution_count;
    stats_.last_inference_ms = static_cast<uint64_t>(now.count());
    stats_.compute.add(compute_seconds);
    stats_.batches[items].add(compute_seconds);
  }
  ModelStats snapshot() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

 private:
  mutable std::mutex mutex_;
  ModelStats stats_;
};

}  // namespace kdeserve::server
