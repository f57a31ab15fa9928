#pragma once
/// Accounting of the kdeserve.v1.Inference and inference.GRPCInferenceService (Open Inference
/// Protocol) calls that never reach a handler: a request message
/// that is not a valid protobuf, or a call cancelled (by its client or its deadline) before its
/// message could be read. gRPC answers those itself; this server interceptor counts each
/// exactly once in requests_total (model "unknown", the code the client received) and writes
/// its access-log line, so every RPC that gRPC hands to the application is counted once (the
/// handlers count theirs when gRPC is done with them, server/service_run.cpp). It also answers
/// an unparseable message INVALID_ARGUMENT instead of gRPC's bare UNIMPLEMENTED.
///
/// Not seen by any application code, so not counted: calls that gRPC's core refuses before it
/// publishes them (a message above max_message_bytes, answered RESOURCE_EXHAUSTED by its
/// message-size filter; a deadline that passes before the core has read the message).

#include <grpcpp/support/server_interceptor.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "server/metrics.h"

namespace kdeserve::server {

/// The code a client received for a call the server saw cancelled: DEADLINE_EXCEEDED when its
/// deadline has passed (or passes within 100 ms: the client's own copy expires first), else
/// CANCELLED.
grpc::StatusCode cancelled_call_code(std::chrono::system_clock::time_point deadline);

/// The kdeserve.v1.Inference and OIP calls that gRPC has published and not yet finished, from their
/// headers to their end (handled or not). Shutdown waits on it to end the grace period as soon
/// as the last call is answered: gRPC's own Shutdown(deadline) waits for every client to close
/// its connection, which idle clients never do, so it would otherwise always last the whole
/// grace period. Health and reflection calls are not counted (a health Watch never ends).
class LiveCalls {
 public:
  void add();
  void remove();
  /// Blocks until no call is live or `deadline` passes; true when none is live.
  bool wait_until_none(std::chrono::steady_clock::time_point deadline);

 private:
  std::mutex mutex_;
  std::condition_variable none_;
  int64_t count_ = 0;
};

/// The interceptor factory to give to ServerBuilder::experimental().SetInterceptorCreators().
/// `metrics` and `live` must outlive the server.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> make_call_accounting(
    Metrics& metrics, LiveCalls& live);

}  // namespace kdeserve::server
