#include "server/status.h"

#include "proto/status_code.h"

#include <spdlog/spdlog.h>

namespace kdeserve::server {
namespace {

// Longest error text logged: LibTorch's with its backtrace fits, a runaway one is cut.
constexpr std::size_t kMaxLoggedErrorBytes = 16 * 1024;

}  // namespace

grpc::StatusCode to_grpc_code(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return grpc::StatusCode::INVALID_ARGUMENT;
    case ErrorKind::kNotFound: return grpc::StatusCode::NOT_FOUND;
    case ErrorKind::kResourceExhausted: return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case ErrorKind::kDeadlineExceeded: return grpc::StatusCode::DEADLINE_EXCEEDED;
    case ErrorKind::kCancelled: return grpc::StatusCode::CANCELLED;
    case ErrorKind::kUnavailable: return grpc::StatusCode::UNAVAILABLE;
    case ErrorKind::kInternal: return grpc::StatusCode::INTERNAL;
    case ErrorKind::kUnimplemented: return grpc::StatusCode::UNIMPLEMENTED;
  }
  return grpc::StatusCode::INTERNAL;
}

grpc::Status make_status(grpc::StatusCode code, const std::string& message) {
  return grpc::Status(code, bound_message(message));
}

grpc::Status to_status(ErrorKind kind, const std::string& message) {
  return make_status(to_grpc_code(kind), message);
}

grpc::Status status_from_exception(std::exception_ptr error, const std::string& where) noexcept {
  try {
    try {
      std::rethrow_exception(error);
    } catch (const RequestError& e) {
      return to_status(e.kind(), e.what());
    } catch (const LibTorchError& e) {
      spdlog::error("{}: LibTorch error: {}", where,
                    bound_message(e.what(), kMaxLoggedErrorBytes));
      return make_status(grpc::StatusCode::INTERNAL, where + ": model error: " + e.brief());
    } catch (const std::exception& e) {
      spdlog::error("{}: internal error: {}", where,
                    bound_message(e.what(), kMaxLoggedErrorBytes));
      return make_status(grpc::StatusCode::INTERNAL, where + ": internal error: " + e.what());
    } catch (...) {
      spdlog::error("{}: unknown internal error", where);
      return make_status(grpc::StatusCode::INTERNAL, where + ": unknown internal error");
    }
  } catch (...) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "internal error");
  }
}

std::string code_name(grpc::StatusCode code) { return status_code_name(code); }

}  // namespace kdeserve::server
