#pragma once
/// The server's configuration: a YAML file (deploy/config/server.yaml is the default, compiled
/// into the binary) plus command-line overrides, validated once at start-up.

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace kdeserve::server {

/// A configuration or command-line error; the message says which key and why.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Attention mode of a request or a model default: the attention method of the model's plan
/// for it (models::Model::plan_for; one mode per attention::Method, same order and names).
enum class AttentionMode {
  kExact,      ///< exact attention in every layer group
  kKdeformer,  ///< KDEformer where the paper approximates, exact elsewhere
  kPerformer,  ///< the peers, each with the paper's settings per layer group (peers.md)
  kReformer,
  kScatterBrain,
  kHyperAttention,
  kWildCat,
  kThinformer,
};

/// What the kdeformer mode runs on a model.
enum class KdeformerSettings {
  kTuned,  ///< the model's default plan: the budget chooser's far-field settings (models/)
  kPaper,  ///< the paper's settings: sampled residual, its b and m (reproductions, A/B runs)
};

/// "tuned" / "paper".
std::string to_string(KdeformerSettings settings);

/// Every mode, in declaration order.
inline constexpr AttentionMode kAllAttentionModes[] = {
    AttentionMode::kExact,    AttentionMode::kKdeformer,    AttentionMode::kPerformer,
    AttentionMode::kReformer, AttentionMode::kScatterBrain, AttentionMode::kHyperAttention,
    AttentionMode::kWildCat,  AttentionMode::kThinformer};

/// "exact" / "kdeformer" / "performer" / "reformer" / "scatterbrain" / "hyperattention" /
/// "wildcat" / "thinformer": attention::to_string of the mode's method.
std::string to_string(AttentionMode mode);
/// Parses the names above; throws ConfigError naming them otherwise.
AttentionMode attention_mode_from_string(const std::string& name);
/// "exact, kdeformer, …": the names of `modes`, for messages.
std::string join_modes(const std::vector<AttentionMode>& modes);

/// Dynamic batching of one model.
struct BatchingConfig {
  /// Items (images) in one model forward; ≥ 1.
  int64_t max_batch_size = 8;
  /// How long the oldest queued request may wait for the batch to fill.
  int64_t max_queue_delay_ms = 5;
  /// Requests admitted and not yet computed (being decoded or queued); a request beyond it gets
  /// RESOURCE_EXHAUSTED.
  int64_t max_queue_length = 64;
  /// Bytes those requests may hold: a Classify holds its message until its images are decoded,
  /// then only the model's input crops. At least server.max_message_bytes. A request that
  /// would exceed it gets RESOURCE_EXHAUSTED.
  int64_t max_queue_bytes = 256LL * 1024 * 1024;
  /// Items one request may carry; ≤ max_batch_size.
  int64_t max_items_per_request = 8;
};

/// The shadow check of one model (server/shadow.h): after the responses of a batch that ran an
/// approximate method are sent, a share of such batches is recomputed with exact attention on
/// the compute thread, when nothing is queued, and the approximation's error is recorded.
struct ShadowConfig {
  /// Share of approximate batches to check, in [0, 1]; 0: off. Batches are picked evenly
  /// (every 1/fraction-th), not at random.
  double fraction = 0.0;
  /// Most compute time the checks may take, as a share of the wall time since the model was
  /// loaded, in (0, 1]. A picked batch beyond it is skipped (reason "budget").
  double max_compute_share = 0.05;
};

/// One hosted model.
struct ModelConfig {
  /// Registry name (models/registry.h), e.g. "t2t_vit_t_24", "biggan-deep-128".
  std::string name;
  /// Converted safetensors weights; unset → seeded random weights (a loud WARNING at start-up).
  std::optional<std::string> weights;
  /// Seed of the random initialisation when there are no weights.
  uint64_t init_seed = 0;
  /// "cpu" or "cuda:N".
  std::string device = "cpu";
  AttentionMode default_attention = AttentionMode::kKdeformer;
  /// `kdeformer_settings`: which KDEformer settings the kdeformer mode runs.
  KdeformerSettings kdeformer_settings = KdeformerSettings::kTuned;
  /// Modes a request may ask for; always contains default_attention. Each is warmed up at
  /// start-up; a request for another one is INVALID_ARGUMENT.
  std::vector<AttentionMode> allowed_attention = {AttentionMode::kExact,
                                                  AttentionMode::kKdeformer};
  BatchingConfig batching;
  /// Largest width · height of an input image (classifiers), checked before decoding. 40 MP
  /// covers 8K frames (33 MP) and the photos of most cameras and phones (12–24 MP by default);
  /// a classifier sees a 224-pixel crop of it either way.
  int64_t max_image_pixels = 40'000'000;
  /// Largest bytes of image buffers decoding one input image may hold at once (decoder output,
  /// decoder work buffers, the RGB copy: models/preprocess/image.h ImageHeader::decoded_bytes),
  /// checked before decoding. The default admits every 8-bit RGB layout at max_image_pixels'
  /// default, the costliest being a progressive 4:4:4 JPEG (9 bytes per pixel); 16-bit RGBA
  /// (11 bytes per pixel) fits up to 33 MP. Raise it with max_image_pixels.
  int64_t max_image_decoded_bytes = 364'000'000;
  ShadowConfig shadow;
};

/// The /metrics HTTP server (prometheus-cpp's Exposer over civetweb): the `metrics:` block.
/// civetweb serves one connection per worker thread, and a worker waits up to
/// request_timeout_ms for a request's headers: a connection that sends nothing (or half a
/// request) holds a worker that long. Keep-alive is off, so a worker is free after each scrape.
struct MetricsConfig {
  /// Worker threads: concurrent connections served; further ones wait in civetweb's queue.
  /// Why 16: Prometheus (an HA pair) and a person with curl need 1–3; the rest absorbs stray
  /// or slow connections. Each costs ~100 KiB of stack plus the process's static TLS.
  int64_t http_threads = 16;
  /// How long a connection may take to deliver its request headers (and a response write may
  /// block) before civetweb closes it, ms. A scrape sends its request at once; 2 s is ample
  /// even across a congested network, and bounds how long a stale connection holds a worker.
  int64_t request_timeout_ms = 2000;
};

/// The whole server.
struct ServerConfig {
  /// gRPC listen address, host:port.
  std::string listen = "0.0.0.0:8500";
  /// Prometheus /metrics listen address, host:port.
  std::string metrics_listen = "0.0.0.0:8502";
  /// LibTorch intra-op threads; 0 → all hardware threads.
  int64_t threads = 0;
  /// Threads decoding admitted Classify images (off gRPC's threads, so health checks and
  /// admission stay fast under any decode load).
  int64_t decode_threads = 2;
  /// Largest gRPC message received or sent, bytes.
  int64_t max_message_bytes = 64LL * 1024 * 1024;
  /// After SIGTERM: seconds to keep serving with readiness NOT_SERVING (endpoints update).
  double drain_delay_seconds = 0.0;
  /// After the drain delay: seconds in-flight calls get to finish before they are cancelled.
  double shutdown_grace_seconds = 10.0;
  /// Optional TLS: both or neither.
  std::optional<std::string> tls_cert_file, tls_key_file;
  /// trace, debug, info, warn, error, critical, off.
  std::string log_level = "info";
  /// "text" or "json".
  std::string log_format = "text";
  std::vector<ModelConfig> models;
  /// The /metrics HTTP server's workers and timeout (its address is metrics_listen).
  MetricsConfig metrics;

  /// The model named `name`, or nullptr.
  const ModelConfig* find_model(const std::string& name) const;
};

/// deploy/config/server.yaml as compiled into the binary.
const std::string& embedded_default_config();

/// Parses YAML text (`origin` names it in errors) without validating. Unknown keys are errors.
ServerConfig parse_config_yaml(const std::string& yaml, const std::string& origin);

/// Parsed command line: the config file and the overrides.
struct CommandLine {
  std::optional<std::string> config_file;
  std::optional<std::string> listen, metrics_listen, log_level, log_format;
  std::optional<int64_t> threads;
  /// --model-weights NAME=FILE, in order.
  std::vector<std::pair<std::string, std::string>> model_weights;
  bool help = false;
  bool print_config = false;
};

/// Parses argv (argv[0] skipped). Throws ConfigError for unknown options or missing values.
CommandLine parse_command_line(int argc, const char* const* argv);

/// Usage text for --help.
std::string usage();

/// Loads the config file (or the embedded default), applies the overrides and validates.
ServerConfig load_config(const CommandLine& cl);

/// Applies command-line overrides to `config`. Throws ConfigError for --model-weights of a model
/// the config does not host.
void apply_overrides(ServerConfig& config, const CommandLine& cl);

/// Checks every range and cross-field rule (registry names, devices, batching limits, TLS files).
/// Throws ConfigError with every problem found, one per line.
void validate(const ServerConfig& config);

/// The effective configuration as YAML (for --print-config and the start-up log).
std::string to_yaml(const ServerConfig& config);

}  // namespace kdeserve::server
