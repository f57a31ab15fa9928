#pragma once
/// Image decoding and encoding of the server's engine (models/preprocess behind plain C++
/// types): encoded or raw request images → the classifier's uint8 input crop, and generated
/// images → PNG. Callable from any thread: decoding is OpenCV (its own pool disabled) and the
/// resize plain loops, so the gRPC threads decode and resize while the compute thread
/// (server/executor.h) normalises and runs the models.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kdeserve::server {

/// An 8-bit RGB image: pixels uint8 [height, width, 3], row-major, contiguous.
struct RgbImage {
  int64_t height = 0;
  int64_t width = 0;
  std::vector<uint8_t> pixels;  ///< height · width · 3 bytes
};

/// Limits on one request image, both checked before decoding: a model's
/// ModelConfig::max_image_pixels and max_image_decoded_bytes (server/config.h has their
/// defaults; models/preprocess/image.h's DecodeOptions, what they bound).
struct ImageLimits {
  /// Largest width · height.
  int64_t max_pixels;
  /// Largest bytes of image buffers the decode may hold at once (ImageHeader::decoded_bytes).
  int64_t max_decoded_bytes;
};

/// Encoded JPEG, PNG, BMP or WebP bytes → the model input crop uint8 [crop, crop, 3]: checked
/// against `limits` and for data too short for its declared size, then decoded as Pillow's
/// convert('RGB') does, shorter side resized to floor(crop / 0.9) (PIL bicubic), centre crop
/// (models/preprocess/image.h). Throws LibTorchError saying what is wrong with undecodable,
/// truncated or over-large images.
RgbImage prepare_encoded_image(std::string_view bytes, int64_t crop_size,
                               const ImageLimits& limits);

/// Raw pixels uint8 [height, width, channels] (channels 1: gray, 3: RGB, 4: RGBA, alpha dropped;
/// data.size() must be height · width · channels) → the model input crop uint8 [crop, crop, 3],
/// as prepare_encoded_image() after decoding. The copy of the pixels and their RGB form
/// (height · width · (channels + 3) bytes) count against limits.max_decoded_bytes. Throws
/// LibTorchError for bad shapes or sizes.
RgbImage prepare_raw_image(std::string_view data, int64_t height, int64_t width, int64_t channels,
                           int64_t crop_size, const ImageLimits& limits);

/// uint8 [H, W, 3] RGB → PNG file bytes (OpenCV). Throws std::runtime_error when encoding fails.
std::string encode_png(const RgbImage& image);

}  // namespace kdeserve::server
