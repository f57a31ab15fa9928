#pragma once
/// The one place where the server's domain errors become grpc::Status codes (serving.md §5.2).

#include <grpcpp/support/status.h>

#include <exception>
#include <string>

#include "server/errors.h"

namespace kdeserve::server {

/// The gRPC code of a kind.
grpc::StatusCode to_grpc_code(ErrorKind kind);

/// A status with `message` bounded for the grpc-message trailer (bound_message: at most
/// kMaxStatusMessageBytes, valid UTF-8, no control characters). Every non-OK status the server
/// sends is made here.
grpc::Status make_status(grpc::StatusCode code, const std::string& message);

/// The status of a kind with a human-readable message (bounded as make_status does).
grpc::Status to_status(ErrorKind kind, const std::string& message);

/// Maps a caught exception: RequestError → its kind; anything else (LibTorchError from the
/// engine, std::exception, unknown) → INTERNAL, logged with `where` and the full message.
/// Never throws.
grpc::Status status_from_exception(std::exception_ptr error, const std::string& where) noexcept;

/// "OK", "INVALID_ARGUMENT", … (labels and logs).
std::string code_name(grpc::StatusCode code);

}  // namespace kdeserve::server
