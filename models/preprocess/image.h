#pragma once
/// Image decoding and the ImageNet evaluation transform of T2T-ViT (models spec A.6; fixtures
/// README §4 `t2t_preprocess`):
///   decode → RGB uint8 → resize the shorter side to 248 (PIL bicubic, long side truncated) →
///   centre crop 224 (Python rounding) → /255 → normalise with the ImageNet mean and std.
///
/// Decoding uses OpenCV (libjpeg-turbo, libpng, libwebp) behind this header; no OpenCV type
/// appears here. Every bad input (empty, truncated, unrecognised, corrupt, too many pixels) is a
/// c10::Error with a message that says what was wrong; nothing in the bytes can crash the process
/// or make it allocate for more pixels than DecodeOptions::max_pixels.

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <array>
#include <cstdint>
#include <string_view>

namespace kdeserve::models {

/// Encoded image formats accepted by decode_image(), recognised by their signature bytes.
enum class ImageFormat { kJpeg, kPng, kBmp, kWebp };

/// "JPEG", "PNG", "BMP" or "WebP".
const char* image_format_name(ImageFormat format);

/// The format and size an encoded image declares in its header.
struct ImageHeader {
  ImageFormat format = ImageFormat::kJpeg;
  int64_t width = 0;
  int64_t height = 0;
};

/// Reads the format and the declared size from the first bytes of an encoded image (JPEG SOF,
/// PNG IHDR, BMP info header, WebP VP8/VP8L/VP8X), without decoding pixels. Every read is bounds
/// checked. Throws c10::Error for empty input, an unrecognised signature, a header cut short or
/// a zero size.
ImageHeader read_image_header(std::string_view bytes);

/// Limits applied before decoding.
struct DecodeOptions {
  /// Largest accepted width · height, checked against the header before any pixel is decoded
  /// (and again on the decoded image). 40 megapixels by default.
  TORCH_ARG(int64_t, max_pixels) = 40'000'000;
};

/// Decodes JPEG, PNG, BMP or WebP bytes to a contiguous uint8 [H, W, 3] RGB tensor, as Pillow's
/// `Image.open(...).convert('RGB')` does: grayscale is replicated to 3 channels, alpha is dropped
/// (not composited), 16-bit samples keep their high byte, no EXIF rotation is applied.
/// Throws c10::Error for empty input, unknown formats, more than options.max_pixels pixels,
/// truncated JPEGs (no EOI marker after the scans; Pillow refuses these by default) and anything
/// the decoder rejects.
at::Tensor decode_image(std::string_view bytes, const DecodeOptions& options = {});

/// A decoded image given as a tensor, normalised to RGB: uint8 [H, W] or [H, W, C] with
/// C = 1 (gray, replicated), 3 (RGB, kept) or 4 (RGBA, alpha dropped) → contiguous uint8
/// [H, W, 3] on the CPU. Throws c10::Error for other dtypes, shapes, empty images or more than
/// options.max_pixels pixels.
at::Tensor to_rgb(const at::Tensor& image, const DecodeOptions& options = {});

/// Per-channel RGB values (float32, as torchvision's Normalize builds its tensors).
using ChannelValues = std::array<float, 3>;

/// The ImageNet evaluation transform's sizes and normalisation.
struct PreprocessOptions {
  /// Options for a model with input size `crop_size`: resize_size = floor(crop_size / crop_pct),
  /// e.g. 224 → 248 and 384 → 426 with the default crop_pct 0.9 (timm create_transform).
  static PreprocessOptions for_crop(int64_t crop_size, double crop_pct = 0.9);

  /// Side of the square centre crop: the model's input size.
  TORCH_ARG(int64_t, crop_size) = 224;
  /// The shorter side after resizing: floor(crop_size / crop_pct) with timm's crop_pct 0.9.
  TORCH_ARG(int64_t, resize_size) = 248;
  /// ImageNet mean and standard deviation (timm IMAGENET_DEFAULT_MEAN / _STD).
  TORCH_ARG(ChannelValues, mean) = {0.485F, 0.456F, 0.406F};
  TORCH_ARG(ChannelValues, stddev) = {0.229F, 0.224F, 0.225F};
};

/// Steps 2–3 of the transform: uint8 image (any layout to_rgb() accepts) → contiguous uint8
/// [crop, crop, 3]: shorter side resized to resize_size with resize_bicubic_pil(), then the centre
/// crop at center_crop_offset(). Throws c10::Error when resize_size < crop_size.
at::Tensor resize_and_center_crop(const at::Tensor& image, const PreprocessOptions& options = {});

/// Step 4: uint8 [H, W, 3] → float32 [3, H, W], (x / 255 − mean) / stddev in float32, the same
/// operations torchvision's ToTensor + Normalize perform.
at::Tensor normalize_image(const at::Tensor& image, const PreprocessOptions& options = {});

/// The whole evaluation transform on a decoded image (any layout to_rgb() accepts):
/// uint8 [H, W, C] → float32 [3, crop, crop], ready to stack into a model batch.
at::Tensor preprocess_imagenet(const at::Tensor& image, const PreprocessOptions& options = {},
                               const DecodeOptions& decode = {});

/// decode_image() followed by preprocess_imagenet(): encoded bytes → float32 [3, crop, crop].
at::Tensor preprocess_imagenet(std::string_view bytes, const PreprocessOptions& options = {},
                               const DecodeOptions& decode = {});

}  // namespace kdeserve::models
