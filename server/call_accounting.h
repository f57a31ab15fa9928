#pragma once
/// Accounting of the kdeserve.v1.Inference calls that never reach a handler: a request message
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
#include <memory>

#include "server/metrics.h"

namespace kdeserve::server {

/// The code a client received for a call the server saw cancelled: DEADLINE_EXCEEDED when its
/// deadline has passed (or passes within 100 ms: the client's own copy expires first), else
/// CANCELLED.
grpc::StatusCode cancelled_call_code(std::chrono::system_clock::time_point deadline);

/// The interceptor factory to give to ServerBuilder::experimental().SetInterceptorCreators().
/// `metrics` must outlive the server.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> make_call_accounting(
    Metrics& metrics);

}  // namespace kdeserve::server
