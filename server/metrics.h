#pragma once
/// Prometheus metrics of the server (serving.md §5.1, prefix kdeserve_), exposed by
/// prometheus-cpp on their own port.

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "server/config.h"

namespace prometheus {
class Exposer;
}

namespace kdeserve::server {

/// The metrics port could not be bound (the message says which address and why).
class MetricsBindError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Metrics {
 public:
  /// Registers every family; build_info carries `version` and `torch_version`.
  Metrics(const std::string& version, const std::string& torch_version);
  ~Metrics();

  /// Serves /metrics on host:port with `http`'s workers and timeout (keep-alive off). Throws
  /// MetricsBindError when it cannot bind.
  void expose(const std::string& address, const MetricsConfig& http = {});

  /// The registry (for tests: render with prometheus::TextSerializer).
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  /// One finished RPC: requests_total{model,rpc,code} and, for OK,
  /// request_duration_seconds{model,rpc,attention}.
  void request_done(const std::string& model, const std::string& rpc, const std::string& code,
                    const std::string& attention, double seconds);
  /// A request that waited `seconds` in the queue before running.
  void queued(const std::string& model, double seconds);
  /// A model forward of `items` items.
  void batch_done(const std::string& model, const std::string& attention, int64_t items,
                  double compute_seconds);
  /// rejected_total{model,reason} (queue_full, queue_bytes_full, deadline, cancelled, invalid,
  /// unavailable).
  void rejected(const std::string& model, const std::string& reason);
  /// queue_depth (admitted requests not yet computed) and queue_bytes (what they hold).
  void set_queue_depth(const std::string& model, double depth, double bytes);
  /// Creates a model's request and rejection series at 0, so that the first error of each
  /// kind already counts in rate() (a series born at 1 shows no increase) and dashboards plot
  /// 0 rather than nothing. codes: gRPC code names (e.g. "DEADLINE_EXCEEDED").
  void declare_model(const std::string& model, const std::string& rpc,
                     const std::vector<std::string>& codes);
  /// The configured max_queue_length and max_queue_bytes (alerts and dashboards divide the
  /// depth and the bytes by them).
  void set_queue_capacity(const std::string& model, double length, double bytes);
  void set_model_ready(const std::string& model, bool ready);
  void set_load_seconds(const std::string& model, double load, double warmup);
  /// inflight_requests += delta.
  void add_inflight(double delta);

  /// The shadow check (server/shadow.h). One approximate batch's outcome ("run",
  /// "not_sampled", "busy", "queue", "preempted", "budget", "failed"):
  /// shadow_checks_total{model,attention,outcome}; `compute_seconds` (what the check took) into
  /// shadow_compute_seconds_total{model}.
  void shadow_check(const std::string& model, const std::string& attention,
                    const std::string& outcome, double compute_seconds);
  /// Creates a model's shadow series at 0 (so the first check already counts in rate()): the
  /// outcomes and outputs of each approximate mode it allows, with `groups[i]` the layer
  /// groups attentions[i] approximates; the per-image histogram of its kind (classifier: the
  /// probability change, generator: the PSNR).
  void declare_shadow(const std::string& model, bool classifier,
                      const std::vector<std::string>& attentions,
                      const std::vector<std::vector<std::string>>& groups,
                      const std::vector<std::string>& outcomes);
  /// One image × approximated layer: shadow_attention_relative_error{model,attention,
  /// layer_group,norm="frobenius"|"spectral"}.
  void shadow_layer_error(const std::string& model, const std::string& attention,
                          const std::string& group, double frobenius, double spectral);
  /// One classified image: shadow_outputs_total, shadow_top1_mismatches_total (when the top-1
  /// class differs) and shadow_max_probability_difference{model,attention}.
  void shadow_classified(const std::string& model, const std::string& attention, bool top1_agree,
                         double max_probability_difference);
  /// One generated image: shadow_outputs_total and shadow_psnr_db{model,attention}.
  void shadow_generated(const std::string& model, const std::string& attention, double psnr_db);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string exposer_host_;  // where the destructor's wake-up connections go
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& request_duration_;
  prometheus::Family<prometheus::Histogram>& queue_duration_;
  prometheus::Family<prometheus::Histogram>& compute_duration_;
  prometheus::Family<prometheus::Histogram>& batch_size_;
  prometheus::Family<prometheus::Counter>& items_;
  prometheus::Family<prometheus::Counter>& batches_;
  prometheus::Family<prometheus::Gauge>& queue_depth_;
  prometheus::Family<prometheus::Gauge>& queue_capacity_;
  prometheus::Family<prometheus::Gauge>& queue_bytes_;
  prometheus::Family<prometheus::Gauge>& queue_bytes_capacity_;
  prometheus::Family<prometheus::Gauge>& inflight_family_;
  prometheus::Gauge& inflight_;
  prometheus::Family<prometheus::Counter>& rejected_;
  prometheus::Family<prometheus::Gauge>& model_ready_;
  prometheus::Family<prometheus::Gauge>& load_duration_;
  prometheus::Family<prometheus::Gauge>& warmup_duration_;
  prometheus::Family<prometheus::Gauge>& build_info_;
  prometheus::Family<prometheus::Counter>& shadow_checks_;
  prometheus::Family<prometheus::Counter>& shadow_compute_;
  prometheus::Family<prometheus::Histogram>& shadow_error_;
  prometheus::Family<prometheus::Counter>& shadow_outputs_;
  prometheus::Family<prometheus::Counter>& shadow_mismatches_;
  prometheus::Family<prometheus::Histogram>& shadow_probability_;
  prometheus::Family<prometheus::Histogram>& shadow_psnr_;
};

}  // namespace kdeserve::server
