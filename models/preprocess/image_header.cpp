// read_image_header(): format, declared size and decoded layout of an encoded image, and the
// bytes decoding it will hold (ImageHeader::decoded_bytes), from its header alone.
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>

#include "models/preprocess/image.h"
#include "models/preprocess/image_detail.h"

namespace kdeserve::models {
namespace image_detail {

std::string hex_byte(uint8_t value) {
  constexpr char kDigits[] = "0123456789ABCDEF";
  return std::string("0x") + kDigits[value >> 4] + kDigits[value & 0xF];
}

bool jpeg_next_marker(const ByteReader& r, size_t* pos, uint8_t* marker) {
  if (!r.has(*pos, 1) || r.u8(*pos) != 0xFF) {
    return false;
  }
  while (r.has(*pos, 1) && r.u8(*pos) == 0xFF) {
    ++*pos;
  }
  if (!r.has(*pos, 1)) {
    return false;
  }
  *marker = r.u8(*pos);
  ++*pos;
  return true;
}

size_t jpeg_entropy_end(const ByteReader& r, size_t pos) {
  while (true) {
    pos = r.find(0xFF, pos);
    if (!r.has(pos, 2)) {
      return r.size();
    }
    const uint8_t next = r.u8(pos + 1);
    if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) {
      pos += 2;
    } else if (next == 0xFF) {
      ++pos;  // a fill byte before a marker
    } else {
      return pos;
    }
  }
}

int64_t JpegFrame::blocks_across(size_t c) const {
  const int64_t samples = (width * components[c].h + h_max - 1) / h_max;
  return (samples + 7) / 8;
}

int64_t JpegFrame::blocks_down(size_t c) const {
  const int64_t samples = (height * components[c].v + v_max - 1) / v_max;
  return (samples + 7) / 8;
}

JpegFrame parse_jpeg_frame(const ByteReader& r) {
  size_t pos = 2;
  while (true) {
    uint8_t marker = 0;
    TORCH_CHECK(jpeg_next_marker(r, &pos, &marker),
                "JPEG is truncated or malformed: no frame header (SOF) before byte ", pos);
    if (jpeg_marker_is_standalone(marker)) {
      TORCH_CHECK(marker != kJpegEoi, "JPEG has no frame header (SOF) before its end marker");
      continue;
    }
    uint32_t length = 0;
    TORCH_CHECK(r.be16(pos, &length) && length >= 2 && r.has(pos, length),
                "JPEG is truncated: segment ", hex_byte(marker), " at byte ", pos,
                " runs past the end of the data");
    TORCH_CHECK(marker != kJpegSos, "JPEG has no frame header (SOF) before its scan data");
    if (!jpeg_marker_is_sof(marker)) {
      pos += length;
      continue;
    }
    // libjpeg-turbo 2.1 decodes the Huffman-coded DCT modes at 8 bits. Arithmetic coding is
    // refused although libjpeg decodes it: its data has no useful lower bound (an adaptive
    // binary coder spends a small fraction of a bit per decision), and a scan cut short cannot
    // be told from a complete one (libjpeg's jdarith.c: "hitting a marker while processing the
    // compressed data segment is legal in arithmetic coding", it decodes zeros to the end).
    const uint8_t n = marker & 0x0F;
    TORCH_CHECK(n != 3 && n != 7 && n != 11 && n != 15, "lossless JPEG (SOF", int{n},
                ") is not supported");
    TORCH_CHECK(n != 5 && n != 6 && n != 13 && n != 14, "hierarchical JPEG (SOF", int{n},
                ") is not supported");
    TORCH_CHECK(n < 8, "arithmetic-coded JPEG (SOF", int{n},
                ") is not supported: truncated arithmetic-coded data cannot be detected");
    JpegFrame frame;
    frame.sof = marker;
    frame.end = pos + length;
    uint32_t height = 0;
    uint32_t width = 0;
    TORCH_CHECK(length >= 8 && r.be16(pos + 3, &height) && r.be16(pos + 5, &width),
                "JPEG frame header is too short");
    TORCH_CHECK(r.u8(pos + 2) == 8, "JPEG sample precision ", int{r.u8(pos + 2)},
                " is not supported (8 bits only)");
    TORCH_CHECK(width > 0 && height > 0, "JPEG declares a size of ", width, "x", height,
                " (a height set later by a DNL marker is not supported)");
    frame.width = width;
    frame.height = height;
    const size_t count = r.u8(pos + 7);
    TORCH_CHECK(count >= 1 && count <= 4 && length >= 8 + 3 * count,
                "JPEG frame header is malformed: ", count, " components in ", length, " bytes");
    for (size_t c = 0; c < count; ++c) {
      JpegComponent comp;
      comp.id = r.u8(pos + 8 + 3 * c);
      comp.h = r.u8(pos + 9 + 3 * c) >> 4;
      comp.v = r.u8(pos + 9 + 3 * c) & 0x0F;
      TORCH_CHECK(comp.h >= 1 && comp.h <= 4 && comp.v >= 1 && comp.v <= 4,
                  "JPEG frame header has invalid sampling factors ", comp.h, "x", comp.v);
      frame.h_max = std::max(frame.h_max, comp.h);
      frame.v_max = std::max(frame.v_max, comp.v);
      frame.components.push_back(comp);
    }
    return frame;
  }
}

}  // namespace image_detail

namespace {

using image_detail::ByteReader;

// a · b, or INT64_MAX when that overflows (both non-negative).
int64_t mul_sat(int64_t a, int64_t b) {
  int64_t out = 0;
  return __builtin_mul_overflow(a, b, &out) ? std::numeric_limits<int64_t>::max() : out;
}

int64_t add_sat(int64_t a, int64_t b) {
  int64_t out = 0;
  return __builtin_add_overflow(a, b, &out) ? std::numeric_limits<int64_t>::max() : out;
}

int64_t pixels_of(const ImageHeader& h) { return mul_sat(h.width, h.height); }

// OpenCV's decoded image (PNG, BMP, WebP) and, while it is alive, the larger of the decoder's
// work buffers (freed when imdecode returns) and the RGB result (allocated after it).
int64_t opencv_decoded_bytes(const ImageHeader& h, int64_t work_bytes) {
  const int64_t decoded = mul_sat(mul_sat(pixels_of(h), h.channels), h.bytes_per_sample);
  return add_sat(decoded, std::max(work_bytes, mul_sat(pixels_of(h), 3)));
}

ImageHeader parse_jpeg(const ByteReader& r) {
  const image_detail::JpegFrame frame = image_detail::parse_jpeg_frame(r);
  ImageHeader header{ImageFormat::kJpeg, frame.width, frame.height};
  const auto count = static_cast<int64_t>(frame.components.size());
  header.channels = count == 1 ? 1 : 3;  // OpenCV converts CMYK to BGR
  // libjpeg keeps every DCT coefficient of the image when the scans are not one interleaved
  // pass (jdinput.c: progressive, or the first scan has fewer components than the frame;
  // jdcoefct.c allocates them). A file whose first scan is not found counts as multi-scan.
  bool multi_scan = frame.progressive();
  size_t pos = frame.end;
  while (!multi_scan) {
    uint8_t marker = 0;
    uint32_t length = 0;
    if (!image_detail::jpeg_next_marker(r, &pos, &marker) || marker == image_detail::kJpegEoi) {
      multi_scan = true;
    } else if (image_detail::jpeg_marker_is_standalone(marker)) {
      continue;
    } else if (!r.be16(pos, &length) || length < 3 || !r.has(pos, length)) {
      multi_scan = true;
    } else if (marker == image_detail::kJpegSos) {
      multi_scan = r.u8(pos + 2) < count;
      break;
    } else {
      pos += length;
    }
  }
  int64_t coefficients = 0;
  if (multi_scan) {
    for (size_t c = 0; c < frame.components.size(); ++c) {
      const int64_t h = frame.components[c].h;
      const int64_t v = frame.components[c].v;
      const int64_t across = (frame.blocks_across(c) + h - 1) / h * h;
      const int64_t down = (frame.blocks_down(c) + v - 1) / v * v;
      coefficients = add_sat(coefficients, across * down * 64 * 2);  // JBLOCK: 64 int16
    }
  }
  header.decoded_bytes = add_sat(mul_sat(pixels_of(header), 3), coefficients);
  return header;
}

ImageHeader parse_png(const ByteReader& r) {
  // Signature (8), then the IHDR chunk: length (4), "IHDR", width (4), height (4), bit depth,
  // colour type, compression, filter, interlace method (1 byte each) and the CRC (4).
  uint32_t width = 0;
  uint32_t height = 0;
  TORCH_CHECK(r.has(0, 33), "PNG is truncated: its header needs 33 bytes, got ", r.size());
  TORCH_CHECK(r.starts_with(12, "IHDR"), "PNG is malformed: the first chunk is not IHDR");
  r.be32(16, &width);
  r.be32(20, &height);
  TORCH_CHECK(width > 0 && height > 0 && width <= 0x7FFFFFFFU && height <= 0x7FFFFFFFU,
              "PNG declares an invalid size of ", width, "x", height);
  const int depth = r.u8(24);
  const int color = r.u8(25);
  // PNG spec 11.2.2: the allowed bit depths of each colour type.
  const bool valid =
      (color == 0 && (depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16)) ||
      (color == 3 && (depth == 1 || depth == 2 || depth == 4 || depth == 8)) ||
      ((color == 2 || color == 4 || color == 6) && (depth == 8 || depth == 16));
  TORCH_CHECK(valid, "PNG declares an invalid bit depth ", depth, " for colour type ", color);
  TORCH_CHECK(r.u8(26) == 0 && r.u8(27) == 0 && r.u8(28) <= 1,
              "PNG declares an unknown compression, filter or interlace method");
  // OpenCV adds alpha for a tRNS chunk of an RGB or palette image (grfmt_png.cpp), which comes
  // before the first IDAT (PNG spec 5.6).
  bool transparency = false;
  for (size_t pos = 8; r.has(pos, 8);) {
    uint32_t length = 0;
    r.be32(pos, &length);
    if (r.starts_with(pos + 4, "IDAT") || r.starts_with(pos + 4, "IEND")) break;
    transparency = transparency || r.starts_with(pos + 4, "tRNS");
    if (length > r.size()) break;
    pos += 12 + static_cast<size_t>(length);
  }
  ImageHeader header{ImageFormat::kPng, width, height};
  header.channels = color == 0 ? 1 : (color == 2 || color == 3) && !transparency ? 3 : 4;
  header.bytes_per_sample = depth == 16 ? 2 : 1;
  header.decoded_bytes = opencv_decoded_bytes(header, 0);
  return header;
}

ImageHeader parse_bmp(const ByteReader& r) {
  uint32_t dib_size = 0;
  TORCH_CHECK(r.le32(14, &dib_size), "BMP is truncated: no info header");
  int64_t width = 0;
  int64_t height = 0;
  uint32_t bpp = 0;
  uint32_t compression = 0;
  uint32_t colors_used = 0;
  if (dib_size == 12) {  // BITMAPCOREHEADER: unsigned 16-bit sides
    uint32_t w = 0;
    uint32_t h = 0;
    TORCH_CHECK(r.le16(18, &w) && r.le16(20, &h) && r.le16(24, &bpp),
                "BMP is truncated: info header cut short");
    width = w;
    height = h;
  } else {
    // OpenCV reads the 40-byte BITMAPINFOHEADER fields up to biClrUsed from 36 bytes on.
    uint32_t w = 0;
    uint32_t h = 0;
    TORCH_CHECK(dib_size >= 36 && r.le32(18, &w) && r.le32(22, &h) && r.le16(28, &bpp) &&
                    r.le32(30, &compression) && r.le32(46, &colors_used),
                "BMP is truncated or has an unknown info header (size ", dib_size, ")");
    width = static_cast<int32_t>(w);
    // A negative height means rows are stored top-down.
    height = std::abs(static_cast<int64_t>(static_cast<int32_t>(h)));
  }
  TORCH_CHECK(width > 0 && height > 0, "BMP declares an invalid size of ", width, "x", height);
  // The combinations OpenCV's BMP reader decodes (grfmt_bmp.cpp).
  const bool paletted = bpp == 1 || bpp == 4 || bpp == 8;
  const bool supported = ((paletted || bpp == 24 || bpp == 32) && compression == 0) ||
                         ((bpp == 16 || bpp == 32) && (compression == 0 || compression == 3)) ||
                         (bpp == 8 && compression == 1) || (bpp == 4 && compression == 2);
  TORCH_CHECK(supported, "BMP with ", bpp, " bits per pixel and compression ", compression,
              " is not supported");
  ImageHeader header{ImageFormat::kBmp, width, height};
  // OpenCV 4.6 decodes every BITMAPCOREHEADER image to one gray channel.
  header.channels = dib_size == 12 ? 1 : bpp == 32 && compression == 3 ? 4 : 3;
  if (paletted && dib_size != 12) {
    // OpenCV decodes a palette of grays to one channel; entries missing from the data count
    // as colour (the estimate stays an upper bound).
    TORCH_CHECK(colors_used <= 256, "BMP declares ", colors_used, " palette colours");
    const uint32_t entries = colors_used == 0 ? 1U << bpp : colors_used;
    const size_t palette = 14 + static_cast<size_t>(dib_size);
    bool gray = r.has(palette, static_cast<size_t>(entries) * 4);
    for (uint32_t i = 0; gray && i < entries; ++i) {
      const size_t e = palette + 4 * static_cast<size_t>(i);
      gray = r.u8(e) == r.u8(e + 1) && r.u8(e) == r.u8(e + 2);
    }
    header.channels = gray ? 1 : 3;
  }
  header.decoded_bytes = opencv_decoded_bytes(header, 0);
  return header;
}

ImageHeader parse_webp(const ByteReader& r) {
  // RIFF header (12), then the first chunk: fourcc (4), size (4), payload from byte 20.
  TORCH_CHECK(r.has(0, 20), "WebP is truncated: no first chunk");
  uint32_t width = 0;
  uint32_t height = 0;
  bool alpha = false;
  // libwebp's whole-image buffers besides the output, per pixel: lossless (VP8L) decodes into
  // 4-byte ARGB pixels, plus transform and entropy images sub-sampled by at least 4 × 4 at
  // 4 bytes per block (vp8l_dec.c: ≤ 1 byte per pixel for up to 4 of them); a lossy (VP8)
  // image's alpha is a 1-byte plane, plus a 1-byte lossless work image when it is compressed
  // (alpha_dec.c). A lossy frame itself is decoded a macroblock row at a time.
  int64_t work_per_pixel = 0;
  if (r.starts_with(12, "VP8 ")) {
    // Lossy: 3-byte frame tag, start code 9D 01 2A, then 14-bit width and height.
    TORCH_CHECK(r.has(20, 10) && r.starts_with(23, "\x9D\x01\x2A"),
                "WebP (lossy) frame header is truncated or malformed");
    r.le16(26, &width);
    r.le16(28, &height);
    width &= 0x3FFF;
    height &= 0x3FFF;
  } else if (r.starts_with(12, "VP8L")) {
    // Lossless: signature 0x2F, then width − 1 and height − 1 in 14 bits each, alpha_is_used.
    uint32_t bits = 0;
    TORCH_CHECK(r.has(20, 1) && r.u8(20) == 0x2F && r.le32(21, &bits),
                "WebP (lossless) header is truncated or malformed");
    width = (bits & 0x3FFF) + 1;
    height = ((bits >> 14) & 0x3FFF) + 1;
    alpha = ((bits >> 28) & 1U) != 0;
    work_per_pixel = 5;
  } else if (r.starts_with(12, "VP8X")) {
    // Extended: flags (4), then canvas width − 1 and height − 1 in 24 bits each; the image
    // chunks follow. As libwebp's WebPGetFeatures: alpha from the flags or an ALPH chunk, or
    // from the VP8L header of a lossless image. An image chunk not found counts as lossless.
    uint32_t chunk = 0;
    TORCH_CHECK(r.le24(24, &width) && r.le24(27, &height) && r.le32(16, &chunk),
                "WebP (extended) header is truncated");
    width += 1;
    height += 1;
    alpha = (r.u8(20) & 0x10) != 0;
    work_per_pixel = 5;
    bool alpha_chunk = false;
    bool alpha_lossless = false;
    for (size_t pos = 20 + chunk + (chunk & 1U); r.has(pos, 8);) {
      r.le32(pos + 4, &chunk);
      if (r.starts_with(pos, "ALPH")) {
        alpha_chunk = true;
        alpha_lossless = r.has(pos + 8, 1) && (r.u8(pos + 8) & 0x03) == 1;
      } else if (r.starts_with(pos, "VP8 ")) {
        work_per_pixel = alpha_chunk ? (alpha_lossless ? 2 : 1) : 0;
        break;
      } else if (r.starts_with(pos, "VP8L")) {
        uint32_t bits = 0;
        alpha = !r.le32(pos + 9, &bits) || ((bits >> 28) & 1U) != 0;
        break;
      }
      pos += 8 + static_cast<size_t>(chunk) + (chunk & 1U);
    }
    alpha = alpha || alpha_chunk;
  } else {
    TORCH_CHECK(false, "WebP has an unknown first chunk");
  }
  TORCH_CHECK(width > 0 && height > 0, "WebP declares an invalid size of ", width, "x", height);
  ImageHeader header{ImageFormat::kWebp, width, height};
  header.channels = alpha ? 4 : 3;
  header.decoded_bytes = opencv_decoded_bytes(header, mul_sat(pixels_of(header), work_per_pixel));
  return header;
}

}  // namespace

const char* image_format_name(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg:
      return "JPEG";
    case ImageFormat::kPng:
      return "PNG";
    case ImageFormat::kBmp:
      return "BMP";
    case ImageFormat::kWebp:
      return "WebP";
  }
  return "unknown";
}

ImageHeader read_image_header(std::string_view bytes) {
  TORCH_CHECK(!bytes.empty(), "image data is empty");
  const ByteReader r(bytes);
  if (r.starts_with(0, "\xFF\xD8\xFF")) {
    return parse_jpeg(r);
  }
  if (r.starts_with(0, "\x89PNG\r\n\x1A\n")) {
    return parse_png(r);
  }
  if (r.starts_with(0, "BM")) {
    return parse_bmp(r);
  }
  if (r.starts_with(0, "RIFF") && r.starts_with(8, "WEBP")) {
    return parse_webp(r);
  }
  TORCH_CHECK(false, "unrecognised image data (", bytes.size(),
              " bytes): expected JPEG, PNG, BMP or WebP");
  return {};
}

}  // namespace kdeserve::models
