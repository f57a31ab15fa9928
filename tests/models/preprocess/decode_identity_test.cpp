// Legit images decode bit-identically to the decoding before issue 10 (cv::imdecode with
// IMREAD_UNCHANGED, 16-bit samples' high byte, BGR(A)/gray → RGB), JPEG included although it now
// goes through libjpeg directly; and read_image_header() predicts the layout OpenCV decodes to,
// which ImageHeader::decoded_bytes is computed from.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "models/preprocess/image.h"
#include "tests/models/preprocess/hostile_images.h"
#include "tests/models/preprocess/jpeg_encode.h"
#include "tests/support/shared_data.h"

namespace kdeserve::models {
namespace {

namespace kt = kdeserve::testing;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

cv::Mat opencv_decode(const std::string& bytes) {
  const std::vector<uchar> buffer(bytes.begin(), bytes.end());
  return cv::imdecode(buffer, cv::IMREAD_UNCHANGED);
}

// The decoding before issue 10: OpenCV's image, high bytes of 16-bit samples, then RGB.
at::Tensor opencv_rgb(const std::string& bytes) {
  cv::Mat decoded = opencv_decode(bytes);
  EXPECT_FALSE(decoded.empty());
  if (decoded.depth() == CV_16U) {
    cv::Mat high(decoded.rows, decoded.cols, CV_8UC(decoded.channels()));
    for (int y = 0; y < decoded.rows; ++y) {
      for (int i = 0; i < decoded.cols * decoded.channels(); ++i) {
        high.ptr<uint8_t>(y)[i] = static_cast<uint8_t>(decoded.ptr<uint16_t>(y)[i] >> 8);
      }
    }
    decoded = high;
  }
  const int code = decoded.channels() == 1   ? cv::COLOR_GRAY2RGB
                   : decoded.channels() == 3 ? cv::COLOR_BGR2RGB
                                             : cv::COLOR_BGRA2RGB;
  cv::Mat rgb;
  cv::cvtColor(decoded, rgb, code);
  return at::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, at::kByte).clone();
}

void expect_identical(const std::string& what, const std::string& bytes) {
  SCOPED_TRACE(what);
  const ImageHeader header = read_image_header(bytes);
  const cv::Mat decoded = opencv_decode(bytes);
  ASSERT_FALSE(decoded.empty());
  EXPECT_EQ(header.channels, decoded.channels());
  EXPECT_EQ(header.bytes_per_sample, static_cast<int64_t>(decoded.elemSize1()));
  at::Tensor rgb;
  try {
    rgb = decode_image(bytes);
  } catch (const c10::Error& e) {
    FAIL() << e.what_without_backtrace();
  }
  EXPECT_TRUE(rgb.equal(opencv_rgb(bytes)));
}

// A gradient with noise, `channels` interleaved samples per pixel.
std::vector<uint8_t> samples(int width, int height, int channels, uint32_t seed = 1) {
  std::vector<uint8_t> out(static_cast<size_t>(width) * height * channels);
  for (size_t i = 0; i < out.size(); ++i) {
    seed = seed * 1664525U + 1013904223U;
    out[i] = static_cast<uint8_t>((i / channels % width) * 3 + (seed >> 28) + 40 * (i % channels));
  }
  return out;
}

std::string encode(const cv::Mat& image, const std::string& ext,
                   const std::vector<int>& params = {}) {
  std::vector<uchar> buffer;
  EXPECT_TRUE(cv::imencode(ext, image, buffer, params));
  return std::string(buffer.begin(), buffer.end());
}

TEST(DecodeIdentity, EverySharedImageMatchesTheOpenCVDecoding) {
  const std::string dir = kt::shared_dir() + "/data";
  if (!std::filesystem::is_directory(dir)) GTEST_SKIP() << dir << " is missing";
  int count = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    const std::string ext = entry.path().extension().string();
    if (!entry.is_regular_file() || (ext != ".jpg" && ext != ".JPEG" && ext != ".png")) continue;
    // Cut inside its Huffman tables: refused before and after (RejectsTruncatedFiles).
    if (entry.path().filename() == "truncated.jpg") continue;
    expect_identical(entry.path().string(), read_bytes(entry.path().string()));
    ++count;
  }
  std::cout << "[decode] " << count << " shared images bit-identical to cv::imdecode\n";
  EXPECT_GE(count, 140);
}

TEST(DecodeIdentity, JpegLayouts) {
  const int w = 61;
  const int h = 45;
  const auto gray = samples(w, h, 1);
  const auto rgb = samples(w, h, 3);
  const auto cmyk = samples(w, h, 4);
  kt::JpegEncodeOptions base;
  kt::JpegEncodeOptions progressive;
  progressive.progressive = true;
  kt::JpegEncodeOptions full;
  full.full_chroma = true;
  kt::JpegEncodeOptions full_progressive = progressive;
  full_progressive.full_chroma = true;
  kt::JpegEncodeOptions separate;
  separate.separate_scans = true;
  kt::JpegEncodeOptions optimized;
  optimized.optimize = true;
  expect_identical("gray", kt::encode_jpeg(gray.data(), w, h, 1, base));
  expect_identical("gray progressive", kt::encode_jpeg(gray.data(), w, h, 1, progressive));
  expect_identical("4:2:0", kt::encode_jpeg(rgb.data(), w, h, 3, base));
  expect_identical("4:2:0 progressive", kt::encode_jpeg(rgb.data(), w, h, 3, progressive));
  expect_identical("4:4:4", kt::encode_jpeg(rgb.data(), w, h, 3, full));
  expect_identical("4:4:4 progressive", kt::encode_jpeg(rgb.data(), w, h, 3, full_progressive));
  expect_identical("one scan per component", kt::encode_jpeg(rgb.data(), w, h, 3, separate));
  expect_identical("optimised Huffman tables", kt::encode_jpeg(rgb.data(), w, h, 3, optimized));
  expect_identical("CMYK", kt::encode_jpeg(cmyk.data(), w, h, 4, base));
  expect_identical("CMYK progressive", kt::encode_jpeg(cmyk.data(), w, h, 4, progressive));
  cv::Mat bgr(h, w, CV_8UC3, const_cast<uint8_t*>(rgb.data()));
  expect_identical("OpenCV, restart interval",
                   encode(bgr, ".jpg", {cv::IMWRITE_JPEG_RST_INTERVAL, 2}));
  expect_identical("OpenCV, quality 30", encode(bgr, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 30}));
}

// Scanlines of an 8-bit-or-less image with filter type 0 before each.
std::string filtered_rows(const std::vector<uint8_t>& packed, size_t row_bytes, uint32_t rows) {
  std::string out;
  for (uint32_t y = 0; y < rows; ++y) {
    out.push_back('\0');
    out.append(reinterpret_cast<const char*>(packed.data()) + y * row_bytes, row_bytes);
  }
  return out;
}

TEST(DecodeIdentity, PngLayouts) {
  const uint32_t w = 13;
  const uint32_t h = 7;
  // 8- and 16-bit gray, BGR, BGRA through OpenCV's encoder.
  for (const int depth : {CV_8U, CV_16U}) {
    for (const int channels : {1, 3, 4}) {
      cv::Mat m(static_cast<int>(h), static_cast<int>(w), CV_MAKETYPE(depth, channels));
      cv::randu(m, 0, depth == CV_8U ? 256 : 65536);
      expect_identical("OpenCV PNG " + std::to_string(channels) + "x" + std::to_string(depth),
                       encode(m, ".png"));
    }
  }
  // Layouts OpenCV does not write, by hand: sub-byte gray, gray + alpha, palettes, tRNS.
  const auto bytes = samples(static_cast<int>(w), static_cast<int>(h), 8);
  for (const int depth : {1, 2, 4}) {
    const size_t row = (w * depth + 7) / 8;
    expect_identical(
        "gray " + std::to_string(depth) + "-bit",
        kt::png_file(w, h, static_cast<uint8_t>(depth), 0, filtered_rows(bytes, row, h)));
  }
  expect_identical("gray + alpha 8", kt::png_file(w, h, 8, 4, filtered_rows(bytes, w * 2, h)));
  expect_identical("gray + alpha 16", kt::png_file(w, h, 16, 4, filtered_rows(bytes, w * 4, h)));
  std::string palette;
  for (int i = 0; i < 256; ++i) palette += std::string{char(i), char(255 - i), char(i * 7)};
  const std::string plte = kt::png_chunk("PLTE", palette);
  expect_identical("palette", kt::png_file(w, h, 8, 3, filtered_rows(bytes, w, h), plte));
  expect_identical("palette + tRNS",
                   kt::png_file(w, h, 8, 3, filtered_rows(bytes, w, h),
                                plte + kt::png_chunk("tRNS", std::string(16, '\x80'))));
  expect_identical("RGB + tRNS",
                   kt::png_file(w, h, 8, 2, filtered_rows(bytes, w * 3, h),
                                kt::png_chunk("tRNS", std::string("\0\1\0\2\0\3", 6))));
  expect_identical("gray + tRNS", kt::png_file(w, h, 8, 0, filtered_rows(bytes, w, h),
                                               kt::png_chunk("tRNS", std::string("\0\1", 2))));
  // Adam7: the seven passes' scanlines one after the other.
  constexpr uint32_t kPasses[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                      {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
  std::string interlaced;
  for (const auto& p : kPasses) {
    for (uint32_t y = p[1]; y < h; y += p[3]) {
      if (p[0] >= w) break;
      interlaced.push_back('\0');
      for (uint32_t x = p[0]; x < w; x += p[2]) {
        interlaced.append(reinterpret_cast<const char*>(bytes.data()) + (y * w + x) * 3, 3);
      }
    }
  }
  expect_identical("interlaced RGB", kt::png_file(w, h, 8, 2, interlaced, "", 1));
}

TEST(DecodeIdentity, BmpLayouts) {
  const int w = 11;
  const int h = 6;
  const auto bytes = samples(w, h, 4);
  auto rows = [&](int bpp) {
    const size_t stride = (static_cast<size_t>(w) * bpp + 31) / 32 * 4;
    return std::string(reinterpret_cast<const char*>(bytes.data()), stride * h);
  };
  for (const uint16_t bpp : {1, 4, 8, 16, 24, 32}) {
    expect_identical("BMP " + std::to_string(bpp) + " bits", kt::bmp_file(w, h, bpp, 0, rows(bpp)));
  }
  expect_identical("BMP top-down", kt::bmp_file(w, -h, 24, 0, rows(24)));
  expect_identical("BMP 32 bits with bit fields", kt::bmp_file(w, h, 32, 3, rows(32)));
  // A colour palette (the helper writes a gray one) decodes to three channels.
  std::string colour = kt::bmp_file(w, h, 8, 0, rows(8));
  colour[54 + 4 * 7 + 1] = '\x01';
  expect_identical("BMP 8 bits, colour palette", colour);
  // BITMAPCOREHEADER: OpenCV 4.6 decodes it to one gray channel.
  const std::string core_dib = kt::little_endian(12, 4) + kt::little_endian(w, 2) +
                               kt::little_endian(h, 2) + kt::little_endian(1, 2) +
                               kt::little_endian(24, 2);
  expect_identical("BMP core header", "BM" + kt::little_endian(26 + 36 * h, 4) +
                                          kt::little_endian(0, 4) + kt::little_endian(26, 4) +
                                          core_dib + rows(24));
  // RLE8: a run, an absolute block, end-of-line, per row; end-of-bitmap.
  std::string rle;
  for (int y = 0; y < h; ++y) {
    rle += std::string{4, static_cast<char>(y)};
    rle += std::string{0, 7, 1, 2, 3, 4, 5, 6, 7, 0};
    rle += std::string{0, 0};
  }
  expect_identical("BMP RLE8", kt::bmp_file(w, h, 8, 1, rle + std::string{0, 1}));
  std::string rle4;
  for (int y = 0; y < h; ++y) rle4 += std::string{static_cast<char>(w), '\x12', 0, 0};
  expect_identical("BMP RLE4", kt::bmp_file(w, h, 4, 2, rle4 + std::string{0, 1}));
}

TEST(DecodeIdentity, WebpLayouts) {
  cv::Mat bgr(37, 29, CV_8UC3);
  cv::Mat bgra(37, 29, CV_8UC4);
  cv::randu(bgr, 0, 256);
  cv::randu(bgra, 0, 256);
  expect_identical("WebP lossy", encode(bgr, ".webp", {cv::IMWRITE_WEBP_QUALITY, 80}));
  expect_identical("WebP lossless", encode(bgr, ".webp", {cv::IMWRITE_WEBP_QUALITY, 101}));
  expect_identical("WebP lossless + alpha", encode(bgra, ".webp", {cv::IMWRITE_WEBP_QUALITY, 101}));
  const std::string lossy_alpha = encode(bgra, ".webp", {cv::IMWRITE_WEBP_QUALITY, 80});
  ASSERT_EQ(lossy_alpha.substr(12, 4), "VP8X");
  expect_identical("WebP lossy + alpha", lossy_alpha);
}

}  // namespace
}  // namespace kdeserve::models
