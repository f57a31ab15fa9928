#pragma once
/// Logging of the server: spdlog with a text or JSON line format, and the access log.

#include <cstdint>
#include <string>

namespace kdeserve::server {

/// Configures spdlog's default logger: level (trace … off) and format "text" or "json" (one JSON
/// object per line: time, level, msg, plus the access-log fields for access lines), and routes
/// libprotobuf's and gRPC's own log lines into it. Throws std::invalid_argument for an unknown
/// level or format.
void setup_logging(const std::string& level, const std::string& format);

/// One finished request.
struct AccessRecord {
  std::string request_id;
  std::string rpc;
  std::string model;
  int64_t items = 0;
  std::string attention;
  std::string code;
  double latency_seconds = 0;
  std::string peer;
  std::string message;  ///< the status message when not OK
};

/// The access-log line (text: key=value pairs; json: the record's fields as a JSON object).
/// Fields are bounded (kMaxEchoBytes, the message kMaxStatusMessageBytes; server/errors.h); in
/// text a field that is not a plain token is quoted and escaped (quote_client_string), so a
/// line stays one line whatever the client sent.
std::string format_access(const AccessRecord& record, bool json);

/// Logs one access line at info level with the configured format.
void log_access(const AccessRecord& record);

}  // namespace kdeserve::server
