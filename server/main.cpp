// kdeserve-server: the gRPC inference server.
#include <grpc/grpc.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <pthread.h>
#include <thread>
#include <vector>

#include "server/call_accounting.h"
#include "server/config.h"
#include "server/engine/engine.h"
#include "server/logging.h"
#include "server/metrics.h"
#include "server/oip_service.h"
#include "server/service.h"

namespace ks = kdeserve::server;

namespace {

// Largest header block (request metadata) a call may carry, bytes; gRPC's default is 8 KiB.
// Why larger: gRPC 1.51 treats a header block over the limit as an error of the whole HTTP/2
// connection, failing every call on it. Behind a proxy that multiplexes many clients on one
// connection (Envoy accepts 60 KiB by default), one client's big header would fail the others'
// calls; 64 KiB accepts whatever such a proxy forwards. The server itself reads only
// x-request-id (≤ 128 bytes used).
constexpr int kMaxMetadataBytes = 64 * 1024;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ks::ConfigError("cannot read " + path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Set once run()'s objects are destroyed: from then on the exit watchdog must not log (spdlog's
// registry is destroyed with the other statics).
std::atomic<bool> g_torn_down{false};

int run(int argc, char** argv) {
  // SIGINT/SIGTERM are blocked in every thread and taken synchronously with sigwait below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const ks::CommandLine cl = ks::parse_command_line(argc, argv);
  if (cl.help) {
    std::cout << ks::usage();
    return 0;
  }
  const ks::ServerConfig config = ks::load_config(cl);
  if (cl.print_config) {
    std::cout << ks::to_yaml(config) << "\n";
    return 0;
  }
  ks::setup_logging(config.log_level, config.log_format);
  const auto t_start = std::chrono::steady_clock::now();
  const int threads = ks::set_compute_threads(
      config.threads > 0 ? static_cast<int>(config.threads) : ks::hardware_threads());
  spdlog::info("kdeserve-server {} (LibTorch {}), {} torch threads, config from {}",
               KDESERVE_VERSION, ks::torch_version(), threads,
               cl.config_file ? *cl.config_file : std::string("<built-in server.yaml>"));

  ks::Metrics metrics(KDESERVE_VERSION, ks::torch_version());
  try {
    metrics.expose(config.metrics_listen, config.metrics);
  } catch (const ks::MetricsBindError& e) {
    spdlog::critical("{}", e.what());
    return 3;
  }
  spdlog::info("metrics listening on http://{}/metrics ({} HTTP workers, request timeout {} ms)",
               config.metrics_listen, config.metrics.http_threads,
               config.metrics.request_timeout_ms);

  ks::InferenceService service(config, metrics);
  // The Open Inference Protocol (KServe v2 / Triton) on the same port, over the same models.
  ks::OipService oip_service(service, KDESERVE_VERSION);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (config.tls_cert_file) {
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back(
        {read_file(*config.tls_key_file), read_file(*config.tls_cert_file)});
    credentials = grpc::SslServerCredentials(ssl);
  }
  int bound_port = 0;
  builder.AddListeningPort(config.listen, credentials, &bound_port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(config.max_message_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, kMaxMetadataBytes);
  builder.RegisterService(&service);
  builder.RegisterService(&oip_service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  ks::LiveCalls live_calls;
  interceptors.push_back(ks::make_call_accounting(metrics, live_calls));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    spdlog::critical("cannot listen on {} (is the port in use or the address invalid?)",
                     config.listen);
    return 4;
  }
  auto* health = server->GetHealthCheckService();
  health->SetServingStatus("readiness", false);
  spdlog::info("gRPC listening on {} (port {}){}; health: \"\" live, \"readiness\" after warm-up",
               config.listen, bound_port, config.tls_cert_file ? " with TLS" : "");

  try {
    service.load_models();
  } catch (const std::exception& e) {
    spdlog::critical("loading the models failed: {}", e.what());
    server->Shutdown(std::chrono::system_clock::now());
    service.shutdown();
    return 5;
  }
  health->SetServingStatus("readiness", true);
  spdlog::info("ready: {} model(s) loaded and warmed up in {:.1f} s", config.models.size(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("signal {}: readiness NOT_SERVING, draining (delay {} s, grace {} s)", sig,
               config.drain_delay_seconds, config.shutdown_grace_seconds);
  health->SetServingStatus("readiness", false);
  service.begin_drain();
  if (config.drain_delay_seconds > 0) {
    std::this_thread::sleep_for(std::chrono::duration<double>(config.drain_delay_seconds));
  }
  // The grace period is a promise to the orchestrator: calls still running at its end are
  // cancelled, and a batch that is still computing then is abandoned: the process exits without
  // waiting for it (nor for its own teardown) rather than overrunning it.
  const auto grace = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(config.shutdown_grace_seconds));
  const auto grace_end = std::chrono::steady_clock::now() + grace;
  const auto grace_end_wall = std::chrono::system_clock::now() +
                              std::chrono::duration_cast<std::chrono::system_clock::duration>(grace);
  // Detached: it also bounds the destructors that run after run() returns. 200 ms for the
  // cancelled calls' statuses to reach their clients.
  std::thread([grace_end, seconds = config.shutdown_grace_seconds] {
    std::this_thread::sleep_until(grace_end + std::chrono::milliseconds(200));
    if (g_torn_down) std::_Exit(0);
    spdlog::warn("shutdown grace period of {} s is over with work still running (a batch, image "
                 "decoding or the teardown): exiting without waiting for it",
                 seconds);
    spdlog::default_logger()->flush();
    std::_Exit(0);
  }).detach();
  // gRPC refuses new calls from here on and returns when every client has closed its
  // connection, which idle clients never do: once the last call is answered, its force-close
  // (what it does itself at the deadline) ends the wait then instead of at the deadline.
  std::thread grpc_shutdown([&] { server->Shutdown(grace_end_wall); });
  if (live_calls.wait_until_none(grace_end)) grpc_server_cancel_all_calls(server->c_server());
  grpc_shutdown.join();
  service.shutdown(grace_end);
  server->Wait();
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int rc = run(argc, argv);
    g_torn_down = true;
    return rc;
  } catch (const ks::ConfigError& e) {
    std::cerr << "kdeserve-server: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "kdeserve-server: fatal: " << e.what() << "\n";
    return 1;
  }
}
