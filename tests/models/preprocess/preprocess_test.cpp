#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "models/preprocess/image.h"
#include "models/preprocess/labels.h"
#include "models/preprocess/resize.h"
#include "models/weights/safetensors.h"
#include "tests/models/preprocess/shared_images.h"
#include "tests/support/shared_data.h"

namespace kdeserve::models {
namespace {

// Declares `var` as the path of shared/`relative`, or skips the test when that file is absent.

struct DiffStats {
  double mean = 0.0;
  double max = 0.0;
};

DiffStats diff_stats(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  const at::Tensor d = (a.to(at::kDouble) - b.to(at::kDouble)).abs();
  return {d.mean().item<double>(), d.max().item<double>()};
}

// Expects `fn` to throw a c10::Error whose message contains `needle`.
void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected a c10::Error containing \"" << needle << "\"";
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

uint32_t crc32(const std::string& data) {
  uint32_t crc = 0xFFFFFFFFU;
  for (const char ch : data) {
    crc ^= static_cast<uint8_t>(ch);
    for (int i = 0; i < 8; ++i) {
      crc = (crc >> 1) ^ (0xEDB88320U & (0U - (crc & 1U)));
    }
  }
  return ~crc;
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

std::string png_chunk(const std::string& type, const std::string& payload) {
  return be32(static_cast<uint32_t>(payload.size())) + type + payload + be32(crc32(type + payload));
}

// A well-formed PNG header (valid CRCs) declaring width × height 8-bit RGB, with no pixel data.
std::string png_header_only(uint32_t width, uint32_t height) {
  const std::string ihdr = be32(width) + be32(height) + std::string("\x08\x02\x00\x00\x00", 5);
  return std::string("\x89PNG\r\n\x1A\n", 8) + png_chunk("IHDR", ihdr) + png_chunk("IEND", "");
}

std::string encode(const cv::Mat& image, const std::string& ext,
                   const std::vector<int>& params = {}) {
  std::vector<uchar> buffer;
  EXPECT_TRUE(cv::imencode(ext, image, buffer, params));
  return std::string(buffer.begin(), buffer.end());
}

// A 5 × 7 pattern with `channels` channels (OpenCV order: BGR or BGRA) and depth `depth`.
cv::Mat pattern(int channels, int depth = CV_8U) {
  cv::Mat m(5, 7, CV_MAKETYPE(depth, channels));
  for (int y = 0; y < m.rows; ++y) {
    for (int x = 0; x < m.cols; ++x) {
      for (int c = 0; c < channels; ++c) {
        const int v = (y * 37 + x * 11 + c * 71) % 256;
        if (depth == CV_8U) {
          m.ptr<uint8_t>(y)[x * channels + c] = static_cast<uint8_t>(v);
        } else {
          m.ptr<uint16_t>(y)[x * channels + c] = static_cast<uint16_t>(v * 256 + 77);
        }
      }
    }
  }
  return m;
}

// The expected RGB uint8 [5, 7, 3] of pattern(channels): BGR(A) → RGB, gray replicated.
at::Tensor pattern_rgb(int channels) {
  at::Tensor out = at::empty({5, 7, 3}, at::kByte);
  auto acc = out.accessor<uint8_t, 3>();
  for (int y = 0; y < 5; ++y) {
    for (int x = 0; x < 7; ++x) {
      for (int c = 0; c < 3; ++c) {
        const int source = channels == 1 ? 0 : 2 - c;
        acc[y][x][c] = static_cast<uint8_t>((y * 37 + x * 11 + source * 71) % 256);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Geometry of the transform.

TEST(PreprocessGeometry, ShorterSideAndPythonRoundedCrop) {
  using Size2 = std::pair<int64_t, int64_t>;
  EXPECT_EQ(resized_shorter_side(452, 680, 248), Size2(248, 373));
  EXPECT_EQ(resized_shorter_side(330, 500, 248), Size2(248, 375));
  EXPECT_EQ(resized_shorter_side(280, 183, 248), Size2(379, 248));
  EXPECT_EQ(resized_shorter_side(100, 100, 248), Size2(248, 248));
  EXPECT_EQ(center_crop_offset(373, 224), 74);  // 74.5 → 74 (C round() would give 75)
  EXPECT_EQ(center_crop_offset(375, 224), 76);  // 75.5 → 76
  EXPECT_EQ(center_crop_offset(379, 224), 78);  // 77.5 → 78
  EXPECT_EQ(center_crop_offset(248, 224), 12);
  EXPECT_EQ(center_crop_offset(224, 224), 0);
  EXPECT_THROW(center_crop_offset(200, 224), c10::Error);
  EXPECT_EQ(PreprocessOptions::for_crop(224).resize_size(), 248);
  EXPECT_EQ(PreprocessOptions::for_crop(384).resize_size(), 426);
  EXPECT_EQ(PreprocessOptions::for_crop(384).crop_size(), 384);
  EXPECT_EQ(PreprocessOptions().resize_size(), 248);
  EXPECT_EQ(PreprocessOptions().crop_size(), 224);
}

TEST(PreprocessResize, IdentityConstantsAndShapes) {
  const at::Tensor image = at::randint(0, 256, {9, 13, 3}, at::kByte);
  EXPECT_TRUE(resize_bicubic_pil(image, 9, 13).equal(image));
  const at::Tensor flat = at::full({17, 23, 3}, 201, at::kByte);
  for (const auto& [h, w] : std::vector<std::pair<int64_t, int64_t>>{{5, 7}, {40, 3}, {17, 50}}) {
    const at::Tensor out = resize_bicubic_pil(flat, h, w);
    EXPECT_EQ(out.sizes(), (std::vector<int64_t>{h, w, 3}));
    EXPECT_TRUE(out.eq(201).all().item<bool>()) << h << "x" << w;
  }
  // Non-contiguous input gives the same result as its contiguous copy.
  const at::Tensor chw = at::randint(0, 256, {3, 31, 29}, at::kByte);
  EXPECT_TRUE(resize_bicubic_pil(chw.permute({1, 2, 0}), 12, 40)
                  .equal(resize_bicubic_pil(chw.permute({1, 2, 0}).contiguous(), 12, 40)));
  // A window of the output equals the same window of the full output.
  const at::Tensor photo = at::randint(0, 256, {57, 83, 3}, at::kByte);
  for (const auto& [h, w] :
       std::vector<std::pair<int64_t, int64_t>>{{30, 44}, {120, 90}, {57, 200}}) {
    EXPECT_TRUE(
        resize_bicubic_pil_crop(photo, h, w, 5, 7, h - 9, w - 11)
            .equal(resize_bicubic_pil(photo, h, w).narrow(0, 5, h - 9).narrow(1, 7, w - 11)))
        << h << "x" << w;
  }
  EXPECT_TRUE(resize_bicubic_pil_crop(photo, 57, 83, 3, 4, 10, 20)
                  .equal(photo.narrow(0, 3, 10).narrow(1, 4, 20)));
  EXPECT_THROW(resize_bicubic_pil_crop(photo, 30, 44, 25, 0, 10, 10), c10::Error);
  EXPECT_THROW(resize_bicubic_pil(image.to(at::kFloat), 4, 4), c10::Error);
  EXPECT_THROW(resize_bicubic_pil(image, 0, 4), c10::Error);
  EXPECT_THROW(resize_bicubic_pil(at::empty({0, 4, 3}, at::kByte), 4, 4), c10::Error);
}

// ---------------------------------------------------------------------------------------------
// Against the upstream transform (fixtures/t2t_preprocess.safetensors, Pillow 9.4).

struct FixtureCase {
  const char* name;
  const char* image;
};

TEST(PreprocessFixture, MatchesPillowTransform) {
  KDESERVE_SHARED_OR_SKIP(fixture_path, "fixtures/t2t_preprocess.safetensors");
  const SafetensorsFile fixture = SafetensorsFile::open(fixture_path);
  const std::vector<FixtureCase> cases = {
      {"dog", "data/photos/t2t-vit/dog.png"},
      {"gray", "data/imagenet/images/n02096051_Airedale.JPEG"},
      {"gray_small", "data/imagenet/images/n03804744_nail.JPEG"},
  };
  for (const FixtureCase& c : cases) {
    SCOPED_TRACE(c.name);
    KDESERVE_SHARED_OR_SKIP(image_path, c.image);
    const std::string bytes = read_bytes(image_path);
    const at::Tensor rgb = decode_image(bytes);
    const at::Tensor cropped = resize_and_center_crop(rgb);
    const at::Tensor normalised = preprocess_imagenet(bytes);
    ASSERT_EQ(cropped.sizes(), (std::vector<int64_t>{224, 224, 3}));
    ASSERT_EQ(normalised.sizes(), (std::vector<int64_t>{3, 224, 224}));
    ASSERT_EQ(normalised.scalar_type(), at::kFloat);
    EXPECT_TRUE(normalised.equal(normalize_image(cropped)));
    EXPECT_TRUE(normalised.equal(preprocess_imagenet(rgb)));

    const DiffStats u8 =
        diff_stats(cropped, fixture.get(std::string(c.name) + "_resized_cropped_u8"));
    const DiffStats norm = diff_stats(normalised, fixture.get(c.name));
    std::cout << "[preprocess] " << c.name << ": uint8 after resize+crop mean|diff| = " << u8.mean
              << " max|diff| = " << u8.max << " levels; normalised mean|diff| = " << norm.mean
              << " max|diff| = " << norm.max << "\n";
    EXPECT_LE(norm.mean, 0.01);
    EXPECT_LE(norm.max, 0.1);
    // The resampler is Pillow-exact; a PNG decodes identically everywhere, so dog must match
    // exactly. JPEG pixels depend on the libjpeg build (identical to Pillow's here).
    EXPECT_LE(u8.max, 1.0);
    if (std::string(c.name) == "dog") {
      EXPECT_EQ(u8.max, 0.0);
      EXPECT_EQ(norm.max, 0.0);
    }
  }
}

TEST(PreprocessFixture, GrayscaleDecodeMatchesPillowLuma) {
  KDESERVE_SHARED_OR_SKIP(fixture_path, "fixtures/t2t_preprocess.safetensors");
  const SafetensorsFile fixture = SafetensorsFile::open(fixture_path);
  const std::vector<FixtureCase> cases = {
      {"gray_decoded", "data/imagenet/images/n02096051_Airedale.JPEG"},
      {"gray_small_decoded", "data/imagenet/images/n03804744_nail.JPEG"},
  };
  for (const FixtureCase& c : cases) {
    SCOPED_TRACE(c.name);
    KDESERVE_SHARED_OR_SKIP(image_path, c.image);
    const at::Tensor rgb = decode_image(read_bytes(image_path));
    const at::Tensor luma = rgb.select(2, 0);
    EXPECT_TRUE(rgb.select(2, 1).equal(luma) && rgb.select(2, 2).equal(luma))
        << "grayscale must be replicated to 3 equal channels";
    const DiffStats d = diff_stats(luma, fixture.get(c.name));
    std::cout << "[preprocess] " << c.name << " (OpenCV libjpeg vs Pillow libjpeg-turbo): "
              << "mean|diff| = " << d.mean << " max|diff| = " << d.max << " levels\n";
    EXPECT_LE(d.mean, 0.5);
    EXPECT_LE(d.max, 4.0);
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding: formats, channels, tensors.

TEST(PreprocessDecode, FormatsAndChannelLayouts) {
  struct Case {
    const char* what;
    cv::Mat image;
    std::string ext;
    std::vector<int> params;
    int channels;
  };
  const std::vector<Case> cases = {
      {"RGB PNG", pattern(3), ".png", {}, 3},
      {"RGBA PNG (alpha dropped)", pattern(4), ".png", {}, 4},
      {"gray PNG (replicated)", pattern(1), ".png", {}, 1},
      {"16-bit RGB PNG (high byte)", pattern(3, CV_16U), ".png", {}, 3},
      {"16-bit gray PNG (high byte)", pattern(1, CV_16U), ".png", {}, 1},
      {"BMP", pattern(3), ".bmp", {}, 3},
      {"lossless WebP", pattern(3), ".webp", {cv::IMWRITE_WEBP_QUALITY, 101}, 3},
      {"lossless WebP with alpha", pattern(4), ".webp", {cv::IMWRITE_WEBP_QUALITY, 101}, 4},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string bytes = encode(c.image, c.ext, c.params);
    const ImageHeader header = read_image_header(bytes);
    EXPECT_EQ(header.width, 7);
    EXPECT_EQ(header.height, 5);
    const at::Tensor rgb = decode_image(bytes);
    ASSERT_EQ(rgb.sizes(), (std::vector<int64_t>{5, 7, 3}));
    EXPECT_EQ(rgb.scalar_type(), at::kByte);
    EXPECT_TRUE(rgb.is_contiguous());
    EXPECT_TRUE(rgb.equal(pattern_rgb(c.channels)));
  }
  // Lossy formats decode to the right size and format.
  cv::Mat big(64, 48, CV_8UC3, cv::Scalar(10, 120, 230));
  const std::string jpeg = encode(big, ".jpg");
  EXPECT_EQ(read_image_header(jpeg).format, ImageFormat::kJpeg);
  const std::string webp = encode(big, ".webp", {cv::IMWRITE_WEBP_QUALITY, 80});
  EXPECT_EQ(read_image_header(webp).format, ImageFormat::kWebp);
  for (const std::string* bytes : {&jpeg, &webp}) {
    const at::Tensor rgb = decode_image(*bytes);
    ASSERT_EQ(rgb.sizes(), (std::vector<int64_t>{64, 48, 3}));
    // BGR (10, 120, 230) → RGB (230, 120, 10), within lossy error.
    const at::Tensor mean = rgb.to(at::kFloat).mean(std::vector<int64_t>{0, 1});
    EXPECT_NEAR(mean[0].item<float>(), 230, 4);
    EXPECT_NEAR(mean[1].item<float>(), 120, 4);
    EXPECT_NEAR(mean[2].item<float>(), 10, 4);
  }
}

TEST(PreprocessDecode, TensorInputs) {
  const at::Tensor rgba = at::randint(0, 256, {6, 9, 4}, at::kByte);
  EXPECT_TRUE(to_rgb(rgba).equal(rgba.narrow(2, 0, 3)));
  const at::Tensor gray = at::randint(0, 256, {6, 9}, at::kByte);
  const at::Tensor from_gray = to_rgb(gray);
  ASSERT_EQ(from_gray.sizes(), (std::vector<int64_t>{6, 9, 3}));
  EXPECT_TRUE(from_gray.select(2, 2).equal(gray));
  EXPECT_TRUE(to_rgb(gray.unsqueeze(2)).equal(from_gray));
  const at::Tensor chw = at::randint(0, 256, {3, 6, 9}, at::kByte);
  const at::Tensor strided = to_rgb(chw.permute({1, 2, 0}));
  EXPECT_TRUE(strided.is_contiguous());
  EXPECT_TRUE(strided.equal(chw.permute({1, 2, 0})));

  expect_error([&] { to_rgb(rgba.to(at::kFloat)); }, "uint8");
  expect_error([&] { to_rgb(at::zeros({6, 9, 2}, at::kByte)); }, "1, 3 or 4 channels");
  expect_error([&] { to_rgb(at::zeros({0, 9, 3}, at::kByte)); }, "empty image");
  expect_error([&] { to_rgb(at::zeros({2, 6, 9, 3}, at::kByte)); }, "[H, W, C]");
  expect_error([&] { to_rgb(rgba, DecodeOptions().max_pixels(53)); }, "above the limit");
  expect_error([&] { preprocess_imagenet(at::zeros({2, 2, 7}, at::kByte)); }, "channels");
  // A tiny tensor is upscaled like any image.
  EXPECT_EQ(preprocess_imagenet(gray).sizes(), (std::vector<int64_t>{3, 224, 224}));
  EXPECT_EQ(preprocess_imagenet(gray, PreprocessOptions::for_crop(384)).sizes(),
            (std::vector<int64_t>{3, 384, 384}));
  // A very elongated image: only the crop window of the 248 x 24,800,000 resize is computed.
  const at::Tensor strip = at::randint(0, 256, {1, 100000, 3}, at::kByte);
  EXPECT_EQ(preprocess_imagenet(strip).sizes(), (std::vector<int64_t>{3, 224, 224}));
  expect_error(
      [] {
        preprocess_imagenet(at::zeros({1, 10'000'000, 3}, at::kByte));
      },
      "not supported");
  expect_error([&] { preprocess_imagenet(gray, PreprocessOptions().resize_size(200)); },
               "at least the crop size");
}

// ---------------------------------------------------------------------------------------------
// Bad input: always a c10::Error with a clear message, never a crash.

TEST(PreprocessDecode, RejectsBadInput) {
  expect_error([] { decode_image(""); }, "empty");
  std::mt19937 rng(1234);
  std::string noise(4096, '\0');
  for (char& ch : noise) ch = static_cast<char>(rng() & 0xFF);
  noise[0] = 'x';
  expect_error([&] { decode_image(noise); }, "unrecognised image data");
  expect_error([] { decode_image("hello, world"); }, "expected JPEG, PNG, BMP or WebP");

  // Signatures followed by garbage: a header error or the decoder's refusal.
  for (const std::string& magic :
       {std::string("\x89PNG\r\n\x1A\n", 8), std::string("\xFF\xD8\xFF", 3), std::string("BM"),
        std::string("RIFF\x10\x00\x00\x00WEBP", 12)}) {
    EXPECT_THROW(decode_image(magic), c10::Error);
    EXPECT_THROW(decode_image(magic + noise.substr(0, 100)), c10::Error);
  }

  // A well-formed PNG header claiming 100000 × 100000 is refused before any decoding.
  const std::string huge = png_header_only(100000, 100000);
  const ImageHeader header = read_image_header(huge);
  EXPECT_EQ(header.format, ImageFormat::kPng);
  EXPECT_EQ(header.width, 100000);
  expect_error([&] { decode_image(huge); }, "100000x100000 = 10000000000 pixels, above the limit");
  expect_error([&] { preprocess_imagenet(huge); }, "above the limit of 40000000 pixels");
  // The same for a JPEG frame header (SOI, SOF0 65000 × 65000, EOI).
  const std::string huge_jpeg(
      "\xFF\xD8\xFF\xC0\x00\x11\x08\xFD\xE8\xFD\xE8\x03\x01\x22\x00\x02"
      "\x11\x01\x03\x11\x01\xFF\xD9",
      23);
  expect_error([&] { decode_image(huge_jpeg); }, "above the limit");
  // A valid header with no pixel data behind it.
  expect_error([&] { decode_image(png_header_only(4, 4)); },
               "PNG is truncated: its image data (IDAT) has 0 bytes");
}

TEST(PreprocessDecode, RejectsTruncatedFiles) {
  KDESERVE_SHARED_OR_SKIP(truncated, "data/photos/skimage/truncated.jpg");
  expect_error([&] { decode_image(read_bytes(truncated)); }, "JPEG is truncated");

  // Cut inside the scan data: libjpeg would fill the rest with grey; we refuse, as Pillow does.
  KDESERVE_SHARED_OR_SKIP(rocket, "data/photos/skimage/rocket.jpg");
  const std::string jpeg = read_bytes(rocket);
  EXPECT_EQ(decode_image(jpeg).sizes(), (std::vector<int64_t>{427, 640, 3}));
  expect_error([&] { decode_image(jpeg.substr(0, jpeg.size() / 2)); }, "JPEG is truncated");
  expect_error([&] { decode_image(jpeg.substr(0, jpeg.size() - 2)); }, "EOI");

  KDESERVE_SHARED_OR_SKIP(dog, "data/photos/t2t-vit/dog.png");
  const std::string png = read_bytes(dog);
  expect_error([&] { decode_image(png.substr(0, png.size() / 2)); }, "PNG data is corrupt");
  expect_error([&] { decode_image(png, DecodeOptions().max_pixels(1000)); }, "above the limit");

  // Cut at many places and with flipped bytes: success or c10::Error, never a crash.
  std::mt19937 rng(7);
  for (const std::string* bytes : {&jpeg, &png}) {
    for (int i = 0; i < 24; ++i) {
      std::string broken = bytes->substr(0, rng() % bytes->size());
      if (i % 2 == 1 && !broken.empty()) {
        broken[rng() % broken.size()] ^= static_cast<char>(1 + rng() % 255);
      }
      try {
        const at::Tensor rgb = decode_image(broken);
        EXPECT_EQ(rgb.size(2), 3);
      } catch (const c10::Error&) {
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Every shared ImageNet sample decodes and preprocesses.

TEST(PreprocessImages, AllSharedImageNetSamples) {
  KDESERVE_SHARED_OR_SKIP(manifest_path, "data/imagenet/images/MANIFEST.tsv");
  std::ifstream manifest(manifest_path);
  std::string line;
  std::getline(manifest, line);  // header
  int count = 0;
  int gray = 0;
  while (std::getline(manifest, line)) {
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::stringstream fields(line);
    for (std::string field; std::getline(fields, field, '\t');) f.push_back(field);
    ASSERT_EQ(f.size(), 8u) << line;
    SCOPED_TRACE(f[2]);
    const std::string path = kdeserve::testing::shared_file("data/imagenet/images/" + f[2]);
    ASSERT_FALSE(path.empty()) << "listed in MANIFEST.tsv but missing: " << f[2];
    const std::string bytes = read_bytes(path);
    ASSERT_EQ(static_cast<int64_t>(bytes.size()), std::stoll(f[3]));
    const ImageHeader header = read_image_header(bytes);
    EXPECT_EQ(header.width, std::stoll(f[5]));
    EXPECT_EQ(header.height, std::stoll(f[6]));
    const at::Tensor rgb = decode_image(bytes);
    ASSERT_EQ(rgb.sizes(), (std::vector<int64_t>{std::stoll(f[6]), std::stoll(f[5]), 3}));
    if (f[7] == "1") {
      ++gray;
      EXPECT_TRUE(rgb.select(2, 0).equal(rgb.select(2, 2)));
    }
    const at::Tensor x = preprocess_imagenet(rgb);
    EXPECT_EQ(x.sizes(), (std::vector<int64_t>{3, 224, 224}));
    EXPECT_TRUE(at::isfinite(x).all().item<bool>());
    EXPECT_EQ(imagenet_class(std::stoll(f[0])).wnid, f[1]);
    ++count;
  }
  std::cout << "[preprocess] decoded and preprocessed " << count << " ImageNet samples (" << gray
            << " grayscale)\n";
  EXPECT_EQ(count, 128);
}

// ---------------------------------------------------------------------------------------------
// Labels and top-k.

TEST(ImageNetLabels, EmbeddedTable) {
  EXPECT_EQ(imagenet_class_count(), 1000);
  EXPECT_EQ(imagenet_class(0).wnid, "n01440764");
  EXPECT_EQ(imagenet_class(0).label, "tench");
  EXPECT_EQ(imagenet_class(0).synonyms, "tench, Tinca tinca");
  EXPECT_EQ(imagenet_class(207).index, 207);
  EXPECT_EQ(imagenet_class(207).wnid, "n02099601");
  EXPECT_EQ(imagenet_class(207).label, "golden retriever");
  EXPECT_EQ(imagenet_class(980).label, "volcano");
  EXPECT_EQ(imagenet_class(980).wnid, "n09472597");
  EXPECT_EQ(imagenet_class(607).synonyms, "jack-o'-lantern");
  // The source truncates some synonym lists after a comma; the trailing ", " is trimmed.
  EXPECT_EQ(imagenet_class(2).synonyms,
            "great white shark, white shark, man-eater, man-eating shark");
  EXPECT_EQ(imagenet_class(999).label, "toilet tissue");
  expect_error([] { imagenet_class(1000); }, "out of range");
  expect_error([] { imagenet_class(-1); }, "out of range");
}

TEST(ImageNetLabels, MatchesSharedClassIndex) {
  KDESERVE_SHARED_OR_SKIP(tsv_path, "data/imagenet/imagenet_class_index.tsv");
  std::ifstream tsv(tsv_path);
  std::string line;
  std::getline(tsv, line);
  int64_t n = 0;
  while (std::getline(tsv, line)) {
    std::vector<std::string> f;
    std::stringstream fields(line);
    for (std::string field; std::getline(fields, field, '\t');) f.push_back(field);
    ASSERT_GE(f.size(), 3u);
    const ImageNetClass& cls = imagenet_class(std::stoll(f[0]));
    EXPECT_EQ(cls.wnid, f[1]);
    EXPECT_EQ(cls.label, f[2]);
    ++n;
  }
  EXPECT_EQ(n, 1000);
}

TEST(ImageNetLabels, TopK) {
  at::manual_seed(3);
  at::Tensor logits = at::randn({2, 1000});
  logits[0][207] = 20.0;
  logits[0][980] = 19.0;
  logits[1][3] = 15.0;
  const std::vector<TopK> top = top_k(logits, 5);
  ASSERT_EQ(top.size(), 10u);
  EXPECT_EQ(top[0].row, 0);
  EXPECT_EQ(top[0].rank, 0);
  EXPECT_EQ(top[0].index, 207);
  EXPECT_EQ(top[0].label, "golden retriever");
  EXPECT_EQ(top[0].wnid, "n02099601");
  EXPECT_EQ(top[1].index, 980);
  EXPECT_EQ(top[1].label, "volcano");
  EXPECT_NEAR(top[0].probability / top[1].probability, std::exp(1.0), 1e-9);
  EXPECT_EQ(top[5].row, 1);
  EXPECT_EQ(top[5].index, 3);
  EXPECT_EQ(top[5].label, "tiger shark");
  const at::Tensor reference = at::softmax(logits.to(at::kDouble), 1);
  for (size_t i = 0; i < top.size(); ++i) {
    if (i % 5 != 0) {
      EXPECT_GE(top[i - 1].probability, top[i].probability);
    }
    EXPECT_NEAR(top[i].probability, reference[top[i].row][top[i].index].item<double>(), 1e-15);
    EXPECT_FLOAT_EQ(static_cast<float>(top[i].logit),
                    logits[top[i].row][top[i].index].item<float>());
  }
  // With k = C the probabilities of a row sum to 1.
  const std::vector<TopK> all = top_k(logits[1], 1000);
  double sum = 0.0;
  for (const TopK& t : all) sum += t.probability;
  EXPECT_NEAR(sum, 1.0, 1e-12);

  // Ties rank the lower index first; other class counts carry no ImageNet labels.
  const std::vector<TopK> ties = top_k(at::zeros({1, 4}), 4);
  for (int64_t r = 0; r < 4; ++r) {
    EXPECT_EQ(ties[r].index, r);
    EXPECT_DOUBLE_EQ(ties[r].probability, 0.25);
    EXPECT_TRUE(ties[r].label.empty());
  }
  expect_error([&] { top_k(logits, 0); }, "must be in [1, 1000]");
  expect_error([&] { top_k(logits, 1001); }, "must be in [1, 1000]");
  expect_error([&] { top_k(at::full({1, 10}, NAN), 1); }, "NaN");
  expect_error([&] { top_k(at::zeros({2, 3, 4}), 1); }, "[B, C]");
  expect_error([&] { top_k(at::zeros({2, 3}, at::kLong), 1); }, "floating-point");
}

}  // namespace
}  // namespace kdeserve::models
