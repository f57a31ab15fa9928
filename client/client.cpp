#include "client/client.h"

#include <algorithm>
#include <cctype>

namespace kdeserve::client {


std::string describe_status_code(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "success";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "the request was rejected as invalid (bad image, shape, class id, top-k, truncation, "
             "empty input, batch too large or attention mode not allowed); fix the request";
    case grpc::StatusCode::NOT_FOUND:
      return "the model or health service name is unknown to the server; list models with "
             "'kdeserve-cli models'";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "the server is overloaded (queue full) or a message exceeded the size limit; retry "
             "later, send fewer images per request or raise the message size limit";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "the deadline passed before the server answered; raise --deadline or send less work "
             "per request";
    case grpc::StatusCode::UNAVAILABLE:
      return "the server is unreachable, still loading models, or draining for shutdown; check the "
             "address and retry";
    case grpc::StatusCode::INTERNAL:
      return "the server failed while running the model (see its logs); the request may be fine";
    case grpc::StatusCode::CANCELLED:
      return "the call was cancelled before it completed";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "the server does not implement this method (wrong service or an older server "
             "version)";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "the server requires credentials the client did not present";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "the caller is not allowed to make this call";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "the server is not in a state to run this call";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "a value in the request is out of range";
    default:
      return "unexpected gRPC status " + status_code_name(code);
  }
}

std::string Status::to_string() const {
  if (ok()) return "OK";
  std::string text = status_code_name(code) + " (" + describe_status_code(code) + ")";
  if (!message.empty()) text += ": " + message;
  return text;
}

Status Status::from_grpc(const grpc::Status& status) {
  return Status{status.error_code(), status.error_message()};
}

v1::GenerateItem make_generate_item(uint32_t class_id, std::optional<uint64_t> seed,
                                    double truncation) {
  v1::GenerateItem item;
  item.set_class_id(class_id);
  if (seed) item.set_seed(*seed);
  item.set_truncation(truncation);
  return item;
}

namespace {
constexpr const char* kModePrefix = "ATTENTION_MODE_";
}  // namespace

// The names come from the proto enum (ATTENTION_MODE_PERFORMER → "performer"), so a mode added
// to the proto is accepted without a second list here.
std::optional<v1::AttentionMode> parse_attention_mode(const std::string& text) {
  std::string upper = text;
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  if (upper == "DEFAULT" || upper.empty()) return v1::ATTENTION_MODE_UNSPECIFIED;
  if (upper == "UNSPECIFIED") return std::nullopt;
  v1::AttentionMode mode = v1::ATTENTION_MODE_UNSPECIFIED;
  if (!v1::AttentionMode_Parse(kModePrefix + upper, &mode)) return std::nullopt;
  return mode;
}

std::string attention_mode_name(v1::AttentionMode mode) {
  if (mode == v1::ATTENTION_MODE_UNSPECIFIED) return "default";
  const std::string& name = v1::AttentionMode_Name(mode);
  if (name.rfind(kModePrefix, 0) != 0) return "mode " + std::to_string(static_cast<int>(mode));
  std::string lower = name.substr(std::string(kModePrefix).size());
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower;
}

std::vector<std::string> attention_mode_names() {
  std::vector<std::string> names;
  const auto* descriptor = v1::AttentionMode_descriptor();
  for (int i = 0; i < descriptor->value_count(); ++i) {
    const auto mode = static_cast<v1::AttentionMode>(descriptor->value(i)->number());
    if (mode != v1::ATTENTION_MODE_UNSPECIFIED) names.push_back(attention_mode_name(mode));
  }
  return names;
}

namespace {

std::shared_ptr<grpc::Channel> make_channel(const std::string& address,
                                            const ClientOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_message_size);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.tls_root_certs) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = *options.tls_root_certs;
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  return grpc::CreateCustomChannel(address, credentials, args);
}

}  // namespace

Client::Client(const std::string& address, ClientOptions options)
    : Client(make_channel(address, options), options) {}

Client::Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      inference_(v1::Inference::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

void Client::prepare(grpc::ClientContext& context) const {
  if (options_.deadline.count() > 0) {
    context.set_deadline(std::chrono::system_clock::now() + options_.deadline);
  }
}

Result<v1::ClassifyResponse> Client::classify(const std::string& model,
                                              const std::vector<std::string>& images,
                                              uint32_t top_k, v1::AttentionMode attention) const {
  v1::ClassifyRequest request;
  request.set_model(model);
  request.set_top_k(top_k);
  request.set_attention(attention);
  for (const auto& bytes : images) request.add_images()->set_encoded(bytes);
  grpc::ClientContext context;
  prepare(context);
  v1::ClassifyResponse response;
  grpc::Status status = inference_->Classify(&context, request, &response);
  if (!status.ok()) return Status::from_grpc(status);
  if (response.results_size() != static_cast<int>(images.size())) {
    return Status{grpc::StatusCode::INTERNAL,
                  "server returned " + std::to_string(response.results_size()) +
                      " results for " + std::to_string(images.size()) + " images"};
  }
  return response;
}

Result<v1::GenerateResponse> Client::generate(const std::string& model,
                                              const std::vector<v1::GenerateItem>& items,
                                              v1::ImageFormat format,
                                              v1::AttentionMode attention) const {
  v1::GenerateRequest request;
  request.set_model(model);
  request.set_format(format);
  request.set_attention(attention);
  for (const auto& item : items) *request.add_items() = item;
  grpc::ClientContext context;
  prepare(context);
  v1::GenerateResponse response;
  grpc::Status status = inference_->Generate(&context, request, &response);
  if (!status.ok()) return Status::from_grpc(status);
  if (response.images_size() != static_cast<int>(items.size())) {
    return Status{grpc::StatusCode::INTERNAL,
                  "server returned " + std::to_string(response.images_size()) +
                      " images for " + std::to_string(items.size()) + " items"};
  }
  return response;
}

Result<std::vector<v1::ModelInfo>> Client::list_models() const {
  grpc::ClientContext context;
  prepare(context);
  v1::ListModelsResponse response;
  grpc::Status status = inference_->ListModels(&context, v1::ListModelsRequest(), &response);
  if (!status.ok()) return Status::from_grpc(status);
  return std::vector<v1::ModelInfo>(response.models().begin(), response.models().end());
}

Result<v1::ModelInfo> Client::model_info(const std::string& name) const {
  v1::GetModelInfoRequest request;
  request.set_model(name);
  grpc::ClientContext context;
  prepare(context);
  v1::ModelInfo response;
  grpc::Status status = inference_->GetModelInfo(&context, request, &response);
  if (!status.ok()) return Status::from_grpc(status);
  return response;
}

Result<ServingStatus> Client::health(const std::string& service) const {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::ClientContext context;
  prepare(context);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = health_->Check(&context, request, &response);
  if (!status.ok()) return Status::from_grpc(status);
  return response.status();
}

}  // namespace kdeserve::client
