// Decoding cost bounds (issue 10): the hostile inputs, built in code, are refused before decoding
// with precise messages; data that ends before the image does is an error.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <functional>
#include <iterator>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <vector>

#include "models/preprocess/image.h"
#include "tests/models/preprocess/hostile_images.h"
#include "tests/models/preprocess/jpeg_encode.h"
#include "tests/models/preprocess/shared_images.h"
#include "tests/support/shared_data.h"

namespace kdeserve::models {
namespace {

namespace kt = kdeserve::testing;


// The message of the c10::Error `fn` throws; a test failure when it throws none.
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  ADD_FAILURE() << "expected a c10::Error";
  return "";
}

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

std::string encode(const cv::Mat& image, const std::string& ext,
                   const std::vector<int>& params = {}) {
  std::vector<uchar> buffer;
  EXPECT_TRUE(cv::imencode(ext, image, buffer, params));
  return std::string(buffer.begin(), buffer.end());
}

// Deterministic noise, so that JPEG scans are far above their lower bound.
cv::Mat noise(int rows, int cols, int channels) {
  cv::Mat m(rows, cols, CV_8UC(channels));
  cv::randu(m, 0, 256);
  return m;
}

// ---------------------------------------------------------------------------------------------
// The three hostile inputs of issue 10, exactly, with the default limits.

TEST(DecodeLimits, HostilePngRgba16IsRefusedBeforeDecoding) {
  const std::string png = kt::hostile_png_rgba16_zeros();
  EXPECT_LT(png.size(), 320'000u);
  const std::string msg = error_of([&] { decode_image(png); });
  EXPECT_HAS(msg, "PNG of 6324x6324 with 4 channels of 16 bits needs 439922736 bytes");
  EXPECT_HAS(msg, "above the limit of 364000000 bytes (max_decoded_bytes)");
}

TEST(DecodeLimits, HostileJpegWithATinyScanIsRefusedBeforeDecoding) {
  cv::setRNGSeed(10);
  const std::string small = encode(noise(16, 16, 3), ".jpg");
  const std::string jpeg = kt::with_declared_jpeg_size(small, 6000, 6000);
  EXPECT_LT(jpeg.size(), 1000u);
  // 4:2:0: 750 × 750 luma blocks and 375 × 375 per chroma component, 2 bits each.
  const std::string msg = error_of([&] { decode_image(jpeg); });
  EXPECT_HAS(msg, "JPEG is truncated: scan 1 has");
  EXPECT_HAS(msg, "but its 843750 blocks of 8x8 samples (6000x6000 pixels) need at least 210938");
}

TEST(DecodeLimits, HostileBmpRle8WithoutPixelsIsRefusedBeforeDecoding) {
  const std::string bmp = kt::hostile_bmp_rle8_no_pixels();
  EXPECT_EQ(bmp.size(), 1080u);
  EXPECT_HAS(error_of([&] { decode_image(bmp); }),
             "BMP (RLE8) is truncated: its codes reach end-of-bitmap after covering 0 of its "
             "6000x6000 = 36000000 pixels");
}

// ---------------------------------------------------------------------------------------------
// JPEG data that ends inside a scan: libjpeg warns and fills grey; that is an error now.

TEST(DecodeLimits, JpegScanEndingEarlyIsAnError) {
  KDESERVE_SHARED_OR_SKIP(rocket, "data/photos/skimage/rocket.jpg");
  const std::string jpeg = read_bytes(rocket);
  const std::string eoi("\xFF\xD9", 2);
  for (const double keep : {0.5, 0.9, 0.99}) {
    SCOPED_TRACE(keep);
    // Far above the 2-bit-per-block bound: only decoding can find the scan short.
    const std::string cut = jpeg.substr(0, static_cast<size_t>(keep * jpeg.size())) + eoi;
    EXPECT_HAS(error_of([&] { decode_image(cut); }),
               "JPEG is truncated: its data ends before the image does (Corrupt JPEG data: "
               "premature end of data segment)");
  }
  cv::setRNGSeed(11);
  const std::string small = encode(noise(48, 64, 3), ".jpg");
  const std::string cut = small.substr(0, small.size() * 3 / 4) + eoi;
  EXPECT_HAS(error_of([&] { decode_image(cut); }), "premature end of data segment");
  // The existing truncated sample (no EOI at all) stays refused, before decoding.
  KDESERVE_SHARED_OR_SKIP(truncated, "data/photos/skimage/truncated.jpg");
  EXPECT_HAS(error_of([&] { decode_image(read_bytes(truncated)); }),
             "JPEG is truncated: segment 0xC4 at byte 395 runs past the end of the data");
}

// ---------------------------------------------------------------------------------------------
// max_decoded_bytes: ImageHeader::decoded_bytes for each layout, and the boundary.

// decode_image() passes at exactly decoded_bytes and refuses one byte less, before decoding.
void expect_decoded_bytes(const std::string& bytes, int64_t expected) {
  const ImageHeader header = read_image_header(bytes);
  EXPECT_EQ(header.decoded_bytes, expected);
  EXPECT_EQ(decode_image(bytes, DecodeOptions().max_decoded_bytes(expected)).size(0),
            header.height);
  EXPECT_HAS(
      error_of([&] { decode_image(bytes, DecodeOptions().max_decoded_bytes(expected - 1)); }),
      "bytes of image buffers to decode, above the limit of " + std::to_string(expected - 1));
}

TEST(DecodeLimits, DecodedBytesPerLayoutAndTheBoundary) {
  const int w = 70;
  const int h = 50;
  const int64_t pixels = w * h;
  std::vector<uint8_t> rgb(static_cast<size_t>(pixels) * 3, 100);
  kt::JpegEncodeOptions baseline;
  // A JPEG decodes straight into the RGB result.
  expect_decoded_bytes(kt::encode_jpeg(rgb.data(), w, h, 3, baseline), pixels * 3);
  // Progressive 4:2:0: luma 9 × 7 blocks padded to 2 × 2 MCUs (10 × 8), chroma 5 × 4 each,
  // 128 bytes of coefficients per block.
  kt::JpegEncodeOptions progressive;
  progressive.progressive = true;
  expect_decoded_bytes(kt::encode_jpeg(rgb.data(), w, h, 3, progressive),
                       pixels * 3 + (10 * 8 + 2 * 5 * 4) * 128);
  kt::JpegEncodeOptions full = progressive;
  full.full_chroma = true;
  expect_decoded_bytes(kt::encode_jpeg(rgb.data(), w, h, 3, full), pixels * 3 + 3 * 9 * 7 * 128);
  kt::JpegEncodeOptions separate;
  separate.separate_scans = true;
  separate.full_chroma = true;
  expect_decoded_bytes(kt::encode_jpeg(rgb.data(), w, h, 3, separate),
                       pixels * 3 + 3 * 9 * 7 * 128);
  // PNG, BMP, WebP: OpenCV's image, then the RGB result beside it.
  cv::Mat rgba16(h, w, CV_16UC4, cv::Scalar(1000, 2000, 3000, 4000));
  expect_decoded_bytes(encode(rgba16, ".png"), pixels * (8 + 3));
  cv::Mat gray(h, w, CV_8UC1, cv::Scalar(7));
  expect_decoded_bytes(encode(gray, ".png"), pixels * (1 + 3));
  expect_decoded_bytes(kt::bmp_file(w, h, 8, 0, std::string(72 * h, '\x05')), pixels * (1 + 3));
  cv::Mat bgr(h, w, CV_8UC3, cv::Scalar(1, 2, 3));
  expect_decoded_bytes(encode(bgr, ".bmp"), pixels * (3 + 3));
  expect_decoded_bytes(encode(bgr, ".webp", {cv::IMWRITE_WEBP_QUALITY, 80}), pixels * (3 + 3));
  // Lossless WebP: ARGB pixels and transform images in libwebp (5 bytes per pixel).
  expect_decoded_bytes(encode(bgr, ".webp", {cv::IMWRITE_WEBP_QUALITY, 101}), pixels * (3 + 5));
  cv::Mat bgra(h, w, CV_8UC4, cv::Scalar(1, 2, 3, 4));
  expect_decoded_bytes(encode(bgra, ".webp", {cv::IMWRITE_WEBP_QUALITY, 101}), pixels * (4 + 5));
}

TEST(DecodeLimits, DefaultsAdmitEveryEightBitLayoutAtFortyMegapixels) {
  // Headers only: 7744 × 5165 = 39,997,760 pixels.
  const int64_t pixels = 7744LL * 5165;
  std::vector<uint8_t> tiny(16 * 16 * 3, 9);
  kt::JpegEncodeOptions full;
  full.progressive = true;
  full.full_chroma = true;
  const std::string jpeg444 =
      kt::with_declared_jpeg_size(kt::encode_jpeg(tiny.data(), 16, 16, 3, full), 7744, 5165);
  const ImageHeader header = read_image_header(jpeg444);
  EXPECT_EQ(header.decoded_bytes, pixels * 3 + 3 * 968LL * 646 * 128);
  EXPECT_LE(header.decoded_bytes, DecodeOptions().max_decoded_bytes());
  EXPECT_LE(read_image_header(kt::png_signature_and_ihdr(7744, 5165, 16, 2)).decoded_bytes,
            DecodeOptions().max_decoded_bytes());
  // The hostile PNG's layout fits up to 33 megapixels, 5752 × 5752.
  EXPECT_EQ(read_image_header(kt::png_signature_and_ihdr(5752, 5752, 16, 6)).decoded_bytes,
            5752LL * 5752 * 11);
  EXPECT_LE(5752LL * 5752 * 11, DecodeOptions().max_decoded_bytes());
  EXPECT_GT(5753LL * 5753 * 11, DecodeOptions().max_decoded_bytes());
  // The worst block padding of a 40-megapixel progressive 4:4:4 JPEG.
  const std::string tall =
      kt::with_declared_jpeg_size(kt::encode_jpeg(tiny.data(), 16, 16, 3, full), 617, 64829);
  EXPECT_LE(read_image_header(tall).decoded_bytes, DecodeOptions().max_decoded_bytes());
}

TEST(DecodeLimits, TensorInputsAreBoundedToo) {
  const at::Tensor image = at::zeros({20, 30, 4}, at::kByte);
  EXPECT_EQ(to_rgb(image, DecodeOptions().max_decoded_bytes(20 * 30 * 3)).size(2), 3);
  EXPECT_HAS(error_of([&] { to_rgb(image, DecodeOptions().max_decoded_bytes(20 * 30 * 3 - 1)); }),
             "an RGB image tensor of 30x20 needs 1800 bytes");
  EXPECT_HAS(error_of([&] { to_rgb(image, DecodeOptions().max_decoded_bytes(0)); }),
             "max_decoded_bytes must be positive");
}

// ---------------------------------------------------------------------------------------------
// Lower bounds on the data: at the bound the check passes, one byte below it refuses.

// A gray JPEG at its minimum size: 1-bit DC and AC codes (DC difference 0, EOB), 2 bits per
// block, so width/8 · height/8 blocks fill exactly (blocks / 4) zero bytes.
std::string minimal_gray_jpeg(uint16_t width, uint16_t height, size_t data_bytes) {
  auto segment = [](uint8_t marker, const std::string& body) {
    const auto n = static_cast<uint16_t>(body.size() + 2);
    return std::string{'\xFF', static_cast<char>(marker), static_cast<char>(n >> 8),
                       static_cast<char>(n & 0xFF)} +
           body;
  };
  const std::string dqt = std::string(1, '\0') + std::string(64, '\x01');
  const std::string sof = std::string{8,
                                      static_cast<char>(height >> 8),
                                      static_cast<char>(height & 0xFF),
                                      static_cast<char>(width >> 8),
                                      static_cast<char>(width & 0xFF),
                                      1,
                                      1,
                                      0x11,
                                      0};
  auto one_code = [](uint8_t table, uint8_t symbol) {  // BITS: one code of length 1
    return std::string(1, static_cast<char>(table)) + std::string(1, '\x01') +
           std::string(15, '\0') + std::string(1, static_cast<char>(symbol));
  };
  const std::string sos = std::string{1, 1, 0x00, 0, 63, 0};
  return std::string("\xFF\xD8", 2) + segment(0xDB, dqt) + segment(0xC0, sof) +
         segment(0xC4, one_code(0x00, 0x00)) + segment(0xC4, one_code(0x10, 0x00)) +
         segment(0xDA, sos) + std::string(data_bytes, '\0') + std::string("\xFF\xD9", 2);
}

TEST(DecodeLimits, JpegLowerBoundIsTight) {
  // 64 × 40: 8 × 5 = 40 blocks, 80 bits, 10 bytes.
  const at::Tensor rgb = decode_image(minimal_gray_jpeg(64, 40, 10));
  EXPECT_TRUE(rgb.eq(128).all().item<bool>());
  EXPECT_HAS(error_of([&] { decode_image(minimal_gray_jpeg(64, 40, 9)); }),
             "JPEG is truncated: scan 1 has 9 bytes of entropy-coded data, but its 40 blocks of "
             "8x8 samples (64x40 pixels) need at least 10 (2 bits per block)");
  // The same image declared 6000 × 6000 with the default limits.
  EXPECT_HAS(error_of([&] { decode_image(minimal_gray_jpeg(6000, 6000, 10)); }),
             "need at least 140625 (2 bits per block)");
  // Progressive DC scans need 1 bit per block; AC scans are not bounded.
  kt::JpegEncodeOptions progressive;
  progressive.progressive = true;
  std::vector<uint8_t> flat(16 * 16 * 3, 200);
  const std::string big =
      kt::with_declared_jpeg_size(kt::encode_jpeg(flat.data(), 16, 16, 3, progressive), 4000, 4000);
  EXPECT_HAS(error_of([&] { decode_image(big); }), "(1 bits per block)");
}

TEST(DecodeLimits, JpegStructureChecks) {
  std::vector<uint8_t> rgb(40 * 24 * 3, 77);
  kt::JpegEncodeOptions separate;
  separate.separate_scans = true;
  const std::string three_scans = kt::encode_jpeg(rgb.data(), 40, 24, 3, separate);
  // Drop the last scan (its SOS up to EOI): component 3 is never coded.
  const size_t last_sos = three_scans.rfind(std::string("\xFF\xDA", 2));
  const std::string two_scans = three_scans.substr(0, last_sos) + std::string("\xFF\xD9", 2);
  EXPECT_HAS(error_of([&] { decode_image(two_scans); }),
             "JPEG is truncated: component 3 of 3 has no scan before the EOI marker");
  // The last scan repeated before EOI: component 3 in 32 scans decodes, in 33 does not.
  std::string many = three_scans.substr(0, three_scans.size() - 2);
  const std::string scan = many.substr(last_sos);
  for (int i = 1; i < 32; ++i) many += scan;
  EXPECT_EQ(decode_image(many + "\xFF\xD9").size(1), 40);
  EXPECT_HAS(error_of([&] { decode_image(many + scan + "\xFF\xD9"); }),
             "JPEG component 3 is in more than 32 scans");
  // Modes libjpeg-turbo 2.1 cannot decode, or whose data cannot be bounded.
  cv::setRNGSeed(12);
  std::string jpeg = encode(noise(16, 16, 3), ".jpg");
  const size_t sof = jpeg.find(std::string("\xFF\xC0", 2));
  ASSERT_NE(sof, std::string::npos);
  std::string arithmetic = jpeg;
  arithmetic[sof + 1] = '\xC9';
  EXPECT_HAS(error_of([&] { decode_image(arithmetic); }),
             "arithmetic-coded JPEG (SOF9) is not supported");
  std::string twelve_bit = jpeg;
  twelve_bit[sof + 4] = 12;
  EXPECT_HAS(error_of([&] { decode_image(twelve_bit); }), "JPEG sample precision 12");
  std::string lossless = jpeg;
  lossless[sof + 1] = '\xC3';
  EXPECT_HAS(error_of([&] { decode_image(lossless); }), "lossless JPEG (SOF3) is not supported");
  const std::string sof_segment = jpeg.substr(sof, 2 + 17);
  const std::string two_frames = jpeg.substr(0, sof) + sof_segment + jpeg.substr(sof);
  EXPECT_HAS(error_of([&] { decode_image(two_frames); }), "JPEG has a second frame header");
}

TEST(DecodeLimits, PngLowerBound) {
  // 100 × 100 RGB: 100 scanlines of 1 + 300 bytes = 30100, ceil(30100 / 1032) = 30.
  const std::string head = kt::png_signature_and_ihdr(100, 100, 8, 2);
  const std::string end = kt::png_chunk("IEND", "");
  EXPECT_HAS(
      error_of([&] { decode_image(head + kt::png_chunk("IDAT", std::string(29, 'x')) + end); }),
      "PNG is truncated: its image data (IDAT) has 29 bytes, but 100x100 pixels of 24 "
      "bits filter to 30100 bytes, which deflate cannot store in fewer than 30");
  // 30 bytes pass the bound (split over two IDAT chunks); libpng then finds them corrupt.
  EXPECT_HAS(error_of([&] {
               decode_image(head + kt::png_chunk("IDAT", std::string(12, 'x')) +
                            kt::png_chunk("IDAT", std::string(18, 'x')) + end);
             }),
             "PNG data is corrupt or truncated: the decoder rejected it");
  // Valid streams at deflate's best ratio pass, interlaced or not.
  for (const uint8_t interlace : {0, 1}) {
    SCOPED_TRACE(int{interlace});
    // 301 × 203 gray+alpha 16-bit zeros; Adam7 passes sized as the PNG spec's 8.2.
    constexpr uint32_t kPasses[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                        {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
    uint64_t filtered = 0;
    for (const auto& p : kPasses) {
      const uint64_t cols = interlace ? (301 - p[0] + p[2] - 1) / p[2] : 301;
      const uint64_t rows = interlace ? (203 - p[1] + p[3] - 1) / p[3] : 203;
      filtered += rows * (1 + cols * 4);
      if (!interlace) break;
    }
    const std::string png = kt::png_signature_and_ihdr(301, 203, 16, 4, interlace) +
                            kt::png_chunk("IDAT", kt::zlib_zeros(filtered)) + end;
    EXPECT_LT(png.size(), 200 + filtered / 1032);  // headers, 257 literals at most
    EXPECT_TRUE(decode_image(png).eq(0).all().item<bool>());
  }
}

TEST(DecodeLimits, BmpLowerBounds) {
  // 10 × 5 at 24 bits: rows of 30 bytes padded to 32; 4 · 32 + 30 = 158 bytes at least.
  EXPECT_HAS(error_of([&] { decode_image(kt::bmp_file(10, 5, 24, 0, std::string(157, 'a'))); }),
             "BMP is truncated: its pixel data has 157 bytes, but 10x5 pixels of 24 bits need 158");
  EXPECT_EQ(decode_image(kt::bmp_file(10, 5, 24, 0, std::string(160, 'a'))).size(1), 10);
  std::string bad_offset = kt::bmp_file(10, 5, 24, 0, std::string(160, 'a'));
  bad_offset[10] = '\x7F';
  bad_offset[11] = '\x7F';
  EXPECT_HAS(error_of([&] { decode_image(bad_offset); }), "BMP pixel data offset 32639 is past");
  // RLE8 rows of end-of-line codes only cover every pixel (Pillow pads them), as do deltas.
  std::string eols;
  for (int y = 0; y < 5; ++y) eols += std::string{1, 3, 0, 0};
  EXPECT_EQ(decode_image(kt::bmp_file(10, 5, 8, 1, eols + std::string{0, 1})).size(0), 5);
  EXPECT_HAS(error_of([&] {
               decode_image(kt::bmp_file(10, 5, 8, 1, eols.substr(0, 12) + std::string{0, 1}));
             }),
             "its codes reach end-of-bitmap after covering 30 of its 10x5 = 50 pixels");
  EXPECT_HAS(error_of([&] {
               decode_image(kt::bmp_file(10, 5, 8, 1, std::string{10, 3, 0, 0, 10}));
             }),
             "BMP (RLE8) is truncated: its codes end after covering 10 of");
  // An absolute block cut short; RLE4 counts pixels, two per byte.
  EXPECT_HAS(error_of([&] {
               decode_image(kt::bmp_file(10, 5, 8, 1, std::string{0, 10, 1, 2, 3}));
             }),
             "covering 0 of its 10x5");
  EXPECT_HAS(error_of([&] {
               decode_image(kt::bmp_file(10, 5, 4, 2, std::string{0, 9, 1, 2, 3}));
             }),
             "BMP (RLE4) is truncated");
}

}  // namespace
}  // namespace kdeserve::models
