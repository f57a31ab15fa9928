#pragma once
/// The server's error types, shared by the gRPC side (validation, server/status.h maps them to
/// codes) and the engine (server/engine/): plain C++, no gRPC and no LibTorch header.

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

/// A LibTorch failure (c10::Error and its subclasses, from the models or from tensor math),
/// translated at the engine boundary so that nothing outside server/engine/ sees a LibTorch
/// type. what() is c10::Error::what() (with LibTorch's context or backtrace: logged);
/// brief() is what_without_backtrace() (what clients are told).
class LibTorchError : public std::runtime_error {
 public:
  LibTorchError(const std::string& what, const std::string& brief)
      : std::runtime_error(what), brief_(brief) {}
  const std::string& brief() const { return brief_; }

 private:
  std::string brief_;
};

/// Shorthands for throwing a RequestError.
[[noreturn]] inline void throw_invalid(const std::string& message) {
  throw RequestError(ErrorKind::kInvalidArgument, message);
}
[[noreturn]] inline void throw_not_found(const std::string& message) {
  throw RequestError(ErrorKind::kNotFound, message);
}
[[noreturn]] inline void throw_unavailable(const std::string& message) {
  throw RequestError(ErrorKind::kUnavailable, message);
}

}  // namespace kdeserve::server
