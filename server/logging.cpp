#include "server/logging.h"

#include <google/protobuf/stubs/logging.h>
#include <grpc/support/log.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "server/errors.h"

namespace kdeserve::server {
namespace {

std::atomic<bool> g_json{false};

// Marks an access-log payload that is already a JSON object of fields.
constexpr char kFieldsMark = '\x1e';

// One JSON object per line: {"time", "level", "logger", "msg"} or the access fields.
class JsonFormatter : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const std::string payload(msg.payload.data(), msg.payload.size());
    nlohmann::json line;
    if (!payload.empty() && payload[0] == kFieldsMark) {
      line = nlohmann::json::parse(payload.substr(1), nullptr, false);
      if (line.is_discarded() || !line.is_object()) line = {{"msg", payload.substr(1)}};
    } else {
      line["msg"] = payload;
    }
    line["time"] = iso_time(msg.time);
    line["level"] = std::string(spdlog::level::to_string_view(msg.level).data(),
                                spdlog::level::to_string_view(msg.level).size());
    const std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    dest.append(text.data(), text.data() + text.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }

 private:
  static std::string iso_time(spdlog::log_clock::time_point t) {
    const auto secs = std::chrono::time_point_cast<std::chrono::seconds>(t);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(t - secs).count();
    const std::time_t tt = spdlog::log_clock::to_time_t(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[40];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    char out[64];
    std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(ms));
    return out;
  }
};

// libprotobuf and gRPC write their own lines to stderr (protobuf's on a request it cannot
// parse, e.g. a string that is not UTF-8): routed into the logger, they keep its format, so a
// json log stays one JSON object per line.
void log_protobuf(google::protobuf::LogLevel level, const char* file, int line,
                  const std::string& message) {
  using google::protobuf::LogLevel;
  const auto lvl = level == LogLevel::LOGLEVEL_INFO      ? spdlog::level::info
                   : level == LogLevel::LOGLEVEL_WARNING ? spdlog::level::warn
                   : level == LogLevel::LOGLEVEL_ERROR   ? spdlog::level::err
                                                         : spdlog::level::critical;
  spdlog::log(lvl, "libprotobuf {}:{}: {}", file, line, bound_message(message));
}

void log_grpc(gpr_log_func_args* args) {
  const auto lvl = args->severity == GPR_LOG_SEVERITY_DEBUG  ? spdlog::level::debug
                   : args->severity == GPR_LOG_SEVERITY_INFO ? spdlog::level::info
                                                             : spdlog::level::err;
  spdlog::log(lvl, "grpc {}:{}: {}", args->file, args->line, bound_message(args->message));
}

}  // namespace

void setup_logging(const std::string& level, const std::string& format) {
  const auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    throw std::invalid_argument("unknown log level '" + level + "'");
  }
  if (format != "text" && format != "json") {
    throw std::invalid_argument("unknown log format '" + format + "' (text or json)");
  }
  spdlog::drop("kdeserve");  // idempotent: a second call replaces the logger
  auto logger = spdlog::stderr_logger_mt("kdeserve");
  spdlog::set_default_logger(logger);
  spdlog::set_level(lvl);
  g_json = format == "json";
  if (g_json) {
    spdlog::set_formatter(std::make_unique<JsonFormatter>());
  } else {
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
  }
  spdlog::flush_on(spdlog::level::info);
  google::protobuf::SetLogHandler(log_protobuf);
  gpr_set_log_function(log_grpc);
}

std::string format_access(const AccessRecord& r, bool json) {
  // Fields can carry what a client sent (the request id, the status message with its echo):
  // each is bounded, and in text lines quoted and escaped unless it is a plain token, so no
  // client can lengthen a line without bound, start a new line or forge a field.
  if (json) {
    const auto field = [](const std::string& v) { return bound_message(v, kMaxEchoBytes); };
    nlohmann::json j = {{"msg", "access"},
                        {"request_id", field(r.request_id)},
                        {"rpc", field(r.rpc)},
                        {"model", field(r.model)},
                        {"items", r.items},
                        {"attention", field(r.attention)},
                        {"code", field(r.code)},
                        {"latency_seconds", r.latency_seconds},
                        {"peer", field(r.peer)}};
    if (!r.message.empty()) j["error"] = bound_message(r.message);
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  const auto token = [](const std::string& v) -> std::string {
    if (v.empty()) return "-";
    const bool plain = v.size() <= kMaxEchoBytes && std::all_of(v.begin(), v.end(), [](char c) {
                         return c > ' ' && c < 127 && c != '\'' && c != '"' && c != '\\';
                       });
    return plain ? v : quote_client_string(v);
  };
  char latency[32];
  std::snprintf(latency, sizeof latency, "%.4f", r.latency_seconds);
  std::string line = "access request_id=" + token(r.request_id) + " rpc=" + token(r.rpc) +
                     " model=" + token(r.model) + " items=" + std::to_string(r.items) +
                     " attention=" + token(r.attention) + " code=" + token(r.code) +
                     " latency_s=" + latency + " peer=" + token(r.peer);
  if (!r.message.empty()) {
    line += " error=" + nlohmann::json(bound_message(r.message))
                            .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return line;
}

void log_access(const AccessRecord& record) {
  const bool json = g_json.load();
  const std::string line = format_access(record, json);
  if (json) {
    spdlog::info("{}{}", kFieldsMark, line);
  } else {
    spdlog::info("{}", line);
  }
}

}  // namespace kdeserve::server
