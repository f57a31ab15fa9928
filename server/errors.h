#pragma once
/// The server's error types, shared by the gRPC side (validation, server/status.h maps them to
/// codes) and the engine (server/engine/): plain C++, no gRPC and no LibTorch header.

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

namespace kdeserve::server {

/// Longest echo of one client-supplied string (a model name, a request id, …) in a status
/// message or a log field, in bytes with its quotes and escapes. A longer one is cut and its
/// length added: `'abc...' (10240 bytes)`.
constexpr std::size_t kMaxEchoBytes = 128;

/// Longest status message the server sends, in bytes. Why: the message travels in the
/// grpc-message trailer, an HTTP/2 header, percent-encoded (3 bytes per byte outside printable
/// ASCII). A client refuses a header block over its metadata limit (8 KiB by default in gRPC),
/// and gRPC 1.51 then fails every call on that connection, the ones in flight included. 1 KiB
/// (≤ 3 KiB encoded) leaves room for the other trailers and what proxies add.
constexpr std::size_t kMaxStatusMessageBytes = 1024;

namespace detail {

inline std::string hex_escape(unsigned char c) {
  static const char kDigits[] = "0123456789abcdef";
  return {'\\', 'x', kDigits[c >> 4], kDigits[c & 15]};
}

// The length of the well-formed UTF-8 sequence at text[i], 0 when there is none (a stray
// continuation byte, an overlong form, a surrogate, above U+10FFFF, or cut short).
inline std::size_t utf8_length(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[i + k]); };
  const unsigned char c = byte(0);
  const std::size_t n = c < 0x80   ? 1
                        : c < 0xc2 ? 0
                        : c < 0xe0 ? 2
                        : c < 0xf0 ? 3
                        : c < 0xf5 ? 4
                                   : 0;
  if (n <= 1) return n;
  if (i + n > text.size()) return 0;
  const unsigned char lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
  const unsigned char hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
  if (byte(1) < lo || byte(1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k) {
    if ((byte(k) & 0xc0) != 0x80) return 0;
  }
  return n;
}

}  // namespace detail

/// A client-supplied string made safe to echo into a message or a log line: in single quotes,
/// printable ASCII only (`\\`, `\'`, `\n`, `\r`, `\t`, and `\xNN` for every other byte, so
/// control characters, non-ASCII, invalid UTF-8 and BiDi overrides all show as escapes), at
/// most `max_bytes` (≥ 8) long, plus ` (N bytes)` after a cut one.
inline std::string quote_client_string(std::string_view text,
                                       std::size_t max_bytes = kMaxEchoBytes) {
  const std::size_t limit = max_bytes < 8 ? 8 : max_bytes;
  std::string out = "'";
  std::size_t fits_cut = 1;  // out's length up to which "...'" still fits in limit
  for (const char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    std::string piece;
    if (c == '\\' || c == '\'') {
      piece = {'\\', ch};
    } else if (c == '\n' || c == '\r' || c == '\t') {
      piece = {'\\', c == '\n' ? 'n' : c == '\r' ? 'r' : 't'};
    } else if (c < 0x20 || c > 0x7e) {
      piece = detail::hex_escape(c);
    } else {
      piece = ch;
    }
    if (out.size() + piece.size() + 4 <= limit) fits_cut = out.size() + piece.size();
    out += piece;
    if (out.size() + 1 > limit) {
      out.resize(fits_cut);
      return out + "...' (" + std::to_string(text.size()) + " bytes)";
    }
  }
  return out + "'";
}

/// A status message bounded for the wire, the safety net under every message the server sends
/// (RequestError applies it, and so does server/status.h): valid UTF-8 (a byte that is not
/// becomes `\xNN`), no control character but newline and tab (`\xNN`), at most `max_bytes`
/// long; a longer one is cut between characters and ends with `... [N bytes]`, N its length.
inline std::string bound_message(std::string_view message,
                                 std::size_t max_bytes = kMaxStatusMessageBytes) {
  const std::string marker = "... [" + std::to_string(message.size()) + " bytes]";
  std::string out;
  std::size_t fits_cut = 0;  // out's length up to which the marker still fits in max_bytes
  for (std::size_t i = 0; i < message.size();) {
    const unsigned char c = static_cast<unsigned char>(message[i]);
    std::size_t n = detail::utf8_length(message, i);
    std::string piece;
    if (n == 0 || (n == 1 && ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f))) {
      piece = detail::hex_escape(c);
      n = 1;
    } else {
      piece.assign(message.substr(i, n));
    }
    if (out.size() + piece.size() + marker.size() <= max_bytes) {
      fits_cut = out.size() + piece.size();
    }
    out += piece;
    i += n;
    if (out.size() > max_bytes) {
      out.resize(fits_cut);
      if (out.size() + marker.size() <= max_bytes) out += marker;
      return out;
    }
  }
  return out;
}

/// What went wrong with a request, independent of gRPC.
enum class ErrorKind {
  kInvalidArgument,    ///< bad input: shape, size, class id, NaN, too many items, mode not allowed
  kNotFound,           ///< unknown model
  kResourceExhausted,  ///< queue full
  kDeadlineExceeded,   ///< the client deadline passed while queued
  kCancelled,          ///< the client cancelled while queued
  kUnavailable,        ///< model not ready, server draining or shutting down
  kInternal,           ///< model / LibTorch failure (logged)
  kUnimplemented,      ///< an RPC of another protocol this server does not offer
};

/// A request error with its kind; thrown by validation, caught by the service. Its message is
/// what the client is told, bounded by bound_message; a client-supplied string in it goes
/// through quote_client_string first.
class RequestError : public std::runtime_error {
 public:
  RequestError(ErrorKind kind, const std::string& message)
      : std::runtime_error(bound_message(message)), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

/// A LibTorch failure (c10::Error and its subclasses, from the models or from tensor math),
/// translated at the engine boundary so that nothing outside server/engine/ sees a LibTorch
/// type. what() is c10::Error::what() (with LibTorch's context or backtrace: logged);
/// brief() is what_without_backtrace() (what clients are told).
class LibTorchError : public std::runtime_error {
 public:
  LibTorchError(const std::string& what, const std::string& brief)
      : std::runtime_error(what), brief_(brief) {}
  const std::string& brief() const { return brief_; }

 private:
  std::string brief_;
};

/// Shorthands for throwing a RequestError.
[[noreturn]] inline void throw_invalid(const std::string& message) {
  throw RequestError(ErrorKind::kInvalidArgument, message);
}
[[noreturn]] inline void throw_not_found(const std::string& message) {
  throw RequestError(ErrorKind::kNotFound, message);
}
[[noreturn]] inline void throw_unavailable(const std::string& message) {
  throw RequestError(ErrorKind::kUnavailable, message);
}
[[noreturn]] inline void throw_unimplemented(const std::string& message) {
  throw RequestError(ErrorKind::kUnimplemented, message);
}

}  // namespace kdeserve::server
