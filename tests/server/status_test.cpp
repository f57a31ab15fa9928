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
  EXPECT_EQ(ks::to_grpc_code(ks::ErrorKind::kUnimplemented), grpc::StatusCode::UNIMPLEMENTED);
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

// Client-supplied strings echoed into messages: quoted, printable ASCII, bounded.
TEST(ServerStatus, QuoteClientStringEscapesAndBounds) {
  EXPECT_EQ(ks::quote_client_string("t2t_vit"), "'t2t_vit'");
  EXPECT_EQ(ks::quote_client_string(std::string("a\0b\n\r\t'\\\x1b\x7f", 10)),
            "'a\\x00b\\n\\r\\t\\'\\\\\\x1b\\x7f'");
  // Non-ASCII (valid or not) shows as bytes: e-acute, a BiDi override, a stray byte.
  EXPECT_EQ(ks::quote_client_string("\xc3\xa9\xe2\x80\xae\xff"),
            "'\\xc3\\xa9\\xe2\\x80\\xae\\xff'");
  // Exactly the limit fits; one byte more is cut, with the original length.
  EXPECT_EQ(ks::quote_client_string(std::string(ks::kMaxEchoBytes - 2, 'n')).size(),
            ks::kMaxEchoBytes);
  const std::string cut = ks::quote_client_string(std::string(ks::kMaxEchoBytes - 1, 'n'));
  EXPECT_EQ(cut, "'" + std::string(ks::kMaxEchoBytes - 5, 'n') + "...' (127 bytes)");
  for (const std::size_t n : {std::size_t{10240}, std::size_t{1} << 20}) {
    const std::string q = ks::quote_client_string(std::string(n, 'x'));
    const std::string tail = "...' (" + std::to_string(n) + " bytes)";
    ASSERT_GT(q.size(), tail.size());
    EXPECT_LE(q.size() - (tail.size() - 4), ks::kMaxEchoBytes) << q;
    EXPECT_EQ(q.substr(q.size() - tail.size()), tail);
  }
  // A cut never splits an escape: 200 control bytes leave whole \x01 sequences.
  const std::string controls = ks::quote_client_string(std::string(200, '\x01'), 64);
  const std::string body = controls.substr(1, controls.find("...'") - 1);
  EXPECT_EQ(body.size() % 4, 0u) << controls;
  EXPECT_LE(body.size() + 5, 64u);
  for (char c : controls) EXPECT_TRUE(c >= 32 && c < 127) << controls;
}

// The last net under every status message: valid UTF-8, no control characters, bounded.
TEST(ServerStatus, BoundMessageKeepsUtf8AndCuts) {
  EXPECT_EQ(ks::bound_message("plain\nwith\ttabs"), "plain\nwith\ttabs");
  EXPECT_EQ(ks::bound_message("caf\xc3\xa9 \xf0\x9f\x98\x80"), "caf\xc3\xa9 \xf0\x9f\x98\x80");
  EXPECT_EQ(ks::bound_message(std::string("a\0b\r\x1b\x7f", 6)), "a\\x00b\\x0d\\x1b\\x7f");
  // Not UTF-8: a stray byte, an overlong '/', a surrogate, a sequence cut short.
  EXPECT_EQ(ks::bound_message("\xff|\xc0\xaf|\xed\xa0\x80|\xe2\x82"),
            "\\xff|\\xc0\\xaf|\\xed\\xa0\\x80|\\xe2\\x82");
  const std::string huge = ks::bound_message(std::string(1 << 20, 'm'));
  EXPECT_LE(huge.size(), ks::kMaxStatusMessageBytes);
  const std::string huge_marker = "... [1048576 bytes]";
  EXPECT_EQ(huge.substr(huge.size() - huge_marker.size()), huge_marker);
  EXPECT_EQ(huge.substr(0, 900), std::string(900, 'm'));
  // 2-byte characters: the cut falls between two of them.
  std::string accents;
  for (int i = 0; i < 1000; ++i) accents += "\xc3\xa9";
  const std::string cut = ks::bound_message(accents);
  const std::string marker = "... [2000 bytes]";
  ASSERT_EQ(cut.substr(cut.size() - marker.size()), marker);
  EXPECT_EQ((cut.size() - marker.size()) % 2, 0u);
  EXPECT_LE(cut.size(), ks::kMaxStatusMessageBytes);
  EXPECT_EQ(ks::bound_message("exactly", 7), "exactly");
  EXPECT_EQ(ks::bound_message("too long", 7), "");  // not even the marker fits
}

TEST(ServerStatus, EveryStatusMessageIsBounded) {
  const std::string huge(1 << 20, 'x');
  EXPECT_LE(std::string(ks::RequestError(ks::ErrorKind::kNotFound, huge).what()).size(),
            ks::kMaxStatusMessageBytes);
  EXPECT_LE(ks::to_status(ks::ErrorKind::kInvalidArgument, huge).error_message().size(),
            ks::kMaxStatusMessageBytes);
  EXPECT_EQ(ks::make_status(grpc::StatusCode::INTERNAL, "a\x01").error_message(), "a\\x01");
  auto status_of = [](auto thrower) {
    try {
      thrower();
    } catch (...) {
      return ks::status_from_exception(std::current_exception(), "test");
    }
    return grpc::Status::OK;
  };
  const std::string long_error(1100, 'e');  // these two are logged as well
  for (const grpc::Status& s :
       {status_of([&] { ks::throw_not_found("unknown model " + huge); }),
        status_of([&] { throw ks::LibTorchError(long_error, long_error); }),
        status_of([&] { throw std::runtime_error(long_error); })}) {
    EXPECT_NE(s.error_code(), grpc::StatusCode::OK);
    EXPECT_LE(s.error_message().size(), ks::kMaxStatusMessageBytes);
    EXPECT_NE(s.error_message().find(" bytes]"), std::string::npos) << s.error_message();
  }
}
