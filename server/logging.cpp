#include "server/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <nlohmann/json.hpp>
#include <stdexcept>

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
}

std::string format_access(const AccessRecord& r, bool json) {
  if (json) {
    nlohmann::json j = {{"msg", "access"},          {"request_id", r.request_id},
                        {"rpc", r.rpc},             {"model", r.model},
                        {"items", r.items},         {"attention", r.attention},
                        {"code", r.code},           {"latency_seconds", r.latency_seconds},
                        {"peer", r.peer}};
    if (!r.message.empty()) j["error"] = r.message;
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  char latency[32];
  std::snprintf(latency, sizeof latency, "%.4f", r.latency_seconds);
  std::string line = "access request_id=" + r.request_id + " rpc=" + r.rpc +
                     " model=" + (r.model.empty() ? "-" : r.model) +
                     " items=" + std::to_string(r.items) +
                     " attention=" + (r.attention.empty() ? "-" : r.attention) +
                     " code=" + r.code + " latency_s=" + latency + " peer=" + r.peer;
  if (!r.message.empty()) line += " error=" + nlohmann::json(r.message).dump();
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
