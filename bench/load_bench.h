#pragma once
// Shared by bench/load_bench.cpp and bench/load_bench_oip.cpp: a kdeserve-server child process on
// free loopback ports, percentiles, a /metrics reader.

#include <sys/types.h>

#include <string>
#include <vector>

namespace kdeserve::bench {

/// A free TCP port on 127.0.0.1.
int free_port();

/// The p-quantile (0..1) of `v` (nearest rank).
double percentile(std::vector<double> v, double p);

/// A kdeserve-server started from `binary` with one model, max_batch_size 8, no queue delay,
/// log level warn; `model_extra` is appended to the model's YAML entry (4-space indented keys).
/// Waits for readiness (2 minutes at most, else throws).
struct ServerProcess {
  ServerProcess(const std::string& binary, const std::string& model, int threads,
                const std::string& model_extra = "");
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  std::string address;  ///< gRPC, 127.0.0.1:PORT
  int metrics_port = 0;
  pid_t pid = 0;
  std::string config;
};

/// The text of http://127.0.0.1:port/metrics ("" when it cannot be read).
std::string scrape(int port);
/// The sum of every sample of `family` whose labels contain each of `labels` (e.g.
/// {"model=\"x\"", "outcome=\"run\""}) in a /metrics text.
double metric_sum(const std::string& text, const std::string& family,
                  const std::vector<std::string>& labels = {});

}  // namespace kdeserve::bench

namespace kdeserve::bench {

/// kdeserve.v1 Classify (top-1) against the Open Inference Protocol's ModelInfer (IMAGE BYTES,
/// PROBABILITIES with classification 1) on the server at `address`: `pairs` interleaved pairs
/// per attention mode (exact, kdeformer), alternating which goes first; prints p50 of each and
/// the median paired difference.
void compare_protocols(const std::string& address, const std::string& model,
                       const std::string& image, int pairs);

/// The shadow check's cost: one server per fraction (max_compute_share 1: the fraction alone
/// sets the cost), KDEformer traffic in `rounds` interleaved rounds of (a) one caller sending
/// `requests` calls with `gap_ms` between them (the checks run in the gaps) and (b) 8 callers
/// back to back. Prints latency and throughput per fraction and the checks' outcomes.
int shadow_cost(const std::string& binary, const std::string& model, int threads,
                const std::vector<double>& fractions, int rounds, int requests, int gap_ms,
                const std::string& image);

}  // namespace kdeserve::bench
