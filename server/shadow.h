#pragma once
/// The shadow check's scheduling (no gRPC, no LibTorch: tested on its own). After a batch that
/// ran an approximate attention method is answered, the service asks ShadowSampler whether to
/// check it, and hands the check to ShadowWorker, whose thread runs it on the compute thread
/// only when no request is waiting; the check itself (exact recomputation) is the engine's
/// (ModelEngine::shadow_classify / shadow_generate) and its figures the metrics'.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "server/config.h"

namespace kdeserve::server {

/// Why a shadow check of a picked batch did or did not run: the `outcome` label of
/// kdeserve_shadow_checks_total.
enum class ShadowOutcome {
  kRun,         ///< checked: its figures are recorded
  kNotSampled,  ///< not picked (ShadowConfig::fraction)
  kBusy,        ///< picked while another check was waiting or running
  kQueue,       ///< requests were waiting when its turn came
  kPreempted,   ///< requests arrived while it ran: it stopped between two steps
  kBudget,      ///< the checks' compute share was spent (ShadowConfig::max_compute_share)
  kFailed,      ///< the recomputation threw (logged)
};

/// "run", "not_sampled", "busy", "queue", "preempted", "budget", "failed".
std::string to_string(ShadowOutcome outcome);

/// Picks batches evenly at the configured fraction and keeps the compute budget of one model.
/// Thread-safe.
class ShadowSampler {
 public:
  using Clock = std::chrono::steady_clock;
  ShadowSampler(const ShadowConfig& config, Clock::time_point start);

  /// One approximate batch: true for every 1/fraction-th (a credit of `fraction` per batch,
  /// picked when it reaches 1), never at fraction 0, always at 1.
  bool pick();
  /// Whether the checks' compute so far fits max_compute_share of the time since `start`.
  bool within_budget(Clock::time_point now) const;
  /// A check took `seconds` of compute.
  void spent(double seconds);
  double spent_seconds() const;

 private:
  ShadowConfig config_;
  Clock::time_point start_;
  mutable std::mutex mutex_;
  double credit_ = 0;
  double spent_ = 0;
};

/// One thread that runs shadow checks one at a time; at most one waits for it.
class ShadowWorker {
 public:
  ShadowWorker();
  ~ShadowWorker();
  ShadowWorker(const ShadowWorker&) = delete;
  ShadowWorker& operator=(const ShadowWorker&) = delete;

  /// Hands `check` to the thread; false (and `check` dropped) when one is already waiting or
  /// running, or after stop().
  bool offer(std::function<void()> check);
  /// Drops the waiting check, waits for the running one and ends the thread. Idempotent.
  void stop();

 private:
  void loop();

  std::mutex mutex_;
  std::condition_variable cv_;
  std::function<void()> pending_;
  bool running_ = false;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace kdeserve::server
