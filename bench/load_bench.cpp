// Load benchmark of the service: N concurrent C++ clients call Classify on a kdeserve-server it
// starts on free loopback ports, reporting throughput and p50/p95/p99 latency at each
// concurrency, exact vs KDEformer, and the server's overhead at concurrency 1 against calling
// the model directly in-process (decode + preprocess + forward + top-k, through the server's
// engine) in the same run.
//   --protocols   also: the Open Inference Protocol's ModelInfer against kdeserve.v1 Classify on
//                 the same server, the same image, interleaved call by call (per-request cost).
//   --shadow F,.. only: the shadow check's cost, one server per fraction F (budget uncapped),
//                 loaded in interleaved rounds: sparse traffic (one caller, a pause between
//                 calls, where checks run) and 8 back-to-back callers (bench/load_bench_shadow.h).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench/load_bench.h"
#include "client/client.h"
#include "server/engine/engine.h"
#include "server/engine/images.h"
#include "server/engine/model_engine.h"
#include "tests/support/shared_data.h"

namespace {

namespace kc = kdeserve::client;
namespace ks = kdeserve::server;
using Clock = std::chrono::steady_clock;
using kdeserve::bench::free_port;
using kdeserve::bench::percentile;

struct Point {
  double throughput = 0, p50 = 0, p95 = 0, p99 = 0;
  int errors = 0;
};

// `concurrency` callers, each sending `per_caller` Classify calls back to back.
Point run_load(const std::string& address, const std::string& model, const std::string& image,
               kc::v1::AttentionMode mode, int concurrency, int per_caller) {
  std::vector<std::vector<double>> latencies(concurrency);
  std::atomic<int> errors{0};
  const auto start = Clock::now();
  std::vector<std::thread> callers;
  for (int c = 0; c < concurrency; ++c) {
    callers.emplace_back([&, c] {
      kc::ClientOptions options;
      options.deadline = std::chrono::seconds(600);
      kc::Client client(address, options);
      for (int i = 0; i < per_caller; ++i) {
        const auto t0 = Clock::now();
        const auto reply = client.classify(model, {image}, 1, mode);
        latencies[c].push_back(std::chrono::duration<double>(Clock::now() - t0).count());
        if (!reply.ok()) ++errors;
      }
    });
  }
  for (auto& t : callers) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (const auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  return {static_cast<double>(all.size()) / wall, percentile(all, 0.5), percentile(all, 0.95),
          percentile(all, 0.99), errors.load()};
}

}  // namespace

int main(int argc, char** argv) {
  std::string model = "t2t_vit_t_24";
  int threads = ks::hardware_threads();
  int requests = 8;  // per caller at concurrency 1; scaled down for more callers
  // Another build's server (e.g. the previous commit's) to compare against in the same session.
  std::string server = KDESERVE_SERVER_BINARY;
  bool protocols = false;
  std::vector<double> shadow_fractions;
  int rounds = 3, gap_ms = 300;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--model" && i + 1 < argc) model = argv[++i];
    else if (a == "--threads" && i + 1 < argc) threads = std::stoi(argv[++i]);
    else if (a == "--requests" && i + 1 < argc) requests = std::stoi(argv[++i]);
    else if (a == "--server" && i + 1 < argc) server = argv[++i];
    else if (a == "--protocols") protocols = true;
    else if (a == "--rounds" && i + 1 < argc) rounds = std::stoi(argv[++i]);
    else if (a == "--gap-ms" && i + 1 < argc) gap_ms = std::stoi(argv[++i]);
    else if (a == "--shadow" && i + 1 < argc) {
      std::stringstream list(argv[++i]);
      for (std::string f; std::getline(list, f, ',');) shadow_fractions.push_back(std::stod(f));
    } else {
      std::fprintf(stderr,
                   "usage: load_bench [--model NAME] [--threads N] [--requests N] "
                   "[--server BINARY] [--protocols] [--shadow F,F,... [--rounds N] "
                   "[--gap-ms N]]\n");
      return 2;
    }
  }
  const std::string image_path = kdeserve::testing::shared_file("data/photos/t2t-vit/dog.png");
  if (image_path.empty()) {
    std::fprintf(stderr, "missing ../shared/data/photos/t2t-vit/dog.png\n");
    return 1;
  }
  std::ifstream in(image_path, std::ios::binary);
  const std::string image{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (!shadow_fractions.empty()) {
    return kdeserve::bench::shadow_cost(server, model, threads, shadow_fractions, rounds, requests,
                                        gap_ms, image);
  }

  const kdeserve::bench::ServerProcess process(server, model, threads);
  const std::string& address = process.address;
  std::printf("load_bench: %s, server and direct calls with %d thread(s), one image per call\n",
              model.c_str(), threads);
  std::printf("%-10s %11s %10s %10s %10s %10s %7s\n", "attention", "concurrency", "req/s",
              "p50 ms", "p95 ms", "p99 ms", "errors");
  std::vector<std::pair<std::string, kc::v1::AttentionMode>> modes = {
      {"exact", kc::v1::ATTENTION_MODE_EXACT}, {"kdeformer", kc::v1::ATTENTION_MODE_KDEFORMER}};
  for (size_t m = 0; m < modes.size(); ++m) {
    run_load(address, model, image, modes[m].second, 1, 1);  // warm-up
    for (int concurrency : {1, 8, 32}) {
      // About 4 rounds of full batches at 8 callers, 2 at 32: enough calls for percentiles.
      const int per_caller =
          concurrency == 1 ? requests : (concurrency == 8 ? std::max(2, requests / 2) : 2);
      const Point p = run_load(address, model, image, modes[m].second, concurrency, per_caller);
      std::printf("%-10s %11d %10.2f %10.1f %10.1f %10.1f %7d\n", modes[m].first.c_str(),
                  concurrency, p.throughput, 1e3 * p.p50, 1e3 * p.p95, 1e3 * p.p99, p.errors);
      std::fflush(stdout);
    }
  }
  // Server overhead at concurrency 1: the same work done directly in this process (decode,
  // preprocess, forward, top-k) and through the idle server, interleaved call by call so slow
  // drifts of this shared machine hit both alike; the overhead is the median paired difference.
  ks::set_compute_threads(threads);
  const ks::ModelEngine direct(model, {});
  const int64_t crop = direct.spec().image_size;
  const std::vector<uint64_t> seeds = {0};
  kc::ClientOptions one_options;
  one_options.deadline = std::chrono::seconds(600);
  kc::Client one(address, one_options);
  const int pairs = 2 * requests + 1;
  for (size_t m = 0; m < modes.size(); ++m) {
    const ks::AttentionMode mode =
        m == 0 ? ks::AttentionMode::kExact : ks::AttentionMode::kKdeformer;
    std::vector<double> direct_s, server_s, diff_s;
    for (int i = 0; i < pairs + 1; ++i) {
      auto t0 = Clock::now();
      std::vector<ks::RgbImage> images;
      images.push_back(ks::prepare_encoded_image(image, crop, {40'000'000, 364'000'000}));
      direct.classify({{&images, &seeds, 1}}, mode);
      const double d = std::chrono::duration<double>(Clock::now() - t0).count();
      t0 = Clock::now();
      const auto reply = one.classify(model, {image}, 1, modes[m].second);
      const double r = std::chrono::duration<double>(Clock::now() - t0).count();
      if (!reply.ok()) throw std::runtime_error(reply.status().to_string());
      if (i == 0) continue;  // warm-up pair
      direct_s.push_back(d);
      server_s.push_back(r);
      diff_s.push_back(r - d);
    }
    const double p50 = percentile(direct_s, 0.5);
    const double overhead = percentile(diff_s, 0.5);
    std::printf("%-10s %d interleaved pairs: direct p50 %.1f ms, server p50 %.1f ms; overhead "
                "(median paired difference) %.1f ms = %.1f%% (target <= 5%% + 1 ms = %.1f ms; "
                "paired differences p25..p75: %.1f..%.1f ms)\n",
                modes[m].first.c_str(), pairs, 1e3 * p50, 1e3 * percentile(server_s, 0.5),
                1e3 * overhead, 100 * overhead / p50, 1e3 * (0.05 * p50 + 0.001),
                1e3 * percentile(diff_s, 0.25), 1e3 * percentile(diff_s, 0.75));
    std::fflush(stdout);
  }
  if (protocols) kdeserve::bench::compare_protocols(address, model, image, pairs);
  return 0;
}
