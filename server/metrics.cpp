#include "server/metrics.h"

#include <prometheus/exposer.h>

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <utility>

#include "server/thread_stacks.h"

namespace kdeserve::server {
namespace {

using prometheus::Histogram;

// Classify on CPU takes 0.05–5 s, BigGAN up to a minute: one bucket set covering both, fixed
// (changing buckets breaks rate() across restarts).
const Histogram::BucketBoundaries& latency_buckets() {
  static const Histogram::BucketBoundaries b = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                1,     2.5,  5,     10,   20,  30,   60};
  return b;
}

const Histogram::BucketBoundaries& error_buckets() {
  static const Histogram::BucketBoundaries b = {0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
                                                0.1,   0.2,   0.5,   1.0};
  return b;
}

const Histogram::BucketBoundaries& probability_buckets() {
  static const Histogram::BucketBoundaries b = {0.0001, 0.001, 0.005, 0.01, 0.02,
                                                0.05,   0.1,   0.2,   0.5};
  return b;
}

const Histogram::BucketBoundaries& psnr_buckets() {
  static const Histogram::BucketBoundaries b = {10, 15, 20, 25, 30, 35, 40, 50, 60, 99};
  return b;
}

const Histogram::BucketBoundaries& batch_buckets() {
  static const Histogram::BucketBoundaries b = {1, 2, 4, 8, 16, 32, 64};
  return b;
}

}  // namespace

Metrics::Metrics(const std::string& version, const std::string& torch_version)
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("kdeserve_requests_total")
                    .Help("Finished RPCs by model, rpc and gRPC status code")
                    .Register(*registry_)),
      request_duration_(prometheus::BuildHistogram()
                            .Name("kdeserve_request_duration_seconds")
                            .Help("Server time of successful RPCs, receipt to response")
                            .Register(*registry_)),
      queue_duration_(prometheus::BuildHistogram()
                          .Name("kdeserve_queue_duration_seconds")
                          .Help("Time a request waited in the batching queue")
                          .Register(*registry_)),
      compute_duration_(prometheus::BuildHistogram()
                            .Name("kdeserve_compute_duration_seconds")
                            .Help("Model forward time per batch")
                            .Register(*registry_)),
      batch_size_(prometheus::BuildHistogram()
                      .Name("kdeserve_batch_size")
                      .Help("Items per executed batch")
                      .Register(*registry_)),
      items_(prometheus::BuildCounter()
                 .Name("kdeserve_items_total")
                 .Help("Items (images) computed")
                 .Register(*registry_)),
      batches_(prometheus::BuildCounter()
                   .Name("kdeserve_batches_total")
                   .Help("Model forward executions")
                   .Register(*registry_)),
      queue_depth_(prometheus::BuildGauge()
                       .Name("kdeserve_queue_depth")
                       .Help("Requests admitted and waiting (being decoded or queued for a batch)")
                       .Register(*registry_)),
      queue_capacity_(prometheus::BuildGauge()
                          .Name("kdeserve_queue_capacity")
                          .Help("Configured batching-queue length (max_queue_length)")
                          .Register(*registry_)),
      queue_bytes_(prometheus::BuildGauge()
                       .Name("kdeserve_queue_bytes")
                       .Help("Bytes held by admitted requests not yet computed (messages until "
                             "decoded, then model inputs)")
                       .Register(*registry_)),
      queue_bytes_capacity_(prometheus::BuildGauge()
                                .Name("kdeserve_queue_bytes_capacity")
                                .Help("Configured batching-queue memory (max_queue_bytes)")
                                .Register(*registry_)),
      inflight_family_(prometheus::BuildGauge()
                           .Name("kdeserve_inflight_requests")
                           .Help("Inference RPCs being handled")
                           .Register(*registry_)),
      inflight_(inflight_family_.Add({})),
      rejected_(prometheus::BuildCounter()
                    .Name("kdeserve_rejected_total")
                    .Help("Requests not computed, by reason")
                    .Register(*registry_)),
      model_ready_(prometheus::BuildGauge()
                       .Name("kdeserve_model_ready")
                       .Help("1 when the model is loaded and warmed up")
                       .Register(*registry_)),
      load_duration_(prometheus::BuildGauge()
                         .Name("kdeserve_model_load_duration_seconds")
                         .Help("Time to build and load the model at start-up")
                         .Register(*registry_)),
      warmup_duration_(prometheus::BuildGauge()
                           .Name("kdeserve_warmup_duration_seconds")
                           .Help("Time of the warm-up batch at start-up")
                           .Register(*registry_)),
      build_info_(prometheus::BuildGauge()
                      .Name("kdeserve_build_info")
                      .Help("Build metadata; always 1")
                      .Register(*registry_)),
      shadow_checks_(prometheus::BuildCounter()
                         .Name("kdeserve_shadow_checks_total")
                         .Help("Approximate batches by shadow-check outcome (run, not_sampled, "
                               "busy, queue, preempted, budget, failed)")
                         .Register(*registry_)),
      shadow_compute_(prometheus::BuildCounter()
                          .Name("kdeserve_shadow_compute_seconds_total")
                          .Help("Compute time spent on shadow checks")
                          .Register(*registry_)),
      shadow_error_(prometheus::BuildHistogram()
                        .Name("kdeserve_shadow_attention_relative_error")
                        .Help("Shadow check: relative error of an approximated attention layer's "
                              "output against exact attention on the same inputs, per image")
                        .Register(*registry_)),
      shadow_outputs_(prometheus::BuildCounter()
                          .Name("kdeserve_shadow_outputs_total")
                          .Help("Shadow check: model outputs (images) compared with exact")
                          .Register(*registry_)),
      shadow_mismatches_(prometheus::BuildCounter()
                             .Name("kdeserve_shadow_top1_mismatches_total")
                             .Help("Shadow check: classified images whose top-1 class differs "
                                   "from exact attention's")
                             .Register(*registry_)),
      shadow_probability_(prometheus::BuildHistogram()
                              .Name("kdeserve_shadow_max_probability_difference")
                              .Help("Shadow check: largest class-probability change per image "
                                    "against exact attention")
                              .Register(*registry_)),
      shadow_psnr_(prometheus::BuildHistogram()
                       .Name("kdeserve_shadow_psnr_db")
                       .Help("Shadow check: PSNR of a generated image against exact attention's "
                             "(100: identical)")
                       .Register(*registry_)) {
  build_info_.Add({{"version", version}, {"torch_version", torch_version}}).Set(1);
}

namespace {

// The host to connect to for an exposer listening on `address` (civetweb's "[host:]port").
std::string local_host_of(const std::string& address) {
  const auto colon = address.rfind(':');
  std::string host = colon == std::string::npos ? "" : address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty() || host == "0.0.0.0") return "127.0.0.1";
  if (host == "::") return "::1";
  return host;
}

// Opens and at once closes a TCP connection (the worker that takes it reads EOF and is free).
void touch(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const bool connected = connect(fd, a->ai_addr, a->ai_addrlen) == 0;
    close(fd);
    if (connected) break;
  }
  freeaddrinfo(found);
}

}  // namespace

Metrics::~Metrics() {
  if (!exposer_) return;
  // civetweb 1.15 polls its listening sockets in 2 s quanta and looks at its stop flag only
  // between them, so stopping it took 0-2 s (measured: 0.2-1.6 s of a 2 ms shutdown). A
  // connection ends the poll: knock until it has stopped.
  const std::vector<int> ports = exposer_->GetListeningPorts();
  std::atomic<bool> stopped{false};
  std::thread knocker([&] {
    while (!stopped) {
      for (const int port : ports) touch(exposer_host_, port);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  exposer_.reset();
  stopped = true;
  knocker.join();
}

void Metrics::expose(const std::string& address, const MetricsConfig& http) {
  // civetweb options. Keep-alive stays off: a scrape every 15 s would otherwise pin a worker
  // between scrapes, and a keep-alive timeout short enough to be harmless never sees the next
  // one; the short keep_alive_timeout_ms is there should keep-alive ever be turned on. No
  // linger_timeout_ms: without SO_LINGER, closing never blocks a worker on an unread response.
  std::vector<std::string> options = {
      "listening_ports",       address,
      "num_threads",           std::to_string(http.http_threads),
      "request_timeout_ms",    std::to_string(http.request_timeout_ms),
      "enable_keep_alive",     "no",
      "keep_alive_timeout_ms", std::to_string(std::min<int64_t>(http.request_timeout_ms, 500))};
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(std::move(options));
  } catch (const std::exception& e) {
    throw MetricsBindError("cannot serve metrics on " + address +
                           " (is the port in use or the address invalid?): " + e.what() +
                           " (static TLS per thread: " + std::to_string(static_tls_bytes() / 1024) +
                           " KiB)");
  }
  exposer_host_ = local_host_of(address);
  exposer_->RegisterCollectable(registry_);
}

void Metrics::request_done(const std::string& model, const std::string& rpc,
                           const std::string& code, const std::string& attention, double seconds) {
  requests_.Add({{"model", model}, {"rpc", rpc}, {"code", code}}).Increment();
  if (code == "OK") {
    request_duration_
        .Add({{"model", model}, {"rpc", rpc}, {"attention", attention}}, latency_buckets())
        .Observe(seconds);
  }
}

void Metrics::queued(const std::string& model, double seconds) {
  queue_duration_.Add({{"model", model}}, latency_buckets()).Observe(seconds);
}

void Metrics::batch_done(const std::string& model, const std::string& attention, int64_t items,
                         double compute_seconds) {
  compute_duration_.Add({{"model", model}, {"attention", attention}}, latency_buckets())
      .Observe(compute_seconds);
  batch_size_.Add({{"model", model}}, batch_buckets()).Observe(static_cast<double>(items));
  items_.Add({{"model", model}}).Increment(static_cast<double>(items));
  batches_.Add({{"model", model}}).Increment();
}

void Metrics::rejected(const std::string& model, const std::string& reason) {
  rejected_.Add({{"model", model}, {"reason", reason}}).Increment();
}

void Metrics::set_queue_depth(const std::string& model, double depth, double bytes) {
  queue_depth_.Add({{"model", model}}).Set(depth);
  queue_bytes_.Add({{"model", model}}).Set(bytes);
}

void Metrics::declare_model(const std::string& model, const std::string& rpc,
                            const std::vector<std::string>& codes) {
  for (const std::string& code : codes) {
    requests_.Add({{"model", model}, {"rpc", rpc}, {"code", code}});
  }
  for (const char* reason : {"queue_full", "queue_bytes_full", "deadline", "cancelled"}) {
    rejected_.Add({{"model", model}, {"reason", reason}});
  }
}

void Metrics::set_queue_capacity(const std::string& model, double length, double bytes) {
  queue_capacity_.Add({{"model", model}}).Set(length);
  queue_bytes_capacity_.Add({{"model", model}}).Set(bytes);
}

void Metrics::set_model_ready(const std::string& model, bool ready) {
  model_ready_.Add({{"model", model}}).Set(ready ? 1 : 0);
}

void Metrics::set_load_seconds(const std::string& model, double load, double warmup) {
  load_duration_.Add({{"model", model}}).Set(load);
  warmup_duration_.Add({{"model", model}}).Set(warmup);
}

void Metrics::add_inflight(double delta) {
  if (delta >= 0) {
    inflight_.Increment(delta);
  } else {
    inflight_.Decrement(-delta);
  }
}

void Metrics::shadow_check(const std::string& model, const std::string& attention,
                           const std::string& outcome, double compute_seconds) {
  shadow_checks_.Add({{"model", model}, {"attention", attention}, {"outcome", outcome}})
      .Increment();
  if (compute_seconds > 0) shadow_compute_.Add({{"model", model}}).Increment(compute_seconds);
}

void Metrics::declare_shadow(const std::string& model, bool classifier,
                             const std::vector<std::string>& attentions,
                             const std::vector<std::vector<std::string>>& groups,
                             const std::vector<std::string>& outcomes) {
  shadow_compute_.Add({{"model", model}});
  for (size_t i = 0; i < attentions.size(); ++i) {
    const std::string& a = attentions[i];
    for (const std::string& o : outcomes) {
      shadow_checks_.Add({{"model", model}, {"attention", a}, {"outcome", o}});
    }
    shadow_outputs_.Add({{"model", model}, {"attention", a}});
    if (classifier) {
      shadow_mismatches_.Add({{"model", model}, {"attention", a}});
      shadow_probability_.Add({{"model", model}, {"attention", a}}, probability_buckets());
    } else {
      shadow_psnr_.Add({{"model", model}, {"attention", a}}, psnr_buckets());
    }
    for (const std::string& g : i < groups.size() ? groups[i] : std::vector<std::string>{}) {
      for (const char* norm : {"frobenius", "spectral"}) {
        shadow_error_.Add({{"model", model}, {"attention", a}, {"layer_group", g}, {"norm", norm}},
                          error_buckets());
      }
    }
  }
}

void Metrics::shadow_layer_error(const std::string& model, const std::string& attention,
                                 const std::string& group, double frobenius, double spectral) {
  shadow_error_
      .Add({{"model", model}, {"attention", attention}, {"layer_group", group},
            {"norm", "frobenius"}},
           error_buckets())
      .Observe(frobenius);
  shadow_error_
      .Add({{"model", model}, {"attention", attention}, {"layer_group", group},
            {"norm", "spectral"}},
           error_buckets())
      .Observe(spectral);
}

void Metrics::shadow_classified(const std::string& model, const std::string& attention,
                                bool top1_agree, double max_probability_difference) {
  shadow_outputs_.Add({{"model", model}, {"attention", attention}}).Increment();
  if (!top1_agree) shadow_mismatches_.Add({{"model", model}, {"attention", attention}}).Increment();
  shadow_probability_.Add({{"model", model}, {"attention", attention}}, probability_buckets())
      .Observe(max_probability_difference);
}

void Metrics::shadow_generated(const std::string& model, const std::string& attention,
                               double psnr_db) {
  shadow_outputs_.Add({{"model", model}, {"attention", attention}}).Increment();
  shadow_psnr_.Add({{"model", model}, {"attention", attention}}, psnr_buckets()).Observe(psnr_db);
}

}  // namespace kdeserve::server
