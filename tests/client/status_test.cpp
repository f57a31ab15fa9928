// The status → message mapping and the CLI's exit codes.
#include <gtest/gtest.h>

#include <set>

#include "client/cli_args.h"
#include "client/client.h"

namespace kdeserve::client {
namespace {

const std::vector<grpc::StatusCode> kServerCodes = {
    grpc::StatusCode::INVALID_ARGUMENT,  grpc::StatusCode::NOT_FOUND,
    grpc::StatusCode::RESOURCE_EXHAUSTED, grpc::StatusCode::DEADLINE_EXCEEDED,
    grpc::StatusCode::UNAVAILABLE,       grpc::StatusCode::INTERNAL,
    grpc::StatusCode::CANCELLED,         grpc::StatusCode::UNIMPLEMENTED};

TEST(StatusMessage, EveryServerCodeHasItsOwnExplanation) {
  std::set<std::string> messages;
  for (auto code : kServerCodes) {
    std::string text = describe_status_code(code);
    EXPECT_GT(text.size(), 20u) << status_code_name(code);
    EXPECT_EQ(text.find("unexpected"), std::string::npos) << status_code_name(code);
    messages.insert(text);
  }
  EXPECT_EQ(messages.size(), kServerCodes.size());
}

TEST(StatusMessage, ExplanationsSayWhatToDo) {
  EXPECT_NE(describe_status_code(grpc::StatusCode::NOT_FOUND).find("model"), std::string::npos);
  EXPECT_NE(describe_status_code(grpc::StatusCode::RESOURCE_EXHAUSTED).find("overloaded"),
            std::string::npos);
  EXPECT_NE(describe_status_code(grpc::StatusCode::DEADLINE_EXCEEDED).find("--deadline"),
            std::string::npos);
  EXPECT_NE(describe_status_code(grpc::StatusCode::UNAVAILABLE).find("retry"),
            std::string::npos);
}

TEST(StatusMessage, NamesMatchGrpcSpelling) {
  EXPECT_EQ(status_code_name(grpc::StatusCode::OK), "OK");
  EXPECT_EQ(status_code_name(grpc::StatusCode::INVALID_ARGUMENT), "INVALID_ARGUMENT");
  EXPECT_EQ(status_code_name(grpc::StatusCode::RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(status_code_name(grpc::StatusCode::UNAVAILABLE), "UNAVAILABLE");
  EXPECT_EQ(status_code_name(static_cast<grpc::StatusCode>(99)), "CODE_99");
  EXPECT_NE(describe_status_code(static_cast<grpc::StatusCode>(99)).find("unexpected"),
            std::string::npos);
}

TEST(StatusMessage, ToStringCombinesCodeExplanationAndServerMessage) {
  Status status{grpc::StatusCode::NOT_FOUND, "unknown model 'vit'"};
  EXPECT_FALSE(status.ok());
  std::string text = status.to_string();
  EXPECT_EQ(text.rfind("NOT_FOUND (", 0), 0u) << text;
  EXPECT_NE(text.find(describe_status_code(grpc::StatusCode::NOT_FOUND)), std::string::npos);
  EXPECT_NE(text.find(": unknown model 'vit'"), std::string::npos);
  EXPECT_EQ(Status{}.to_string(), "OK");
  EXPECT_TRUE(Status{}.ok());
  Status from = Status::from_grpc(grpc::Status(grpc::StatusCode::INTERNAL, "cuda oom"));
  EXPECT_EQ(from.code, grpc::StatusCode::INTERNAL);
  EXPECT_EQ(from.message, "cuda oom");
}

TEST(ExitCodes, DistinctPerCodeAndApartFromLocalCodes) {
  std::set<int> codes = {kExitOk, kExitNotServing, kExitUsage, kExitLocalError};
  for (auto code : kServerCodes) {
    int exit_code = exit_code_for(code);
    EXPECT_TRUE(codes.insert(exit_code).second) << status_code_name(code);
    EXPECT_LT(exit_code, 126);  // shells reserve 126+
  }
  EXPECT_EQ(exit_code_for(grpc::StatusCode::OK), 0);
  EXPECT_EQ(exit_code_for(grpc::StatusCode::NOT_FOUND), 15);
  EXPECT_EQ(exit_code_for(grpc::StatusCode::UNAVAILABLE), 24);
}

TEST(AttentionMode, ParsesAndNames) {
  EXPECT_EQ(parse_attention_mode("exact"), kdeserve::v1::ATTENTION_MODE_EXACT);
  EXPECT_EQ(parse_attention_mode("KDEformer"), kdeserve::v1::ATTENTION_MODE_KDEFORMER);
  EXPECT_EQ(parse_attention_mode("default"), kdeserve::v1::ATTENTION_MODE_UNSPECIFIED);
  EXPECT_FALSE(parse_attention_mode("linear").has_value());
  EXPECT_EQ(attention_mode_name(kdeserve::v1::ATTENTION_MODE_KDEFORMER), "kdeformer");
}

}  // namespace
}  // namespace kdeserve::client
