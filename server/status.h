#pragma once
/// The one place where the server's domain errors become grpc::Status codes (serving.md §5.2).

#include <grpcpp/support/status.h>

#include <exception>
#include <stdexcept>
#include <string>

namespace kdeserve::server {

/// What went wrong with a request, independent of gRPC.
enum class ErrorKind {
  kInvalidArgument,    ///< bad input: shape, size, class id, NaN, too many items, mode not allowed
  kNotFound,           ///< unknown model
  kResourceExhausted,  ///< queue full
  kDeadlineExceeded,   ///< the client deadline passed while queued
  kCancelled,          ///< the client cancelled while queued
  kUnavailable,        ///< model not ready, server draining or shutting down
  kInternal,           ///< model / LibTorch failure (logged)
};

/// A request error with its kind; thrown by validation, caught by the service.
class RequestError : public std::runtime_error {
 public:
  RequestError(ErrorKind kind, const std::string& message)
      : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

/// Shorthands for throwing.
[[noreturn]] void throw_invalid(const std::string& message);
[[noreturn]] void throw_not_found(const std::string& message);
[[noreturn]] void throw_unavailable(const std::string& message);

/// The gRPC code of a kind.
grpc::StatusCode to_grpc_code(ErrorKind kind);

/// The status of a kind with a human-readable message.
grpc::Status to_status(ErrorKind kind, const std::string& message);

/// Maps a caught exception: RequestError → its kind; anything else (c10::Error from the model,
/// std::exception, unknown) → INTERNAL, logged with `where` and the full message.
/// Never throws.
grpc::Status status_from_exception(std::exception_ptr error, const std::string& where) noexcept;

/// "OK", "INVALID_ARGUMENT", … (labels and logs).
std::string code_name(grpc::StatusCode code);

}  // namespace kdeserve::server
