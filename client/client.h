// Typed C++ client for the kdeserve.v1.Inference gRPC service and grpc.health.v1.Health.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "proto/status_code.h"
#include "kdeserve/v1/inference.grpc.pb.h"

namespace kdeserve::client {

namespace v1 = ::kdeserve::v1;
using ServingStatus = ::grpc::health::v1::HealthCheckResponse::ServingStatus;

/// 64 MiB: BigGAN-512 PNGs exceed gRPC's 4 MiB default receive limit after two images.
inline constexpr int kDefaultMaxReceiveMessageSize = 64 * 1024 * 1024;

/// How the client connects and how long each call may take.
struct ClientOptions {
  /// Per-call deadline; zero or negative means no deadline.
  std::chrono::milliseconds deadline{std::chrono::seconds(30)};
  /// Largest response accepted, in bytes (channel arg grpc.max_receive_message_length).
  int max_receive_message_size = kDefaultMaxReceiveMessageSize;
  /// When set, the channel uses TLS; the string holds PEM root certificates ("" → gRPC's
  /// default roots). When unset, the channel is plaintext.
  std::optional<std::string> tls_root_certs;
};

/// The name of a status code as gRPC spells it, e.g. "RESOURCE_EXHAUSTED".
using ::kdeserve::status_code_name;

/// What a status code from kdeserve means for the caller, in one sentence.
std::string describe_status_code(grpc::StatusCode code);

/// The outcome of a call: a gRPC code and the server's (or the library's) message.
struct Status {
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string message;

  bool ok() const { return code == grpc::StatusCode::OK; }
  /// "NOT_FOUND (the model ... does not exist): <message>"; "OK" when ok.
  std::string to_string() const;
  static Status from_grpc(const grpc::Status& status);
};

/// A value or the Status saying why there is none.
template <typename T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status status) : status_(std::move(status)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  const T& value() const { return *value_; }
  T& value() { return *value_; }
  const T& operator*() const { return *value_; }
  const T* operator->() const { return &*value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

/// One Generate item for a single class. seed unset → the server draws one (reported back);
/// truncation 0 → the server's default (0.4).
v1::GenerateItem make_generate_item(uint32_t class_id, std::optional<uint64_t> seed = std::nullopt,
                                    double truncation = 0.0);

/// Parses a mode name ("exact", "kdeformer", "performer", "reformer", "scatterbrain",
/// "hyperattention", "wildcat", "thinformer": the proto's ATTENTION_MODE_* values) or "default"
/// (case-insensitive); nullopt for anything else.
std::optional<v1::AttentionMode> parse_attention_mode(const std::string& text);
/// The mode's name as parse_attention_mode reads it, "default" for UNSPECIFIED, "mode N" for a
/// value this client does not know.
std::string attention_mode_name(v1::AttentionMode mode);
/// Every mode name the proto defines (UNSPECIFIED excluded), in wire order.
std::vector<std::string> attention_mode_names();

/// Typed wrapper over one channel. Thread-safe: each method makes one unary call.
class Client {
 public:
  explicit Client(const std::string& address, ClientOptions options = {});
  /// Uses an existing channel (tests, in-process servers); options.deadline still applies.
  Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options);

  /// Classifies encoded images (JPEG/PNG/BMP/WebP file bytes), one result per image in order.
  /// top_k 0 → the server's default (5).
  Result<v1::ClassifyResponse> classify(
      const std::string& model, const std::vector<std::string>& images, uint32_t top_k = 0,
      v1::AttentionMode attention = v1::ATTENTION_MODE_UNSPECIFIED) const;

  /// Generates one image per item, in order.
  Result<v1::GenerateResponse> generate(
      const std::string& model, const std::vector<v1::GenerateItem>& items,
      v1::ImageFormat format = v1::IMAGE_FORMAT_PNG,
      v1::AttentionMode attention = v1::ATTENTION_MODE_UNSPECIFIED) const;

  Result<std::vector<v1::ModelInfo>> list_models() const;
  Result<v1::ModelInfo> model_info(const std::string& name) const;

  /// grpc.health.v1 Check: "" is liveness, "readiness" turns SERVING once models are warm.
  Result<ServingStatus> health(const std::string& service = "") const;

  const ClientOptions& options() const { return options_; }

 private:
  void prepare(grpc::ClientContext& context) const;

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> inference_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace kdeserve::client
