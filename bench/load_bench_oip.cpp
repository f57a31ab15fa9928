// load_bench's server process, /metrics reader, and two comparisons: the Open Inference
// Protocol against kdeserve.v1, and the shadow check's cost at several fractions.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "bench/load_bench.h"
#include "client/client.h"
#include "inference/grpc_service.grpc.pb.h"

extern char** environ;

namespace kdeserve::bench {

namespace kc = kdeserve::client;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

ServerProcess::ServerProcess(const std::string& binary, const std::string& model, int threads,
                             const std::string& model_extra) {
  const int port = free_port();
  metrics_port = free_port();
  address = "127.0.0.1:" + std::to_string(port);
  config = "/tmp/kdeserve_load_bench_" + std::to_string(getpid()) + "_" + std::to_string(port) +
           ".yaml";
  // This model only; batches of up to 8 form from what queues while the previous batch runs
  // (no extra delay, so concurrency 1 measures the serving path itself).
  std::ofstream(config) << "server:\n  listen: " << address << "\n  metrics_listen: 127.0.0.1:"
                        << metrics_port << "\n  threads: " << threads
                        << "\nlogging:\n  level: warn\nmodels:\n  - name: " << model
                        << "\n    allowed_attention: [exact, kdeformer]\n    batching:\n"
                           "      max_batch_size: 8\n      max_queue_delay_ms: 0\n"
                           "      max_queue_length: 256\n"
                        << model_extra;
  std::vector<char*> args = {const_cast<char*>(binary.c_str()), const_cast<char*>("--config"),
                             const_cast<char*>(config.c_str()), nullptr};
  if (posix_spawn(&pid, binary.c_str(), nullptr, nullptr, args.data(), environ) != 0) {
    throw std::runtime_error("cannot start " + binary);
  }
  kc::Client probe(address);
  const auto deadline = Clock::now() + std::chrono::minutes(2);
  while (true) {
    const auto h = probe.health("readiness");
    if (h.ok() && *h == kc::ServingStatus::HealthCheckResponse_ServingStatus_SERVING) break;
    if (Clock::now() > deadline) throw std::runtime_error("server not ready: " + address);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

ServerProcess::~ServerProcess() {
  if (pid > 0) {
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
  }
  std::remove(config.c_str());
}

std::string scrape(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string text;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
      char buf[65536];
      ssize_t n = 0;
      while ((n = recv(fd, buf, sizeof buf, 0)) > 0) text.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  const auto body = text.find("\r\n\r\n");
  return body == std::string::npos ? "" : text.substr(body + 4);
}

double metric_sum(const std::string& text, const std::string& family,
                  const std::vector<std::string>& labels) {
  double sum = 0;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(family + "{", 0) != 0 && line.rfind(family + " ", 0) != 0) continue;
    const auto space = line.rfind(' ');
    const std::string head = line.substr(0, space);
    if (std::all_of(labels.begin(), labels.end(),
                    [&](const std::string& l) { return head.find(l) != std::string::npos; })) {
      sum += std::stod(line.substr(space + 1));
    }
  }
  return sum;
}

void compare_protocols(const std::string& address, const std::string& model,
                       const std::string& image, int pairs) {
  kc::ClientOptions options;
  options.deadline = std::chrono::seconds(600);
  kc::Client v1_client(address, options);
  auto oip = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  std::string element(4, '\0');
  const uint32_t n = static_cast<uint32_t>(image.size());
  for (int b = 0; b < 4; ++b) element[static_cast<size_t>(b)] = static_cast<char>(n >> (8 * b));
  element += image;
  for (const auto& [name, mode] :
       std::vector<std::pair<std::string, kc::v1::AttentionMode>>{
           {"exact", kc::v1::ATTENTION_MODE_EXACT},
           {"kdeformer", kc::v1::ATTENTION_MODE_KDEFORMER}}) {
    inference::ModelInferRequest request;
    request.set_model_name(model);
    auto* in = request.add_inputs();
    in->set_name("IMAGE");
    in->set_datatype("BYTES");
    in->add_shape(1);
    request.add_raw_input_contents(element);
    auto* out = request.add_outputs();
    out->set_name("PROBABILITIES");
    (*out->mutable_parameters())["classification"].set_int64_param(1);
    (*request.mutable_parameters())["attention"].set_string_param(name);
    auto call_v1 = [&] {
      const auto t0 = Clock::now();
      const auto reply = v1_client.classify(model, {image}, 1, mode);
      if (!reply.ok()) throw std::runtime_error(reply.status().to_string());
      return seconds_since(t0);
    };
    auto call_oip = [&] {
      inference::ModelInferResponse response;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(600));
      const auto t0 = Clock::now();
      const grpc::Status status = oip->ModelInfer(&ctx, request, &response);
      if (!status.ok()) throw std::runtime_error("ModelInfer: " + status.error_message());
      return seconds_since(t0);
    };
    std::vector<double> v1_s, oip_s, diff_s;
    for (int i = 0; i < pairs + 1; ++i) {
      double a = 0, b = 0;
      if (i % 2 == 0) {
        a = call_v1();
        b = call_oip();
      } else {
        b = call_oip();
        a = call_v1();
      }
      if (i == 0) continue;  // warm-up pair
      v1_s.push_back(a);
      oip_s.push_back(b);
      diff_s.push_back(b - a);
    }
    std::printf("%-10s %d interleaved pairs: kdeserve.v1 Classify p50 %.2f ms, OIP ModelInfer p50 "
                "%.2f ms; OIP - v1 median paired difference %+.2f ms (p25..p75 %+.2f..%+.2f ms)\n",
                name.c_str(), pairs, 1e3 * percentile(v1_s, 0.5), 1e3 * percentile(oip_s, 0.5),
                1e3 * percentile(diff_s, 0.5), 1e3 * percentile(diff_s, 0.25),
                1e3 * percentile(diff_s, 0.75));
    std::fflush(stdout);
  }
}

namespace {

struct Round {
  std::vector<double> latencies;
  double seconds = 0;
};

// `callers` clients each sending `per_caller` KDEformer Classify calls, `gap_ms` apart.
Round load(const std::string& address, const std::string& model, const std::string& image,
           int callers, int per_caller, int gap_ms) {
  std::vector<std::vector<double>> latencies(static_cast<size_t>(callers));
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < callers; ++c) {
    threads.emplace_back([&, c] {
      kc::ClientOptions options;
      options.deadline = std::chrono::seconds(600);
      kc::Client client(address, options);
      for (int i = 0; i < per_caller; ++i) {
        if (i > 0 && gap_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(gap_ms));
        const auto t0 = Clock::now();
        const auto reply = client.classify(model, {image}, 1, kc::v1::ATTENTION_MODE_KDEFORMER);
        if (!reply.ok()) throw std::runtime_error(reply.status().to_string());
        latencies[static_cast<size_t>(c)].push_back(seconds_since(t0));
      }
    });
  }
  for (auto& t : threads) t.join();
  Round r;
  r.seconds = seconds_since(start);
  for (const auto& l : latencies) r.latencies.insert(r.latencies.end(), l.begin(), l.end());
  return r;
}

// Waits until every batch of the server has a shadow outcome (its check ran or was skipped),
// at most 30 s, so that one server's checks never run during another's round.
void settle(const ServerProcess& server, const std::string& model) {
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  const std::string m = "model=\"" + model + "\"";
  while (Clock::now() < deadline) {
    const std::string text = scrape(server.metrics_port);
    const double batches = metric_sum(text, "kdeserve_batches_total", {m});
    const double outcomes = metric_sum(text, "kdeserve_shadow_checks_total", {m});
    if (text.find("kdeserve_shadow_checks_total") == std::string::npos || outcomes >= batches) {
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace

int shadow_cost(const std::string& binary, const std::string& model, int threads,
                const std::vector<double>& fractions, int rounds, int requests, int gap_ms,
                const std::string& image) {
  std::vector<std::unique_ptr<ServerProcess>> servers;
  for (double f : fractions) {
    char extra[128];
    std::snprintf(extra, sizeof extra,
                  "    default_attention: kdeformer\n    shadow: {fraction: %g, "
                  "max_compute_share: 1}\n",
                  f);
    servers.push_back(std::make_unique<ServerProcess>(binary, model, threads, extra));
  }
  const size_t k = fractions.size();
  std::vector<Round> sparse(k), busy(k);
  for (size_t s = 0; s < k; ++s) {  // warm-up, then the counters start from here
    load(servers[s]->address, model, image, 1, 2, 0);
    settle(*servers[s], model);
  }
  std::vector<std::string> before(k);
  for (size_t s = 0; s < k; ++s) before[s] = scrape(servers[s]->metrics_port);
  for (int r = 0; r < rounds; ++r) {
    for (size_t i = 0; i < k; ++i) {
      const size_t s = (i + static_cast<size_t>(r)) % k;  // rotated order per round
      Round a = load(servers[s]->address, model, image, 1, requests, gap_ms);
      settle(*servers[s], model);
      Round b = load(servers[s]->address, model, image, 8, 2, 0);
      settle(*servers[s], model);
      sparse[s].latencies.insert(sparse[s].latencies.end(), a.latencies.begin(),
                                 a.latencies.end());
      busy[s].latencies.insert(busy[s].latencies.end(), b.latencies.begin(), b.latencies.end());
      busy[s].seconds += b.seconds;
    }
  }
  std::printf("shadow check cost: %s, %d thread(s), KDEformer, %d interleaved rounds per "
              "fraction of (1 caller x %d calls %d ms apart) and (8 callers x 2 calls)\n",
              model.c_str(), threads, rounds, requests, gap_ms);
  std::printf("%9s %13s %13s %11s %11s %10s | %5s %11s %6s %5s %9s %6s %9s\n", "fraction",
              "sparse p50 ms", "sparse p99 ms", "8x req/s", "8x p99 ms", "batches", "run",
              "not_sampled", "queue", "busy", "preempted", "budget", "compute s");
  for (size_t s = 0; s < k; ++s) {
    const std::string text = scrape(servers[s]->metrics_port);
    const std::string m = "model=\"" + model + "\"";
    auto delta = [&](const std::string& family, const std::vector<std::string>& labels) {
      return metric_sum(text, family, labels) - metric_sum(before[s], family, labels);
    };
    auto outcome = [&](const char* o) {
      return delta("kdeserve_shadow_checks_total", {m, std::string("outcome=\"") + o + "\""});
    };
    std::printf("%9g %13.1f %13.1f %11.2f %11.1f %10.0f | %5.0f %11.0f %6.0f %5.0f %9.0f %6.0f "
                "%9.2f\n",
                fractions[s], 1e3 * percentile(sparse[s].latencies, 0.5),
                1e3 * percentile(sparse[s].latencies, 0.99),
                static_cast<double>(busy[s].latencies.size()) / busy[s].seconds,
                1e3 * percentile(busy[s].latencies, 0.99),
                delta("kdeserve_batches_total", {m}), outcome("run"), outcome("not_sampled"),
                outcome("queue"), outcome("busy"), outcome("preempted"), outcome("budget"),
                delta("kdeserve_shadow_compute_seconds_total", {m}));
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace kdeserve::bench
