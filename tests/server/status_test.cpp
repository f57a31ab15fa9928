// The one mapping from domain errors to gRPC codes.
#include "server/status.h"

#include <gtest/gtest.h>

namespace ks = kdeserve::server;

TEST(ServerStatus, KindsMapToCodes) {
  EXPECT_EQ(ks::to_grpc_code(ks::ErrorKind::kInvalidArgument), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ks::to_grpc_code(ks::ErrorKind::kNotFound), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ks::to_grpc_code(ks::ErrorKind::kResourceExhausted),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ks::to_grpc_code(ks::ErrorKind::kDeadlineExceeded),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(ks::to_grpc_code(ks::ErrorKind::kUnavailable), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ks::to_grpc_code(ks::ErrorKind::kInternal), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(ks::code_name(grpc::StatusCode::RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
}

TEST(ServerStatus, ExceptionsBecomeStatuses) {
  auto status_of = [](auto thrower) {
    try {
      thrower();
    } catch (...) {
      return ks::status_from_exception(std::current_exception(), "test");
    }
    return grpc::Status::OK;
  };
  const auto invalid = status_of([] { ks::throw_invalid("top_k too big"); });
  EXPECT_EQ(invalid.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(invalid.error_message(), "top_k too big");
  EXPECT_EQ(status_of([] { ks::throw_not_found("x"); }).error_code(), grpc::StatusCode::NOT_FOUND);
  // A LibTorch error, as the engine translates c10::Error: clients get the message without
  // LibTorch's context (what() is logged).
  const auto torch = status_of([] {
    throw ks::LibTorchError("shape mismatch\nException raised from f at x.cpp:1", "shape mismatch");
  });
  EXPECT_EQ(torch.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(torch.error_message(), "test: model error: shape mismatch");
  EXPECT_EQ(status_of([] { throw std::runtime_error("x"); }).error_code(),
            grpc::StatusCode::INTERNAL);
  EXPECT_EQ(status_of([] { throw 42; }).error_code(), grpc::StatusCode::INTERNAL);
}
