#include "models/preprocess/image.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>

#include "models/preprocess/image_detail.h"
#include "models/preprocess/resize.h"

namespace kdeserve::models {
namespace {

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

// OpenCV's decoded image (gray, BGR or BGRA; 8 or 16 bits) → `rgb`, uint8 [H, W, 3]. 16-bit
// samples keep their high byte, as Pillow does for 16-bit PNGs.
void to_rgb8(const cv::Mat& decoded, uint8_t* rgb, const char* name) {
  const int channels = decoded.channels();
  TORCH_CHECK(channels == 1 || channels == 3 || channels == 4, name,
              " decoded to an unsupported channel count ", channels);
  cv::Mat out(decoded.rows, decoded.cols, CV_8UC3, rgb);
  if (decoded.depth() == CV_8U) {
    const int code = channels == 1   ? cv::COLOR_GRAY2RGB
                     : channels == 3 ? cv::COLOR_BGR2RGB
                                     : cv::COLOR_BGRA2RGB;
    cv::cvtColor(decoded, out, code);
    // cvtColor writes into `out` in place since its size and type already match.
    TORCH_INTERNAL_ASSERT(out.data == rgb, "cvtColor reallocated");
    return;
  }
  TORCH_CHECK(decoded.depth() == CV_16U, name, " decoded to an unsupported sample depth (OpenCV ",
              "depth ", decoded.depth(), ")");
  // Straight into the result: no 8-bit copy of the decoded image.
  for (int y = 0; y < decoded.rows; ++y) {
    const auto* src = decoded.ptr<uint16_t>(y);
    uint8_t* dst = out.ptr<uint8_t>(y);
    for (int x = 0; x < decoded.cols; ++x, src += channels, dst += 3) {
      if (channels == 1) {
        dst[0] = dst[1] = dst[2] = static_cast<uint8_t>(src[0] >> 8);
      } else {
        dst[0] = static_cast<uint8_t>(src[2] >> 8);
        dst[1] = static_cast<uint8_t>(src[1] >> 8);
        dst[2] = static_cast<uint8_t>(src[0] >> 8);
      }
    }
  }
}

}  // namespace

at::Tensor decode_image(std::string_view bytes, const DecodeOptions& options) {
  const ImageHeader header = check_image(bytes, options);
  if (header.format == ImageFormat::kJpeg) {
    return image_detail::decode_jpeg(bytes, header);
  }
  const char* name = image_format_name(header.format);
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
    // The decoded-bytes limit was checked for the layout read from the header.
    TORCH_CHECK(
        static_cast<int64_t>(decoded.elemSize()) <= header.channels * header.bytes_per_sample, name,
        " decoded to ", decoded.channels(), " channels of ", 8 * decoded.elemSize1(),
        " bits, more than its header declares (", header.channels, " of ",
        8 * header.bytes_per_sample, ")");
    rgb = at::empty({header.height, header.width, 3}, at::kByte);
    to_rgb8(decoded, rgb.data_ptr<uint8_t>(), name);
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
  image_detail::check_pixel_count(hwc.size(1), hwc.size(0), options.max_pixels(), "image tensor");
  image_detail::check_decoded_bytes(
      hwc.size(0) * hwc.size(1) * 3, options.max_decoded_bytes(),
      "an RGB image tensor of " + std::to_string(hwc.size(1)) + "x" + std::to_string(hwc.size(0)));
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
  constexpr int64_t kUnlimited = std::numeric_limits<int64_t>::max();
  const at::Tensor rgb =
      to_rgb(image, DecodeOptions().max_pixels(kUnlimited).max_decoded_bytes(kUnlimited));
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
