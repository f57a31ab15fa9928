// kdeserve-cli's command line: parsing (testable without a server) and exit codes.
#pragma once

#include <grpcpp/support/status_code_enum.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kdeserve/v1/inference.pb.h"

namespace kdeserve::client {

enum class Command { kHelp, kClassify, kGenerate, kModels, kHealth };

/// Everything kdeserve-cli was asked to do.
struct CliArgs {
  Command command = Command::kHelp;
  // Global.
  std::string address = "localhost:8500";
  double deadline_seconds = 60.0;  // 0 → no deadline
  int max_receive_mib = 64;
  bool tls = false;
  std::string tls_ca_file;  // PEM roots; implies tls
  // classify / generate / models.
  std::string model;  // empty → the first hosted model of the right kind (models: list all)
  kdeserve::v1::AttentionMode attention = kdeserve::v1::ATTENTION_MODE_UNSPECIFIED;
  // classify.
  uint32_t top_k = 0;  // 0 → server default (5)
  uint32_t batch = 8;  // images per request
  std::vector<std::string> paths;
  // generate.
  std::vector<uint32_t> classes;
  uint32_t count = 1;            // images per class
  std::optional<uint64_t> seed;  // item i gets seed + i; unset → the server draws seeds
  double truncation = 0.0;       // 0 → server default (0.4)
  std::string out_dir = ".";
  // health.
  std::string service;  // "" liveness, "readiness"
};

/// Parsed arguments, or the reason they are not valid (exit kExitUsage).
struct ParseResult {
  std::optional<CliArgs> args;
  std::string error;
};

/// Parses argv[1..] (without the program name). Options may come before or after the command;
/// both "--name value" and "--name=value" work.
ParseResult parse_cli_args(const std::vector<std::string>& argv);

/// The --help text.
std::string cli_usage();

/// Exit codes: 0 success, 1 health not SERVING, 2 usage, 3 local file error,
/// 10 + gRPC code for a failed call (e.g. 13 INVALID_ARGUMENT, 15 NOT_FOUND,
/// 18 RESOURCE_EXHAUSTED, 24 UNAVAILABLE).
inline constexpr int kExitOk = 0;
inline constexpr int kExitNotServing = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitLocalError = 3;
inline constexpr int kExitRpcBase = 10;

/// The exit code for a failed call with this gRPC code.
int exit_code_for(grpc::StatusCode code);

}  // namespace kdeserve::client
