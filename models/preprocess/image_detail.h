#pragma once
// Internals shared by the image decoding sources (image_header.cpp, image_checks.cpp,
// jpeg_decoder.cpp, image.cpp); not part of the models API. Plain C++ (no OpenCV, no libjpeg).

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "models/preprocess/image.h"

namespace kdeserve::models::image_detail {

// Bounds-checked big/little-endian reads from the encoded bytes. Each returns false when the
// requested bytes are not all inside the buffer.
class ByteReader {
 public:
  explicit ByteReader(std::string_view bytes) : bytes_(bytes) {}
  size_t size() const { return bytes_.size(); }
  bool has(size_t offset, size_t count) const {
    return offset <= bytes_.size() && count <= bytes_.size() - offset;
  }
  uint8_t u8(size_t offset) const { return static_cast<uint8_t>(bytes_[offset]); }
  bool be16(size_t offset, uint32_t* out) const { return read(offset, 2, false, out); }
  bool be32(size_t offset, uint32_t* out) const { return read(offset, 4, false, out); }
  bool le16(size_t offset, uint32_t* out) const { return read(offset, 2, true, out); }
  bool le24(size_t offset, uint32_t* out) const { return read(offset, 3, true, out); }
  bool le32(size_t offset, uint32_t* out) const { return read(offset, 4, true, out); }
  // The offset of the first `byte` at or after `offset` (memchr), or size() when none.
  size_t find(uint8_t byte, size_t offset) const {
    const size_t at = bytes_.find(static_cast<char>(byte), offset);
    return at == std::string_view::npos ? bytes_.size() : at;
  }
  bool starts_with(size_t offset, std::string_view magic) const {
    return has(offset, magic.size()) && bytes_.substr(offset, magic.size()) == magic;
  }

 private:
  bool read(size_t offset, size_t count, bool little, uint32_t* out) const {
    if (!has(offset, count)) {
      return false;
    }
    uint32_t v = 0;
    for (size_t i = 0; i < count; ++i) {
      const uint32_t b = u8(offset + (little ? count - 1 - i : i));
      v = (v << 8) | b;
    }
    *out = v;
    return true;
  }
  std::string_view bytes_;
};

std::string hex_byte(uint8_t value);

constexpr uint8_t kJpegSos = 0xDA;
constexpr uint8_t kJpegEoi = 0xD9;

// JPEG markers without a length field: TEM, RST0..7, SOI, EOI.
inline bool jpeg_marker_is_standalone(uint8_t marker) {
  return marker == 0x01 || (marker >= 0xD0 && marker <= 0xD9);
}

// SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
inline bool jpeg_marker_is_sof(uint8_t marker) {
  return marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
}

// Reads the marker at `pos` (skipping 0xFF fill bytes); false at the end of the data or when no
// 0xFF starts there.
bool jpeg_next_marker(const ByteReader& r, size_t* pos, uint8_t* marker);

// The end of the entropy-coded data that starts at `pos`: the offset of the 0xFF of the first
// marker other than RST0..7 (0xFF 0x00 is a stuffed data byte), or r.size() when the data ends
// first.
size_t jpeg_entropy_end(const ByteReader& r, size_t pos);

struct JpegComponent {
  uint8_t id = 0;
  int64_t h = 1;  // sampling factors, 1..4
  int64_t v = 1;
};

// A JPEG frame header (SOF0, SOF1 or SOF2: the Huffman-coded 8-bit modes libjpeg decodes).
struct JpegFrame {
  uint8_t sof = 0;
  size_t end = 0;  // offset just past the SOF segment
  int64_t width = 0;
  int64_t height = 0;
  std::vector<JpegComponent> components;
  int64_t h_max = 1;
  int64_t v_max = 1;

  bool progressive() const { return sof == 0xC2; }
  // 8×8 blocks of component c: ceil(ceil(width · h / h_max) / 8) across (T.81 A.1.1), the
  // same down; libjpeg's width_in_blocks / height_in_blocks.
  int64_t blocks_across(size_t c) const;
  int64_t blocks_down(size_t c) const;
};

// Parses the first SOFn segment; throws c10::Error when there is none before the scans, it is
// cut short or malformed, or it is a mode libjpeg-turbo 2.1 cannot decode.
JpegFrame parse_jpeg_frame(const ByteReader& r);

// Throws c10::Error when width · height is above max_pixels (or max_pixels is not positive);
// `what` names the image in the message.
void check_pixel_count(int64_t width, int64_t height, int64_t max_pixels, const char* what);

// Throws c10::Error when `bytes` is above max_decoded_bytes (or that is not positive).
void check_decoded_bytes(int64_t bytes, int64_t max_decoded_bytes, const std::string& what);

// Decodes a JPEG whose header and data passed check_image() with libjpeg, straight into a uint8
// [H, W, 3] RGB tensor (jpeg_decoder.cpp). Throws c10::Error for libjpeg's errors and for its
// warnings that the data ended before the image.
at::Tensor decode_jpeg(std::string_view bytes, const ImageHeader& header);

}  // namespace kdeserve::models::image_detail
