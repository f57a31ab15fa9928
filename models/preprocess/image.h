#pragma once
/// Image decoding and the ImageNet evaluation transform of T2T-ViT (models spec A.6; fixtures
/// README §4 `t2t_preprocess`):
///   decode → RGB uint8 → resize the shorter side to 248 (PIL bicubic, long side truncated) →
///   centre crop 224 (Python rounding) → /255 → normalise with the ImageNet mean and std.
///
/// Decoding uses libjpeg(-turbo) for JPEG and OpenCV (libpng, libwebp, its own BMP reader) for
/// the rest, behind this header; no OpenCV or libjpeg type appears here. Every bad input (empty,
/// truncated, unrecognised, corrupt, too many pixels or decoded bytes) is a c10::Error with a
/// message that says what was wrong; nothing in the bytes can crash the process or make it
/// allocate for more pixels than DecodeOptions::max_pixels or more image buffers than
/// DecodeOptions::max_decoded_bytes, and data too short to hold the pixels its header declares is
/// refused before decoding, as Pillow refuses it ("image file is truncated").

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

/// The format, size and decoded layout an encoded image declares in its header.
struct ImageHeader {
  ImageFormat format = ImageFormat::kJpeg;
  int64_t width = 0;
  int64_t height = 0;
  /// Channels the decoder produces: 1 (gray), 3 (colour; CMYK JPEGs are converted) or 4
  /// (colour and alpha), as OpenCV's IMREAD_UNCHANGED gives them.
  int64_t channels = 3;
  /// Bytes per decoded sample: 2 for 16-bit PNGs, 1 otherwise.
  int64_t bytes_per_sample = 1;
  /// The most bytes of image-sized buffers decode_image() holds at once for this image:
  ///  - JPEG: the RGB result (width · height · 3, decoded straight into it), plus libjpeg's
  ///    whole-image DCT coefficients when the file has several scans (progressive, or one scan
  ///    per component): 128 bytes per 8×8 block, blocks padded to whole MCUs;
  ///  - PNG, BMP, WebP: OpenCV's decoded image (width · height · channels · bytes_per_sample),
  ///    plus the larger of the RGB result and the decoder's whole-image work buffers (lossless
  ///    WebP: 4-byte ARGB pixels and up to 1 byte per pixel of transform and entropy images;
  ///    lossy WebP with alpha: the alpha plane, and as much again when it is losslessly coded).
  /// Buffers of a few rows are not counted: OpenCV refuses sides above 2^20 and libpng above
  /// 10^6 pixels, and JPEG sides are at most 65,535. bench/decode_bench.cpp compares this with
  /// the measured peak RSS (bench/RESULTS.md).
  int64_t decoded_bytes = 0;
};

/// Reads the format, the declared size and the decoded layout from the header of an encoded
/// image (JPEG SOF and first SOS, PNG IHDR and the chunks before IDAT, BMP info header and
/// palette, WebP VP8/VP8L/VP8X and its chunks), without decoding pixels. Every read is bounds
/// checked. Throws c10::Error for empty input, an unrecognised signature, a header cut short, a
/// zero size, or a variant decode_image() does not support (12-bit, lossless, hierarchical or
/// arithmetic-coded JPEG; BMP compressions other than none, RLE8, RLE4 and bit fields).
ImageHeader read_image_header(std::string_view bytes);

/// Limits applied before decoding.
struct DecodeOptions {
  /// Largest accepted width · height, checked against the header before any pixel is decoded
  /// (and again on the decoded image). 40 megapixels by default.
  TORCH_ARG(int64_t, max_pixels) = 40'000'000;
  /// Largest accepted ImageHeader::decoded_bytes, checked before decoding. The default is what
  /// the costliest 8-bit RGB layout needs at the default max_pixels: a progressive 4:4:4 JPEG,
  /// 3 bytes of result and 6 of DCT coefficients per pixel, 9 · 40 MP = 360 MB, plus the
  /// blocks' padding to whole 8×8 blocks (at most 2.73 MB at 40 MP, for a 617 × 64829 image).
  /// Every other 8-bit layout (baseline or 4:2:0 JPEG, gray, RGB or RGBA PNG, BMP, lossy or
  /// lossless WebP) and a 16-bit RGB PNG fit at 40 megapixels too; a 16-bit RGBA PNG (11 bytes
  /// per pixel, issue 10's hostile 6324 × 6324 zeros) and a progressive CMYK JPEG fit up to
  /// 33 megapixels. bench/RESULTS.md has the measured peaks.
  TORCH_ARG(int64_t, max_decoded_bytes) = 364'000'000;
};

/// Everything decode_image() checks before decoding: reads the header (read_image_header()),
/// checks its size against options.max_pixels and its decoded_bytes against
/// options.max_decoded_bytes, then checks that the encoded data can hold the declared pixels at
/// all (each bound is a true lower bound of its format, argued in image_checks.cpp):
///  - JPEG: every scan's entropy-coded data has at least 2 bits per 8×8 block (sequential) or
///    1 bit per block (progressive DC scans); every component has a scan, and at most 32 (each
///    costs a pass over the component); the scans end with an EOI marker;
///  - PNG: the IDAT chunks hold at least 1/1032 of the filtered image bytes (deflate's maximum
///    ratio);
///  - BMP: uncompressed rows are all there; RLE8/RLE4 codes cover every pixel before the end of
///    the bitmap (end-of-line and delta codes count as covering, as in Pillow);
///  - WebP: no bound exists (a constant lossless image of any size takes a few dozen bytes);
///    libwebp itself refuses data that ends early.
/// Cost: one pass over the bytes for JPEG and RLE BMP (no decoding), a walk over the chunks for
/// PNG and WebP. Returns the header; throws c10::Error saying which check failed.
ImageHeader check_image(std::string_view bytes, const DecodeOptions& options = {});

/// Decodes JPEG, PNG, BMP or WebP bytes to a contiguous uint8 [H, W, 3] RGB tensor, as Pillow's
/// `Image.open(...).convert('RGB')` does: grayscale is replicated to 3 channels, alpha is dropped
/// (not composited), 16-bit samples keep their high byte, no EXIF rotation is applied.
/// Throws c10::Error for everything check_image() refuses, for JPEG data that libjpeg finds to
/// end before the image does ("premature end of data segment", "premature end of JPEG file":
/// warnings OpenCV ignores, filling the rest with grey) and for anything the decoder rejects.
at::Tensor decode_image(std::string_view bytes, const DecodeOptions& options = {});

/// A decoded image given as a tensor, normalised to RGB: uint8 [H, W] or [H, W, C] with
/// C = 1 (gray, replicated), 3 (RGB, kept) or 4 (RGBA, alpha dropped) → contiguous uint8
/// [H, W, 3] on the CPU. Throws c10::Error for other dtypes, shapes, empty images, more than
/// options.max_pixels pixels or a result (H · W · 3 bytes) above options.max_decoded_bytes.
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
