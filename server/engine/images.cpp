#include "server/engine/images.h"

#include <ATen/ATen.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <stdexcept>

#include "models/preprocess/image.h"
#include "server/engine/translate.h"

namespace kdeserve::server {

namespace km = kdeserve::models;
using engine_detail::translating;

namespace {

// uint8 [H, W, 3] contiguous → RgbImage (a copy).
RgbImage to_rgb_image(const at::Tensor& rgb) {
  const at::Tensor c = rgb.contiguous();
  RgbImage image;
  image.height = c.size(0);
  image.width = c.size(1);
  const uint8_t* p = c.data_ptr<uint8_t>();
  image.pixels.assign(p, p + c.numel());
  return image;
}

km::DecodeOptions decode_options(const ImageLimits& limits) {
  return km::DecodeOptions()
      .max_pixels(limits.max_pixels)
      .max_decoded_bytes(limits.max_decoded_bytes);
}

}  // namespace

RgbImage prepare_encoded_image(std::string_view bytes, int64_t crop_size,
                               const ImageLimits& limits) {
  return translating([&] {
    const auto preprocess = km::PreprocessOptions::for_crop(crop_size);
    return to_rgb_image(
        km::resize_and_center_crop(km::decode_image(bytes, decode_options(limits)), preprocess));
  });
}

RgbImage prepare_raw_image(std::string_view data, int64_t height, int64_t width, int64_t channels,
                           int64_t crop_size, const ImageLimits& limits) {
  return translating([&] {
    TORCH_CHECK(height > 0 && width > 0 && channels > 0 &&
                    static_cast<int64_t>(data.size()) == height * width * channels,
                "raw image: ", data.size(), " bytes for ", height, "x", width, "x", channels);
    const auto preprocess = km::PreprocessOptions::for_crop(crop_size);
    TORCH_CHECK(height * width <= limits.max_pixels, "raw image: ", width, "x", height, " = ",
                height * width, " pixels, above the limit of ", limits.max_pixels, " pixels");
    const int64_t held = height * width * (channels + 3);
    TORCH_CHECK(held <= limits.max_decoded_bytes, "raw image: ", width, "x", height, "x", channels,
                " needs ", held, " bytes of image buffers, above the limit of ",
                limits.max_decoded_bytes, " bytes (max_decoded_bytes)");
    const at::Tensor pixels =
        at::from_blob(const_cast<char*>(data.data()), {height, width, channels}, at::kByte).clone();
    return to_rgb_image(
        km::resize_and_center_crop(km::to_rgb(pixels, decode_options(limits)), preprocess));
  });
}

std::string encode_png(const RgbImage& image) {
  if (image.height <= 0 || image.width <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.height * image.width * 3)) {
    throw std::runtime_error("PNG encoding failed: not an RGB image of its size");
  }
  cv::Mat mat(static_cast<int>(image.height), static_cast<int>(image.width), CV_8UC3,
              const_cast<uint8_t*>(image.pixels.data()));
  cv::Mat bgr;
  cv::cvtColor(mat, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> buf;
  if (!cv::imencode(".png", bgr, buf)) throw std::runtime_error("PNG encoding failed");
  return {buf.begin(), buf.end()};
}

}  // namespace kdeserve::server
