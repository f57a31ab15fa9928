#include "models/preprocess/image.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>

#include "models/preprocess/resize.h"

namespace kdeserve::models {
namespace {

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

// JPEG markers without a length field: TEM, RST0..7, SOI, EOI.
bool jpeg_marker_is_standalone(uint8_t marker) {
  return marker == 0x01 || (marker >= 0xD0 && marker <= 0xD9);
}

// SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
bool jpeg_marker_is_sof(uint8_t marker) {
  return marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
}

constexpr uint8_t kJpegSos = 0xDA;

std::string hex_byte(uint8_t value) {
  constexpr char kDigits[] = "0123456789ABCDEF";
  return std::string("0x") + kDigits[value >> 4] + kDigits[value & 0xF];
}
constexpr uint8_t kJpegEoi = 0xD9;

// Reads the marker at `pos` (skipping 0xFF fill bytes); false at the end of the data or when no
// 0xFF starts there.
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

ImageHeader parse_jpeg(const ByteReader& r) {
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
    if (jpeg_marker_is_sof(marker)) {
      uint32_t height = 0;
      uint32_t width = 0;
      TORCH_CHECK(length >= 8 && r.be16(pos + 3, &height) && r.be16(pos + 5, &width),
                  "JPEG frame header is too short");
      TORCH_CHECK(width > 0 && height > 0, "JPEG declares a size of ", width, "x", height,
                  " (a height set later by a DNL marker is not supported)");
      return {ImageFormat::kJpeg, width, height};
    }
    pos += length;
  }
}

// Whether the JPEG's scans run to an EOI marker. libjpeg decodes a file cut inside its scans
// with only a warning (grey fill); Pillow refuses it ("image file is truncated"), and so do we.
// Walks the segments, then the entropy-coded data, where 0xFF is always followed by a stuffed
// 0x00, an RST marker, or a real marker (DHT, SOS, ... between progressive scans).
bool jpeg_has_end_marker(const ByteReader& r) {
  size_t pos = 2;
  bool in_scan = false;
  while (r.has(pos, 1)) {
    if (in_scan) {
      if (r.u8(pos) != 0xFF) {
        ++pos;
        continue;
      }
      if (!r.has(pos, 2)) {
        return false;
      }
      const uint8_t next = r.u8(pos + 1);
      if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) {
        pos += 2;
        continue;
      }
      if (next == 0xFF) {
        ++pos;
        continue;
      }
    }
    uint8_t marker = 0;
    if (!jpeg_next_marker(r, &pos, &marker)) {
      return false;
    }
    if (marker == kJpegEoi) {
      return true;
    }
    if (jpeg_marker_is_standalone(marker)) {
      continue;
    }
    uint32_t length = 0;
    if (!r.be16(pos, &length) || length < 2 || !r.has(pos, length)) {
      return false;
    }
    pos += length;
    in_scan = in_scan || marker == kJpegSos;
  }
  return false;
}

ImageHeader parse_png(const ByteReader& r) {
  // Signature (8), then the IHDR chunk: length (4), "IHDR", width (4), height (4), 5 more
  // bytes and the CRC (4).
  uint32_t width = 0;
  uint32_t height = 0;
  TORCH_CHECK(r.has(0, 33), "PNG is truncated: its header needs 33 bytes, got ", r.size());
  TORCH_CHECK(r.starts_with(12, "IHDR"), "PNG is malformed: the first chunk is not IHDR");
  r.be32(16, &width);
  r.be32(20, &height);
  TORCH_CHECK(width > 0 && height > 0 && width <= 0x7FFFFFFFU && height <= 0x7FFFFFFFU,
              "PNG declares an invalid size of ", width, "x", height);
  return {ImageFormat::kPng, width, height};
}

ImageHeader parse_bmp(const ByteReader& r) {
  uint32_t dib_size = 0;
  TORCH_CHECK(r.le32(14, &dib_size), "BMP is truncated: no info header");
  int64_t width = 0;
  int64_t height = 0;
  if (dib_size == 12) {  // BITMAPCOREHEADER: unsigned 16-bit sides
    uint32_t w = 0;
    uint32_t h = 0;
    TORCH_CHECK(r.le16(18, &w) && r.le16(20, &h), "BMP is truncated: info header cut short");
    width = w;
    height = h;
  } else {
    uint32_t w = 0;
    uint32_t h = 0;
    TORCH_CHECK(dib_size >= 16 && r.le32(18, &w) && r.le32(22, &h),
                "BMP is truncated or has an unknown info header (size ", dib_size, ")");
    width = static_cast<int32_t>(w);
    // A negative height means rows are stored top-down.
    height = std::abs(static_cast<int64_t>(static_cast<int32_t>(h)));
  }
  TORCH_CHECK(width > 0 && height > 0, "BMP declares an invalid size of ", width, "x", height);
  return {ImageFormat::kBmp, width, height};
}

ImageHeader parse_webp(const ByteReader& r) {
  // RIFF header (12), then the first chunk: fourcc (4), size (4), payload from byte 20.
  TORCH_CHECK(r.has(0, 20), "WebP is truncated: no first chunk");
  uint32_t width = 0;
  uint32_t height = 0;
  if (r.starts_with(12, "VP8 ")) {
    // Lossy: 3-byte frame tag, start code 9D 01 2A, then 14-bit width and height.
    TORCH_CHECK(r.has(20, 10) && r.starts_with(23, "\x9D\x01\x2A"),
                "WebP (lossy) frame header is truncated or malformed");
    r.le16(26, &width);
    r.le16(28, &height);
    width &= 0x3FFF;
    height &= 0x3FFF;
  } else if (r.starts_with(12, "VP8L")) {
    // Lossless: signature 0x2F, then width − 1 and height − 1 in 14 bits each.
    uint32_t bits = 0;
    TORCH_CHECK(r.has(20, 1) && r.u8(20) == 0x2F && r.le32(21, &bits),
                "WebP (lossless) header is truncated or malformed");
    width = (bits & 0x3FFF) + 1;
    height = ((bits >> 14) & 0x3FFF) + 1;
  } else if (r.starts_with(12, "VP8X")) {
    // Extended: flags (4), then canvas width − 1 and height − 1 in 24 bits each.
    TORCH_CHECK(r.le24(24, &width) && r.le24(27, &height), "WebP (extended) header is truncated");
    width += 1;
    height += 1;
  } else {
    TORCH_CHECK(false, "WebP has an unknown first chunk");
  }
  TORCH_CHECK(width > 0 && height > 0, "WebP declares an invalid size of ", width, "x", height);
  return {ImageFormat::kWebp, width, height};
}

void check_pixel_count(int64_t width, int64_t height, int64_t max_pixels, const char* what) {
  TORCH_CHECK(max_pixels > 0, "max_pixels must be positive, got ", max_pixels);
  // Both sides fit in 31 bits, so the product cannot overflow int64.
  const int64_t pixels = width * height;
  TORCH_CHECK(pixels <= max_pixels, what, " is ", width, "x", height, " = ", pixels,
              " pixels, above the limit of ", max_pixels, " pixels");
}

// OpenCV reports decoder problems on stderr through its logger; the caller gets a c10::Error
// instead, so keep the logger at errors only (once per process, never made more verbose).
void quiet_opencv_logging() {
  static std::once_flag once;
  std::call_once(once, [] {
    namespace logging = cv::utils::logging;
    if (logging::getLogLevel() > logging::LOG_LEVEL_ERROR) {
      logging::setLogLevel(logging::LOG_LEVEL_ERROR);
    }
    // Decoding one image gains nothing from OpenCV's TBB pool, whose spinning workers would
    // compete with LibTorch's OpenMP threads for the cores while a model runs.
    cv::setNumThreads(1);
  });
}

// Decoded 16-bit samples → 8 bits by keeping the high byte, as Pillow does for 16-bit RGB PNGs.
cv::Mat to_8bit(const cv::Mat& decoded) {
  if (decoded.depth() == CV_8U) {
    return decoded;
  }
  TORCH_CHECK(decoded.depth() == CV_16U, "decoded image has an unsupported sample depth (OpenCV ",
              "depth ", decoded.depth(), ")");
  cv::Mat out(decoded.rows, decoded.cols, CV_MAKETYPE(CV_8U, decoded.channels()));
  const int64_t row_len = static_cast<int64_t>(decoded.cols) * decoded.channels();
  for (int y = 0; y < decoded.rows; ++y) {
    const auto* src = decoded.ptr<uint16_t>(y);
    auto* dst = out.ptr<uint8_t>(y);
    for (int64_t i = 0; i < row_len; ++i) {
      dst[i] = static_cast<uint8_t>(src[i] >> 8);
    }
  }
  return out;
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

at::Tensor decode_image(std::string_view bytes, const DecodeOptions& options) {
  const ImageHeader header = read_image_header(bytes);
  const char* name = image_format_name(header.format);
  check_pixel_count(header.width, header.height, options.max_pixels(), name);
  if (header.format == ImageFormat::kJpeg) {
    TORCH_CHECK(jpeg_has_end_marker(ByteReader(bytes)),
                "JPEG is truncated: its scan data does not end with an EOI marker");
  }
  quiet_opencv_logging();

  at::Tensor rgb;
  try {
    // imdecode only reads the buffer; IMREAD_UNCHANGED keeps 16-bit samples and alpha and, as
    // Pillow does, ignores the EXIF orientation.
    TORCH_CHECK(bytes.size() <= static_cast<size_t>(std::numeric_limits<int>::max()), name,
                " data of ", bytes.size(), " bytes is too large to decode");
    const cv::Mat encoded(1, static_cast<int>(bytes.size()), CV_8U,
                          const_cast<char*>(bytes.data()));
    const cv::Mat decoded = cv::imdecode(encoded, cv::IMREAD_UNCHANGED);
    TORCH_CHECK(!decoded.empty(), name, " data is corrupt or truncated: the decoder rejected it");
    TORCH_CHECK(decoded.dims == 2 && decoded.cols == header.width && decoded.rows == header.height,
                name, " decoded to ", decoded.cols, "x", decoded.rows, " but its header declares ",
                header.width, "x", header.height);
    const cv::Mat pixels = to_8bit(decoded);
    int code = 0;
    switch (pixels.channels()) {
      case 1:
        code = cv::COLOR_GRAY2RGB;
        break;
      case 3:
        code = cv::COLOR_BGR2RGB;
        break;
      case 4:
        code = cv::COLOR_BGRA2RGB;
        break;
      default:
        TORCH_CHECK(false, name, " decoded to an unsupported channel count ", pixels.channels());
    }
    rgb = at::empty({pixels.rows, pixels.cols, 3}, at::kByte);
    cv::Mat out(pixels.rows, pixels.cols, CV_8UC3, rgb.data_ptr<uint8_t>());
    cv::cvtColor(pixels, out, code);
    // cvtColor writes into `out` in place since its size and type already match.
    TORCH_INTERNAL_ASSERT(out.data == rgb.data_ptr<uint8_t>(), "cvtColor reallocated");
  } catch (const cv::Exception& e) {
    TORCH_CHECK(false, name, " data could not be decoded: ", e.what());
  }
  return rgb;
}

at::Tensor to_rgb(const at::Tensor& image, const DecodeOptions& options) {
  TORCH_CHECK(image.defined(), "to_rgb: image tensor is undefined");
  TORCH_CHECK(image.scalar_type() == at::kByte, "to_rgb: expected a uint8 image, got ",
              image.scalar_type());
  TORCH_CHECK(image.dim() == 2 || image.dim() == 3,
              "to_rgb: expected an image of shape [H, W] or [H, W, C], got ", image.sizes());
  const at::Tensor hwc = image.dim() == 2 ? image.unsqueeze(2) : image;
  const int64_t channels = hwc.size(2);
  TORCH_CHECK(channels == 1 || channels == 3 || channels == 4,
              "to_rgb: expected 1, 3 or 4 channels (gray, RGB, RGBA), got shape ", image.sizes());
  TORCH_CHECK(hwc.size(0) > 0 && hwc.size(1) > 0, "to_rgb: empty image of shape ", image.sizes());
  check_pixel_count(hwc.size(1), hwc.size(0), options.max_pixels(), "image tensor");
  const at::Tensor cpu = hwc.to(at::kCPU);
  if (channels == 1) {
    return cpu.expand({-1, -1, 3}).contiguous();
  }
  return cpu.narrow(2, 0, 3).contiguous();
}

PreprocessOptions PreprocessOptions::for_crop(int64_t crop_size, double crop_pct) {
  TORCH_CHECK(crop_size > 0, "crop size must be positive, got ", crop_size);
  TORCH_CHECK(crop_pct > 0.0 && crop_pct <= 1.0, "crop_pct must be in (0, 1], got ", crop_pct);
  // timm: scale_size = math.floor(img_size / crop_pct).
  const auto resize = static_cast<int64_t>(std::floor(static_cast<double>(crop_size) / crop_pct));
  return PreprocessOptions().crop_size(crop_size).resize_size(resize);
}

at::Tensor resize_and_center_crop(const at::Tensor& image, const PreprocessOptions& options) {
  const int64_t crop = options.crop_size();
  TORCH_CHECK(crop > 0 && options.resize_size() >= crop, "resize size ", options.resize_size(),
              " must be at least the crop size ", crop, " (and both positive)");
  const at::Tensor rgb =
      to_rgb(image, DecodeOptions().max_pixels(std::numeric_limits<int64_t>::max()));
  const auto [height, width] =
      resized_shorter_side(rgb.size(0), rgb.size(1), options.resize_size());
  const int64_t top = center_crop_offset(height, crop);
  const int64_t left = center_crop_offset(width, crop);
  return resize_bicubic_pil_crop(rgb, height, width, top, left, crop, crop);
}

at::Tensor normalize_image(const at::Tensor& image, const PreprocessOptions& options) {
  TORCH_CHECK(image.scalar_type() == at::kByte && image.dim() == 3 && image.size(2) == 3,
              "normalize_image: expected a uint8 [H, W, 3] image, got ", image.scalar_type(),
              " of shape ", image.sizes());
  const at::Tensor hwc = image.to(at::kCPU).contiguous();
  const int64_t height = hwc.size(0);
  const int64_t width = hwc.size(1);
  at::Tensor out = at::empty({3, height, width}, at::kFloat);
  const uint8_t* src = hwc.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
  const int64_t plane = height * width;
  for (int64_t c = 0; c < 3; ++c) {
    const float mean = options.mean()[c];
    const float stddev = options.stddev()[c];
    TORCH_CHECK(stddev != 0.0F, "normalize_image: stddev must be non-zero");
    for (int64_t i = 0; i < plane; ++i) {
      // torchvision: ToTensor divides by 255, Normalize subtracts then divides, all in float32.
      const float v = static_cast<float>(src[i * 3 + c]) / 255.0F;
      dst[c * plane + i] = (v - mean) / stddev;
    }
  }
  return out;
}

at::Tensor preprocess_imagenet(const at::Tensor& image, const PreprocessOptions& options,
                               const DecodeOptions& decode) {
  const at::Tensor rgb = to_rgb(image, decode);
  return normalize_image(resize_and_center_crop(rgb, options), options);
}

at::Tensor preprocess_imagenet(std::string_view bytes, const PreprocessOptions& options,
                               const DecodeOptions& decode) {
  return normalize_image(resize_and_center_crop(decode_image(bytes, decode), options), options);
}

}  // namespace kdeserve::models
