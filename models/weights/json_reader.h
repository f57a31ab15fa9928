#pragma once
// Internal to models/weights: the UTF-8 checks and the bounded recursive-descent JSON reader of
// the safetensors header (models/weights/safetensors.cpp). Not part of the public API.

#include <c10/util/Exception.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace kdeserve::models::detail {

/// Deepest nesting of arrays/objects the reader accepts.
constexpr size_t kMaxJsonDepth = 128;

/// Offset of the first byte that is not part of valid UTF-8 (overlong forms, surrogates and
/// code points above U+10FFFF are invalid), or npos.
inline size_t find_invalid_utf8(std::string_view text) {
  constexpr uint32_t kMinimum[] = {0, 0, 0x80, 0x800, 0x10000};  // By sequence length.
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const size_t length = lead < 0x80             ? 1
                          : (lead & 0xE0) == 0xC0 ? 2
                          : (lead & 0xF0) == 0xE0 ? 3
                          : (lead & 0xF8) == 0xF0 ? 4
                                                  : 0;
    if (length == 0 || text.size() - i < length) return i;
    if (length == 1) {
      ++i;
      continue;
    }
    uint32_t code = lead & (0x7F >> length);
    for (size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return i;
      code = (code << 6) | (next & 0x3F);
    }
    if (code < kMinimum[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return i;
    i += length;
  }
  return std::string_view::npos;
}

inline void append_utf8(std::string& out, uint32_t code) {
  constexpr uint32_t kLead[] = {0x00, 0xC0, 0xE0, 0xF0};  // By number of continuation bytes.
  const int extra = code < 0x80 ? 0 : code < 0x800 ? 1 : code < 0x10000 ? 2 : 3;
  out += static_cast<char>(kLead[extra] | (code >> (6 * extra)));
  for (int k = extra - 1; k >= 0; --k) out += static_cast<char>(0x80 | ((code >> (6 * k)) & 0x3F));
}

/// 'text', for naming keys and values in error messages.
inline std::string in_quotes(const std::string& text) { return "'" + text + "'"; }

/// JSON string literal (with quotes) of UTF-8 `text`.
inline std::string json_quote(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buffer[8];
      std::snprintf(buffer, sizeof(buffer), "\\u%04x", static_cast<unsigned>(c));
      out += buffer;
    } else {
      out += c;  // UTF-8 passes through.
    }
  }
  return out + "\"";
}

/// A cursor over the JSON header with the primitives of a recursive-descent parser. Every
/// primitive skips leading whitespace. Errors name the file and the byte offset in the header.
class JsonReader {
 public:
  JsonReader(std::string_view text, const std::string& path) : text_(text), path_(path) {}

  /// Checks the syntax of the whole document (one value, then only whitespace) and rewinds.
  void validate_document() {
    skip_value(0);
    skip_whitespace();
    if (pos_ != text_.size()) fail("unexpected characters after the top-level value" + found());
    pos_ = 0;
  }

  /// The next non-whitespace character, or '\0' at the end.
  char peek() {
    skip_whitespace();
    return pos_ < text_.size() ? text_[pos_] : '\0';
  }

  bool consume(char c) {
    if (peek() != c) return false;
    ++pos_;
    return true;
  }

  void expect(char c) {
    if (!consume(c)) fail(std::string("expected '") + c + "'" + found());
  }

  std::string read_string() {
    if (peek() != '"') fail("expected a string" + found());
    ++pos_;
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) fail("unterminated string");
      const char c = text_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) {
        --pos_;
        fail("unescaped control character in a string");
      }
      if (c != '\\') {
        out += c;  // The header was checked to be valid UTF-8.
        continue;
      }
      if (pos_ >= text_.size()) fail("unterminated string");
      constexpr std::string_view kEscapes = "\"\\/bfnrt", kMeanings = "\"\\/\b\f\n\r\t";
      const char e = text_[pos_++];
      if (const size_t k = kEscapes.find(e); k != std::string_view::npos) {
        out += kMeanings[k];
        continue;
      }
      if (e != 'u') {
        pos_ -= 2;
        fail("invalid escape sequence in a string");
      }
      uint32_t code = read_hex4();
      if (code >= 0xDC00 && code <= 0xDFFF) fail("unpaired low surrogate in a \\u escape");
      if (code >= 0xD800 && code <= 0xDBFF) {
        if (text_.substr(pos_, 2) != "\\u") fail("unpaired high surrogate in a \\u escape");
        pos_ += 2;
        const uint32_t low = read_hex4();
        if (low < 0xDC00 || low > 0xDFFF) fail("unpaired high surrogate in a \\u escape");
        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
      }
      append_utf8(out, code);
    }
  }

  /// The literal of a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
  std::string_view read_number() {
    skip_whitespace();
    const size_t start = pos_;
    skip_one_of("-");
    if (!skip_one_of("0") && !skip_digits()) fail("invalid number: digits expected");
    if (skip_one_of(".") && !skip_digits()) fail("invalid number: digits expected after '.'");
    if (skip_one_of("eE")) {
      skip_one_of("+-");
      if (!skip_digits()) fail("invalid number: digits expected in the exponent");
    }
    return text_.substr(start, pos_ - start);
  }

  /// Checks and skips any JSON value, nested at most kMaxJsonDepth levels.
  void skip_value(size_t depth) {
    if (depth > kMaxJsonDepth) fail("values nested deeper than 128 levels");
    const char c = peek();
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++pos_;
      if (consume(close)) return;
      do {
        if (c == '{') {
          read_string();
          expect(':');
        }
        skip_value(depth + 1);
      } while (consume(','));
      expect(close);
    } else if (c == '"') {
      read_string();
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      read_number();
    } else if (!skip_literal("true") && !skip_literal("false") && !skip_literal("null")) {
      fail("expected a value" + found());
    }
  }

  /// "a string", "an object", ... for the value at the cursor (for error messages).
  std::string kind_of_next() {
    constexpr std::string_view kFirst = "{[\"tfn";
    constexpr const char* kKinds[] = {"an object", "an array",  "a string",
                                      "a boolean", "a boolean", "null"};
    const size_t k = kFirst.find(peek());  // '\0' at the end is not in kFirst.
    return k == std::string_view::npos ? "a number" : kKinds[k];
  }

  [[noreturn]] void fail(const std::string& what) const {
    TORCH_CHECK(false, "safetensors: ", path_, ": invalid JSON header at byte ", pos_, ": ", what);
  }

 private:
  void skip_whitespace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool skip_one_of(std::string_view chars) {
    if (pos_ >= text_.size() || chars.find(text_[pos_]) == std::string_view::npos) return false;
    ++pos_;
    return true;
  }

  bool skip_digits() {
    const size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
    return pos_ > start;
  }

  bool skip_literal(std::string_view literal) {
    if (text_.substr(pos_, literal.size()) != literal) return false;
    pos_ += literal.size();
    return true;
  }

  uint32_t read_hex4() {
    uint32_t code = 0;
    for (int i = 0; i < 4; ++i, ++pos_) {
      const char h = pos_ < text_.size() ? text_[pos_] : '\0';
      const int digit = h >= '0' && h <= '9'   ? h - '0'
                        : h >= 'a' && h <= 'f' ? h - 'a' + 10
                        : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                               : -1;
      if (digit < 0) fail("invalid \\u escape: 4 hex digits expected");
      code = code * 16 + static_cast<uint32_t>(digit);
    }
    return code;
  }

  std::string found() const {
    if (pos_ >= text_.size()) return " but the header ended";
    const auto c = static_cast<unsigned char>(text_[pos_]);
    if (c >= 0x20 && c < 0x7F) return std::string(" but found '") + text_[pos_] + "'";
    return " but found byte " + std::to_string(c);
  }

  std::string_view text_;
  const std::string& path_;
  size_t pos_ = 0;
};

}  // namespace kdeserve::models::detail
