#include "server/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <system_error>

#include "server/engine/engine.h"

namespace kdeserve::server {
namespace {

// Rejects keys of `node` outside `allowed`, naming the path.
void check_keys(const YAML::Node& node, const std::string& path,
                const std::set<std::string>& allowed) {
  if (!node.IsMap()) throw ConfigError(path + ": expected a mapping");
  for (const auto& kv : node) {
    // YAML allows lists and mappings as keys ("? [a, b]: 1"); as<std::string>() would throw
    // YAML::BadConversion for them.
    if (!kv.first.IsScalar() && !kv.first.IsNull()) {
      throw ConfigError(path + ": a key must be a string, got " +
                        (kv.first.IsSequence() ? "a list" : "a mapping"));
    }
    const std::string key = kv.first.as<std::string>();
    if (!allowed.count(key)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      throw ConfigError(path + ": unknown key '" + key + "' (allowed: " + list + ")");
    }
  }
}

template <typename T>
T get(const YAML::Node& node, const std::string& path) {
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    throw ConfigError(path + ": invalid value '" + YAML::Dump(node) + "'");
  }
}

AttentionMode parse_mode(const YAML::Node& node, const std::string& path) {
  try {
    return attention_mode_from_string(get<std::string>(node, path));
  } catch (const ConfigError& e) {
    throw ConfigError(path + ": " + e.what());
  }
}

ModelConfig parse_model(const YAML::Node& node, const std::string& path) {
  check_keys(node, path,
             {"name", "weights", "init_seed", "device", "default_attention", "allowed_attention",
              "kdeformer_settings", "batching", "max_image_pixels", "max_image_decoded_bytes",
              "shadow"});
  ModelConfig m;
  if (!node["name"]) throw ConfigError(path + ".name: required");
  m.name = get<std::string>(node["name"], path + ".name");
  if (node["weights"] && !node["weights"].IsNull()) {
    const auto w = get<std::string>(node["weights"], path + ".weights");
    if (!w.empty()) m.weights = w;
  }
  if (node["init_seed"]) m.init_seed = get<uint64_t>(node["init_seed"], path + ".init_seed");
  if (node["device"]) m.device = get<std::string>(node["device"], path + ".device");
  if (node["kdeformer_settings"]) {
    const std::string p = path + ".kdeformer_settings";
    const auto v = get<std::string>(node["kdeformer_settings"], p);
    if (v == "tuned") {
      m.kdeformer_settings = KdeformerSettings::kTuned;
    } else if (v == "paper") {
      m.kdeformer_settings = KdeformerSettings::kPaper;
    } else {
      throw ConfigError(p + ": '" + v + "' is not one of tuned, paper");
    }
  }
  if (node["default_attention"]) {
    m.default_attention = parse_mode(node["default_attention"], path + ".default_attention");
  }
  if (node["allowed_attention"]) {
    const auto& list = node["allowed_attention"];
    if (!list.IsSequence()) throw ConfigError(path + ".allowed_attention: expected a list");
    m.allowed_attention.clear();
    for (size_t i = 0; i < list.size(); ++i) {
      m.allowed_attention.push_back(
          parse_mode(list[i], path + ".allowed_attention[" + std::to_string(i) + "]"));
    }
  }
  if (node["max_image_pixels"]) {
    m.max_image_pixels = get<int64_t>(node["max_image_pixels"], path + ".max_image_pixels");
  }
  if (node["max_image_decoded_bytes"]) {
    m.max_image_decoded_bytes =
        get<int64_t>(node["max_image_decoded_bytes"], path + ".max_image_decoded_bytes");
  }
  if (const auto& sh = node["shadow"]) {
    const std::string sp = path + ".shadow";
    check_keys(sh, sp, {"fraction", "max_compute_share"});
    if (sh["fraction"]) m.shadow.fraction = get<double>(sh["fraction"], sp + ".fraction");
    if (sh["max_compute_share"]) {
      m.shadow.max_compute_share = get<double>(sh["max_compute_share"], sp + ".max_compute_share");
    }
  }
  if (const auto& b = node["batching"]) {
    const std::string bp = path + ".batching";
    check_keys(b, bp,
               {"max_batch_size", "max_queue_delay_ms", "max_queue_length", "max_queue_bytes",
                "max_items_per_request"});
    if (b["max_batch_size"]) {
      m.batching.max_batch_size = get<int64_t>(b["max_batch_size"], bp + ".max_batch_size");
    }
    if (b["max_queue_delay_ms"]) {
      m.batching.max_queue_delay_ms =
          get<int64_t>(b["max_queue_delay_ms"], bp + ".max_queue_delay_ms");
    }
    if (b["max_queue_length"]) {
      m.batching.max_queue_length = get<int64_t>(b["max_queue_length"], bp + ".max_queue_length");
    }
    if (b["max_queue_bytes"]) {
      m.batching.max_queue_bytes = get<int64_t>(b["max_queue_bytes"], bp + ".max_queue_bytes");
    }
    if (b["max_items_per_request"]) {
      m.batching.max_items_per_request =
          get<int64_t>(b["max_items_per_request"], bp + ".max_items_per_request");
    }
  }
  return m;
}

bool valid_host_port(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 >= address.size()) return false;
  const std::string port = address.substr(colon + 1);
  if (!std::all_of(port.begin(), port.end(), ::isdigit) || port.size() > 5) return false;
  return std::stoi(port) <= 65535;
}

// The error_code overload: the throwing one raises std::filesystem::filesystem_error for a path
// the OS refuses to look up (too long, a parent without search permission), which is just a file
// the server cannot use.
bool is_regular_file(const std::string& path) {
  std::error_code error;
  return std::filesystem::is_regular_file(path, error);
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("cannot read config file " + path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

std::string to_string(KdeformerSettings settings) {
  return settings == KdeformerSettings::kPaper ? "paper" : "tuned";
}

std::string to_string(AttentionMode mode) {
  switch (mode) {
    case AttentionMode::kExact:
      return "exact";
    case AttentionMode::kKdeformer:
      return "kdeformer";
    case AttentionMode::kPerformer:
      return "performer";
    case AttentionMode::kReformer:
      return "reformer";
    case AttentionMode::kScatterBrain:
      return "scatterbrain";
    case AttentionMode::kHyperAttention:
      return "hyperattention";
    case AttentionMode::kWildCat:
      return "wildcat";
    case AttentionMode::kThinformer:
      return "thinformer";
  }
  return "unknown";
}

std::string join_modes(const std::vector<AttentionMode>& modes) {
  std::string list;
  for (AttentionMode m : modes) list += (list.empty() ? "" : ", ") + to_string(m);
  return list;
}

AttentionMode attention_mode_from_string(const std::string& name) {
  for (AttentionMode m : kAllAttentionModes) {
    if (name == to_string(m)) return m;
  }
  const std::vector<AttentionMode> all(std::begin(kAllAttentionModes),
                                       std::end(kAllAttentionModes));
  throw ConfigError("unknown attention mode '" + name + "' (expected one of " + join_modes(all) +
                    ")");
}

const ModelConfig* ServerConfig::find_model(const std::string& name) const {
  for (const auto& m : models) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

ServerConfig parse_config_yaml(const std::string& yaml, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    throw ConfigError(origin + ": YAML error: " + e.what());
  }
  ServerConfig c;
  if (root.IsNull()) throw ConfigError(origin + ": empty configuration");
  check_keys(root, origin, {"server", "logging", "models", "metrics"});
  if (const auto& s = root["server"]) {
    const std::string p = origin + ": server";
    check_keys(s, p,
               {"listen", "metrics_listen", "threads", "decode_threads", "max_message_bytes",
                "drain_delay_seconds", "shutdown_grace_seconds", "tls"});
    if (s["listen"]) c.listen = get<std::string>(s["listen"], p + ".listen");
    if (s["metrics_listen"]) {
      c.metrics_listen = get<std::string>(s["metrics_listen"], p + ".metrics_listen");
    }
    if (s["threads"]) c.threads = get<int64_t>(s["threads"], p + ".threads");
    if (s["decode_threads"]) {
      c.decode_threads = get<int64_t>(s["decode_threads"], p + ".decode_threads");
    }
    if (s["max_message_bytes"]) {
      c.max_message_bytes = get<int64_t>(s["max_message_bytes"], p + ".max_message_bytes");
    }
    if (s["drain_delay_seconds"]) {
      c.drain_delay_seconds = get<double>(s["drain_delay_seconds"], p + ".drain_delay_seconds");
    }
    if (s["shutdown_grace_seconds"]) {
      c.shutdown_grace_seconds =
          get<double>(s["shutdown_grace_seconds"], p + ".shutdown_grace_seconds");
    }
    if (const auto& t = s["tls"]) {
      if (!t.IsNull()) {
        check_keys(t, p + ".tls", {"cert_file", "key_file"});
        if (t["cert_file"]) c.tls_cert_file = get<std::string>(t["cert_file"], p + ".tls.cert_file");
        if (t["key_file"]) c.tls_key_file = get<std::string>(t["key_file"], p + ".tls.key_file");
      }
    }
  }
  if (const auto& l = root["logging"]) {
    const std::string p = origin + ": logging";
    check_keys(l, p, {"level", "format"});
    if (l["level"]) c.log_level = get<std::string>(l["level"], p + ".level");
    if (l["format"]) c.log_format = get<std::string>(l["format"], p + ".format");
  }
  if (const auto& m = root["metrics"]) {
    const std::string p = origin + ": metrics";
    check_keys(m, p, {"http_threads", "request_timeout_ms"});
    if (m["http_threads"]) {
      c.metrics.http_threads = get<int64_t>(m["http_threads"], p + ".http_threads");
    }
    if (m["request_timeout_ms"]) {
      c.metrics.request_timeout_ms =
          get<int64_t>(m["request_timeout_ms"], p + ".request_timeout_ms");
    }
  }
  if (const auto& ms = root["models"]) {
    if (!ms.IsSequence()) throw ConfigError(origin + ": models: expected a list");
    for (size_t i = 0; i < ms.size(); ++i) {
      c.models.push_back(parse_model(ms[i], origin + ": models[" + std::to_string(i) + "]"));
    }
  }
  return c;
}

std::string usage() {
  return "usage: kdeserve-server [options]\n"
         "  --config FILE            YAML configuration (default: the built-in\n"
         "                           deploy/config/server.yaml)\n"
         "  --listen HOST:PORT       gRPC address (server.listen)\n"
         "  --metrics-listen HOST:PORT  Prometheus /metrics address (server.metrics_listen)\n"
         "  --threads N              LibTorch threads, 0 = all cores (server.threads)\n"
         "  --log-level LEVEL        trace|debug|info|warn|error|critical|off\n"
         "  --log-format text|json\n"
         "  --model-weights NAME=FILE  safetensors weights of a configured model\n"
         "  --print-config           print the effective configuration and exit\n"
         "  --help\n";
}

CommandLine parse_command_line(int argc, const char* const* argv) {
  CommandLine cl;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    std::optional<std::string> inline_value;
    if (const auto eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    auto value = [&]() -> std::string {
      if (inline_value) return *inline_value;
      if (i + 1 >= argc) throw ConfigError(flag + " needs a value");
      return argv[++i];
    };
    auto integer = [&](const std::string& v) -> int64_t {
      try {
        size_t pos = 0;
        const int64_t n = std::stoll(v, &pos);
        if (pos != v.size()) throw std::invalid_argument(v);
        return n;
      } catch (const std::exception&) {
        throw ConfigError(flag + ": not an integer: '" + v + "'");
      }
    };
    if (flag == "--help" || flag == "-h") cl.help = true;
    else if (flag == "--print-config") cl.print_config = true;
    else if (flag == "--config") cl.config_file = value();
    else if (flag == "--listen") cl.listen = value();
    else if (flag == "--metrics-listen") cl.metrics_listen = value();
    else if (flag == "--threads") cl.threads = integer(value());
    else if (flag == "--log-level") cl.log_level = value();
    else if (flag == "--log-format") cl.log_format = value();
    else if (flag == "--model-weights") {
      const std::string v = value();
      const auto eq = v.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == v.size()) {
        throw ConfigError("--model-weights expects NAME=FILE, got '" + v + "'");
      }
      cl.model_weights.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else {
      throw ConfigError("unknown option '" + flag + "' (see --help)");
    }
  }
  return cl;
}

void apply_overrides(ServerConfig& c, const CommandLine& cl) {
  if (cl.listen) c.listen = *cl.listen;
  if (cl.metrics_listen) c.metrics_listen = *cl.metrics_listen;
  if (cl.threads) c.threads = *cl.threads;
  if (cl.log_level) c.log_level = *cl.log_level;
  if (cl.log_format) c.log_format = *cl.log_format;
  for (const auto& [name, file] : cl.model_weights) {
    // A lambda cannot capture a structured binding before C++20 (clang refuses it).
    const std::string& model = name;
    auto it = std::find_if(c.models.begin(), c.models.end(),
                           [&](const ModelConfig& m) { return m.name == model; });
    if (it == c.models.end()) {
      throw ConfigError("--model-weights " + name + "=...: the configuration hosts no model '" +
                        name + "'");
    }
    it->weights = file;
  }
}

ServerConfig load_config(const CommandLine& cl) {
  ServerConfig c = cl.config_file
                       ? parse_config_yaml(read_text_file(*cl.config_file), *cl.config_file)
                       : parse_config_yaml(embedded_default_config(), "<built-in server.yaml>");
  apply_overrides(c, cl);
  validate(c);
  return c;
}

void validate(const ServerConfig& c) {
  std::vector<std::string> errors;
  auto fail = [&](const std::string& e) { errors.push_back(e); };
  if (!valid_host_port(c.listen)) fail("server.listen: expected HOST:PORT, got '" + c.listen + "'");
  if (!valid_host_port(c.metrics_listen)) {
    fail("server.metrics_listen: expected HOST:PORT, got '" + c.metrics_listen + "'");
  }
  if (c.threads < 0 || c.threads > 1024) fail("server.threads: must be in [0, 1024] (0 = all cores)");
  if (c.decode_threads < 1 || c.decode_threads > 256) {
    fail("server.decode_threads: must be in [1, 256]");
  }
  if (c.max_message_bytes < 1024 * 1024 || c.max_message_bytes > INT32_MAX) {
    fail("server.max_message_bytes: must be in [1 MiB, 2^31 - 1]");
  }
  if (!std::isfinite(c.shutdown_grace_seconds) || c.shutdown_grace_seconds < 0 ||
      c.shutdown_grace_seconds > 3600) {
    fail("server.shutdown_grace_seconds: must be in [0, 3600]");
  }
  if (!std::isfinite(c.drain_delay_seconds) || c.drain_delay_seconds < 0 ||
      c.drain_delay_seconds > 600) {
    fail("server.drain_delay_seconds: must be in [0, 600]");
  }
  if (c.tls_cert_file.has_value() != c.tls_key_file.has_value()) {
    fail("server.tls: give both cert_file and key_file, or neither");
  }
  for (const auto* f : {&c.tls_cert_file, &c.tls_key_file}) {
    if (*f && !is_regular_file(**f)) fail("server.tls: no such file " + **f);
  }
  static const std::set<std::string> levels = {"trace", "debug", "info", "warn",
                                               "error", "critical", "off"};
  if (!levels.count(c.log_level)) {
    fail("logging.level: '" + c.log_level + "' is not one of trace|debug|info|warn|error|critical|off");
  }
  if (c.log_format != "text" && c.log_format != "json") {
    fail("logging.format: '" + c.log_format + "' is not text or json");
  }
  if (c.metrics.http_threads < 1 || c.metrics.http_threads > 256) {
    fail("metrics.http_threads: must be in [1, 256]");
  }
  if (c.metrics.request_timeout_ms < 100 || c.metrics.request_timeout_ms > 60'000) {
    fail("metrics.request_timeout_ms: must be in [100, 60000]");
  }
  if (c.models.empty()) fail("models: at least one model is required");
  const auto names = registered_model_names();
  std::set<std::string> seen;
  for (size_t i = 0; i < c.models.size(); ++i) {
    const ModelConfig& m = c.models[i];
    const std::string p = "models[" + std::to_string(i) + "] (" + m.name + ")";
    if (std::find(names.begin(), names.end(), m.name) == names.end()) {
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
      fail(p + ".name: not a registered model (registered: " + list + ")");
    }
    if (!seen.insert(m.name).second) fail(p + ".name: hosted twice");
    if (m.weights && !is_regular_file(*m.weights)) {
      fail(p + ".weights: no such file " + *m.weights);
    }
    if (m.device != "cpu") {
      const bool cuda_syntax = m.device == "cuda" || (m.device.rfind("cuda:", 0) == 0 &&
                               m.device.size() > 5 &&
                               std::all_of(m.device.begin() + 5, m.device.end(), ::isdigit));
      if (!cuda_syntax) {
        fail(p + ".device: '" + m.device + "' is not cpu, cuda or cuda:N");
      } else if (!cuda_available()) {
        fail(p + ".device: '" + m.device + "' requested, but " + cuda_unavailable_reason() +
             "; or use device: cpu");
      } else if (m.device.size() > 5 &&
                 std::stoll(m.device.substr(5)) >= cuda_device_count()) {
        fail(p + ".device: '" + m.device + "' but only " + std::to_string(cuda_device_count()) +
             " CUDA device(s) are visible");
      }
    }
    if (m.allowed_attention.empty()) fail(p + ".allowed_attention: must not be empty");
    for (size_t a = 0; a < m.allowed_attention.size(); ++a) {
      if (std::find(m.allowed_attention.begin(), m.allowed_attention.begin() + a,
                    m.allowed_attention[a]) != m.allowed_attention.begin() + a) {
        fail(p + ".allowed_attention: " + to_string(m.allowed_attention[a]) + " listed twice");
      }
    }
    if (std::find(m.allowed_attention.begin(), m.allowed_attention.end(), m.default_attention) ==
        m.allowed_attention.end()) {
      fail(p + ".allowed_attention: must contain default_attention (" +
           to_string(m.default_attention) + ")");
    }
    const BatchingConfig& b = m.batching;
    if (b.max_batch_size < 1 || b.max_batch_size > 1024) {
      fail(p + ".batching.max_batch_size: must be in [1, 1024]");
    }
    if (b.max_queue_delay_ms < 0 || b.max_queue_delay_ms > 60'000) {
      fail(p + ".batching.max_queue_delay_ms: must be in [0, 60000]");
    }
    if (b.max_queue_length < 1 || b.max_queue_length > 1'000'000) {
      fail(p + ".batching.max_queue_length: must be in [1, 1000000]");
    }
    // An empty queue must admit the largest message a client may send.
    if (b.max_queue_bytes < c.max_message_bytes || b.max_queue_bytes > (int64_t{1} << 40)) {
      fail(p + ".batching.max_queue_bytes: must be in [server.max_message_bytes = " +
           std::to_string(c.max_message_bytes) + ", 2^40]");
    }
    if (b.max_items_per_request < 1 || b.max_items_per_request > b.max_batch_size) {
      fail(p + ".batching.max_items_per_request: must be in [1, max_batch_size = " +
           std::to_string(b.max_batch_size) + "]");
    }
    if (m.max_image_pixels < 1 || m.max_image_pixels > 400'000'000) {
      fail(p + ".max_image_pixels: must be in [1, 400000000]");
    }
    if (!(m.shadow.fraction >= 0 && m.shadow.fraction <= 1)) {
      fail(p + ".shadow.fraction: must be in [0, 1]");
    }
    if (!(m.shadow.max_compute_share > 0 && m.shadow.max_compute_share <= 1)) {
      fail(p + ".shadow.max_compute_share: must be in (0, 1]");
    }
    // 400 MP at 11 bytes per pixel (16-bit RGBA) is the most the pixel limit can ask for.
    if (m.max_image_decoded_bytes < 1 || m.max_image_decoded_bytes > 4'400'000'000) {
      fail(p + ".max_image_decoded_bytes: must be in [1, 4400000000]");
    }
  }
  if (!errors.empty()) {
    std::string msg = "invalid configuration:";
    for (const auto& e : errors) msg += "\n  " + e;
    throw ConfigError(msg);
  }
}

std::string to_yaml(const ServerConfig& c) {
  YAML::Emitter out;
  out.SetDoublePrecision(15);  // 0.05, not 0.050000000000000003
  out << YAML::BeginMap;
  out << YAML::Key << "server" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "listen" << YAML::Value << c.listen;
  out << YAML::Key << "metrics_listen" << YAML::Value << c.metrics_listen;
  out << YAML::Key << "threads" << YAML::Value << c.threads;
  out << YAML::Key << "decode_threads" << YAML::Value << c.decode_threads;
  out << YAML::Key << "max_message_bytes" << YAML::Value << c.max_message_bytes;
  out << YAML::Key << "drain_delay_seconds" << YAML::Value << c.drain_delay_seconds;
  out << YAML::Key << "shutdown_grace_seconds" << YAML::Value << c.shutdown_grace_seconds;
  if (c.tls_cert_file) {
    out << YAML::Key << "tls" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "cert_file" << YAML::Value << *c.tls_cert_file;
    out << YAML::Key << "key_file" << YAML::Value << *c.tls_key_file;
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  out << YAML::Key << "logging" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "level" << YAML::Value << c.log_level;
  out << YAML::Key << "format" << YAML::Value << c.log_format << YAML::EndMap;
  out << YAML::Key << "metrics" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "http_threads" << YAML::Value << c.metrics.http_threads;
  out << YAML::Key << "request_timeout_ms" << YAML::Value << c.metrics.request_timeout_ms;
  out << YAML::EndMap;
  out << YAML::Key << "models" << YAML::Value << YAML::BeginSeq;
  for (const auto& m : c.models) {
    out << YAML::BeginMap;
    out << YAML::Key << "name" << YAML::Value << m.name;
    if (m.weights) out << YAML::Key << "weights" << YAML::Value << *m.weights;
    out << YAML::Key << "init_seed" << YAML::Value << m.init_seed;
    out << YAML::Key << "device" << YAML::Value << m.device;
    out << YAML::Key << "default_attention" << YAML::Value << to_string(m.default_attention);
    out << YAML::Key << "kdeformer_settings" << YAML::Value << to_string(m.kdeformer_settings);
    out << YAML::Key << "allowed_attention" << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (auto a : m.allowed_attention) out << to_string(a);
    out << YAML::EndSeq;
    out << YAML::Key << "batching" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "max_batch_size" << YAML::Value << m.batching.max_batch_size;
    out << YAML::Key << "max_queue_delay_ms" << YAML::Value << m.batching.max_queue_delay_ms;
    out << YAML::Key << "max_queue_length" << YAML::Value << m.batching.max_queue_length;
    out << YAML::Key << "max_queue_bytes" << YAML::Value << m.batching.max_queue_bytes;
    out << YAML::Key << "max_items_per_request" << YAML::Value
        << m.batching.max_items_per_request;
    out << YAML::EndMap;
    out << YAML::Key << "max_image_pixels" << YAML::Value << m.max_image_pixels;
    out << YAML::Key << "max_image_decoded_bytes" << YAML::Value << m.max_image_decoded_bytes;
    out << YAML::Key << "shadow" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "fraction" << YAML::Value << m.shadow.fraction;
    out << YAML::Key << "max_compute_share" << YAML::Value << m.shadow.max_compute_share;
    out << YAML::EndMap;
    out << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap;
  return out.c_str();
}

}  // namespace kdeserve::server
