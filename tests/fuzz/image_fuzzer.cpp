// Fuzzes the decoding of request images as the server does it (server/engine/images.cpp):
// read_image_header() → decode_image() under a pixel limit → resize_and_center_crop(). Any input
// may be refused with a c10::Error; nothing may crash, leak, hit undefined behaviour, throw
// anything else or return an image other than the one promised.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "models/preprocess/image.h"
#include "tests/fuzz/fuzz_support.h"

namespace km = kdeserve::models;

namespace {

// Small enough to keep a run fast (decoding and resizing cost grows with the pixels), large
// enough for most seed photos to decode (ImageNet's 500x375); larger ones test the limit.
constexpr int64_t kMaxPixels = 1 << 18;
// The server crops 224 or 384 pixels (the model's input size); a small crop runs the same
// geometry and arithmetic with far fewer output pixels, whose resize took most of the time.
constexpr int64_t kCrop = 32;

std::string sizes_of(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

std::string encode(const cv::Mat& image, const char* extension, std::vector<int> params = {}) {
  std::vector<uchar> buffer;
  KDESERVE_FUZZ_CHECK(cv::imencode(extension, image, buffer, params),
                      std::string("cannot encode a seed ") + extension);
  return {buffer.begin(), buffer.end()};
}

}  // namespace

std::vector<kdeserve::fuzz::Seed> kdeserve::fuzz::generated_seeds() {
  // A small gradient in each layout and format decode_image() takes; the shared photos add
  // real JPEGs and PNGs.
  cv::Mat bgr(12, 17, CV_8UC3);
  for (int y = 0; y < bgr.rows; ++y) {
    for (int x = 0; x < bgr.cols; ++x)
      bgr.at<cv::Vec3b>(y, x) =
          cv::Vec3b(static_cast<uchar>(x * 15), static_cast<uchar>(y * 20), 99);
  }
  cv::Mat gray, bgra, deep;
  cv::cvtColor(bgr, gray, cv::COLOR_BGR2GRAY);
  cv::cvtColor(bgr, bgra, cv::COLOR_BGR2BGRA);
  bgr.convertTo(deep, CV_16UC3, 257.0);
  return {
      {"gradient.png", encode(bgr, ".png")},
      {"gray.png", encode(gray, ".png")},
      {"rgba.png", encode(bgra, ".png")},
      {"deep16.png", encode(deep, ".png")},
      {"gradient.bmp", encode(bgr, ".bmp")},
      {"gray.bmp", encode(gray, ".bmp")},
      {"rgba.bmp", encode(bgra, ".bmp")},
      {"gradient.jpg", encode(bgr, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 80})},
      {"progressive.jpg", encode(bgr, ".jpg", {cv::IMWRITE_JPEG_PROGRESSIVE, 1})},
      {"gray.jpg", encode(gray, ".jpg")},
      {"lossy.webp", encode(bgr, ".webp", {cv::IMWRITE_WEBP_QUALITY, 80})},
      {"lossless.webp", encode(bgr, ".webp", {cv::IMWRITE_WEBP_QUALITY, 101})},
      {"rgba.webp", encode(bgra, ".webp", {cv::IMWRITE_WEBP_QUALITY, 101})},
  };
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  km::ImageHeader header;
  try {
    header = km::read_image_header(bytes);
  } catch (const c10::Error&) {
    return 0;
  }
  KDESERVE_FUZZ_CHECK(header.width > 0 && header.height > 0,
                      "read_image_header gave " + std::to_string(header.width) + "x" +
                          std::to_string(header.height));
  at::Tensor rgb;
  try {
    rgb = km::decode_image(bytes, km::DecodeOptions().max_pixels(kMaxPixels));
  } catch (const c10::Error&) {
    return 0;
  }
  KDESERVE_FUZZ_CHECK(header.width * header.height <= kMaxPixels,
                      "decoded an image above the pixel limit");
  KDESERVE_FUZZ_CHECK(rgb.scalar_type() == at::kByte && rgb.is_contiguous() && rgb.dim() == 3 &&
                          rgb.size(0) == header.height && rgb.size(1) == header.width &&
                          rgb.size(2) == 3,
                      "decode_image gave " + sizes_of(rgb) + " for a header of " +
                          std::to_string(header.width) + "x" + std::to_string(header.height));
  // Every decoded image has an input crop (within the pixel limit no side is too long).
  const at::Tensor crop = km::resize_and_center_crop(rgb, km::PreprocessOptions::for_crop(kCrop));
  KDESERVE_FUZZ_CHECK(crop.scalar_type() == at::kByte && crop.is_contiguous() && crop.dim() == 3 &&
                          crop.size(0) == kCrop && crop.size(1) == kCrop && crop.size(2) == 3,
                      "resize_and_center_crop gave " + sizes_of(crop));
  return 0;
}
