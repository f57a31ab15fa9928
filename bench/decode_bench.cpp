// Cost of decoding client images (issue 10): time and peak RSS to reject or decode the hostile
// inputs of tests/models/preprocess/hostile_images.h, legit images at the 40-megapixel limit, and
// every image of shared/data, each through decode_image() ("after") and through the decoding
// before issue 10 ("before": cv::imdecode, an 8-bit copy of 16-bit samples, cvtColor into the
// RGB tensor, as models/preprocess/image.cpp did). Peak RSS is the process's VmHWM after
// /proc/self/clear_refs reset it, minus the RSS before the call (big buffers are mmapped and
// returned on free, so a case does not reuse the previous one's pages). One process, one thread;
// each time is the fastest of its repetitions.
//   decode_bench [--quick]   --quick: skip the 40-megapixel legit images
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
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

namespace {

namespace km = kdeserve::models;
namespace kt = kdeserve::testing;

int64_t status_kib(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(std::strlen(key)));
  }
  return -1;
}

void reset_peak_rss() {
  malloc_trim(0);
  std::ofstream("/proc/self/clear_refs") << "5";
}

struct Outcome {
  double seconds = 0;
  double peak_mib = 0;
  std::string result;
};

Outcome measure(const std::function<std::string()>& work, int reps) {
  Outcome best;
  best.seconds = 1e30;
  for (int i = 0; i < reps; ++i) {
    reset_peak_rss();
    const int64_t before = status_kib("VmRSS:");
    const auto t0 = std::chrono::steady_clock::now();
    std::string result;
    try {
      result = work();
    } catch (const c10::Error& e) {
      result = std::string("error: ") + e.what_without_backtrace();
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t peak = status_kib("VmHWM:") - before;
    best.seconds = std::min(best.seconds, s);
    best.peak_mib = std::max(best.peak_mib, static_cast<double>(peak) / 1024.0);
    best.result = result;
  }
  return best;
}

std::string decoded(const std::string& bytes) {
  const at::Tensor rgb = km::decode_image(bytes);
  return "decoded " + std::to_string(rgb.size(1)) + "x" + std::to_string(rgb.size(0));
}

// The decoding before issue 10, without its header checks (they cost nothing here).
std::string decoded_before(const std::string& bytes) {
  const cv::Mat encoded(1, static_cast<int>(bytes.size()), CV_8U, const_cast<char*>(bytes.data()));
  const cv::Mat decoded = cv::imdecode(encoded, cv::IMREAD_UNCHANGED);
  if (decoded.empty()) return "error: rejected by OpenCV";
  cv::Mat pixels = decoded;
  if (decoded.depth() == CV_16U) {
    pixels.create(decoded.rows, decoded.cols, CV_MAKETYPE(CV_8U, decoded.channels()));
    const int64_t row_len = static_cast<int64_t>(decoded.cols) * decoded.channels();
    for (int y = 0; y < decoded.rows; ++y) {
      const auto* src = decoded.ptr<uint16_t>(y);
      auto* dst = pixels.ptr<uint8_t>(y);
      for (int64_t i = 0; i < row_len; ++i) dst[i] = static_cast<uint8_t>(src[i] >> 8);
    }
  }
  const int code = pixels.channels() == 1   ? cv::COLOR_GRAY2RGB
                   : pixels.channels() == 3 ? cv::COLOR_BGR2RGB
                                            : cv::COLOR_BGRA2RGB;
  at::Tensor rgb = at::empty({pixels.rows, pixels.cols, 3}, at::kByte);
  cv::Mat out(pixels.rows, pixels.cols, CV_8UC3, rgb.data_ptr<uint8_t>());
  cv::cvtColor(pixels, out, code);
  return "decoded " + std::to_string(rgb.size(1)) + "x" + std::to_string(rgb.size(0));
}

// ImageHeader::decoded_bytes in MiB, or -1 when the header is refused.
double estimate_mib(const std::string& bytes) {
  try {
    return static_cast<double>(km::read_image_header(bytes).decoded_bytes) / (1 << 20);
  } catch (const c10::Error&) {
    return -1;
  }
}

// One row: before and after, time and peak RSS, the estimate, and what decode_image() said.
void compare(const std::string& what, const std::string& bytes, int reps) {
  const Outcome before = measure([&] { return decoded_before(bytes); }, reps);
  const Outcome after = measure([&] { return decoded(bytes); }, reps);
  std::string result = after.result.substr(0, 100);
  std::replace(result.begin(), result.end(), '\n', ' ');
  std::printf("| %s | %zu | %.1f | %.1f | %.3f | %.1f | %.1f | %s |\n", what.c_str(), bytes.size(),
              before.seconds * 1e3, before.peak_mib, after.seconds * 1e3, after.peak_mib,
              estimate_mib(bytes), result.c_str());
  std::fflush(stdout);
}

std::string encode(const cv::Mat& image, const std::string& ext, const std::vector<int>& params) {
  std::vector<uchar> buffer;
  if (!cv::imencode(ext, image, buffer, params)) throw std::runtime_error("encode failed");
  return {buffer.begin(), buffer.end()};
}

// A smooth colour picture with fine noise (so that it compresses like a photo, not a constant).
cv::Mat picture(int rows, int cols, int channels) {
  cv::Mat m(rows, cols, CV_8UC(channels));
  uint32_t state = 12345;
  for (int y = 0; y < rows; ++y) {
    auto* p = m.ptr<uint8_t>(y);
    for (int x = 0; x < cols; ++x) {
      state = state * 1664525U + 1013904223U;
      const int noise = static_cast<int>(state >> 29);
      for (int c = 0; c < channels; ++c) {
        p[x * channels + c] = static_cast<uint8_t>((x / 7 + y / 5 + 80 * c + noise) & 0xFF);
      }
    }
  }
  return m;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  mallopt(M_MMAP_THRESHOLD, 1 << 20);  // fixed: big buffers always mmapped, returned on free
  std::printf(
      "| case | bytes | before ms | before peak MiB | after ms | after peak MiB | "
      "decoded_bytes MiB | after: result |\n|---|---:|---:|---:|---:|---:|---:|---|\n");

  compare("PNG 6324² RGBA 16-bit zeros", kt::hostile_png_rgba16_zeros(), 2);
  const std::string small_jpeg = encode(picture(16, 16, 3), ".jpg", {});
  compare("JPEG SOF 6000², 16² scan", kt::with_declared_jpeg_size(small_jpeg, 6000, 6000), 3);
  compare("BMP RLE8 6000², no pixels", kt::hostile_bmp_rle8_no_pixels(), 3);
  const std::string rocket = read_file(kt::shared_file("data/photos/skimage/rocket.jpg"));
  compare("rocket.jpg cut at 1/2 + EOI", rocket.substr(0, rocket.size() / 2) + "\xFF\xD9", 3);

  // A progressive JPEG whose last scan (luma's, its 6th) is repeated: every scan is a pass over
  // the coefficients. 32 luma scans are allowed, then refused.
  const std::vector<uint8_t> flat(2000 * 2000 * 3, 90);
  kt::JpegEncodeOptions prog;
  prog.progressive = true;
  const std::string ten = kt::encode_jpeg(flat.data(), 2000, 2000, 3, prog);
  const size_t last = ten.rfind(std::string("\xFF\xDA", 2));
  const std::string scan = ten.substr(last, ten.size() - 2 - last);
  for (const int scans : {10, 36, 37, 256}) {
    std::string many = ten.substr(0, ten.size() - 2);
    for (int i = 10; i < scans; ++i) many += scan;
    compare("JPEG 2000² progressive, " + std::to_string(scans) + " scans", many + "\xFF\xD9", 2);
  }

  // Every image of shared/data: total decode time (each the fastest of 3), and the checks alone.
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::recursive_directory_iterator(kt::shared_dir() + "/data")) {
    const std::string ext = e.path().extension().string();
    if (e.is_regular_file() && (ext == ".jpg" || ext == ".JPEG" || ext == ".png")) {
      files.push_back(e.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  double before = 0;
  double after = 0;
  double checks = 0;
  int ok = 0;
  for (const auto& f : files) {
    const std::string bytes = read_file(f);
    before += measure([&] { return decoded_before(bytes); }, 3).seconds;
    const Outcome o = measure([&] { return decoded(bytes); }, 3);
    after += o.seconds;
    ok += o.result.rfind("decoded", 0) == 0 ? 1 : 0;
    const auto check = [&] {
      km::check_image(bytes);
      return std::string("checked");
    };
    checks += measure(check, 3).seconds;
  }
  std::printf("| shared/data: %zu images, total | | %.1f | | %.1f | | | %d decoded |\n",
              files.size(), before * 1e3, after * 1e3, ok);
  std::printf("| shared/data: check_image() alone | | | | %.3f | | | %.2f%% of decoding |\n",
              checks * 1e3, 100 * checks / after);

  if (quick) return 0;
  // Legit images at the 40-megapixel limit (7744 × 5165 = 39,997,760 pixels).
  const cv::Mat rgb = picture(5165, 7744, 3);
  const cv::Mat rgba = picture(5165, 7744, 4);
  struct Legit {
    const char* what;
    const cv::Mat* image;
    const char* ext;
    std::vector<int> params;
  };
  const std::vector<Legit> legit = {
      {"40 MP JPEG baseline 4:2:0", &rgb, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 90}},
      {"40 MP JPEG progressive 4:2:0", &rgb, ".jpg", {cv::IMWRITE_JPEG_PROGRESSIVE, 1}},
      {"40 MP PNG RGB 8-bit", &rgb, ".png", {cv::IMWRITE_PNG_COMPRESSION, 1}},
      {"40 MP PNG RGBA 8-bit", &rgba, ".png", {cv::IMWRITE_PNG_COMPRESSION, 1}},
      {"40 MP BMP 24-bit", &rgb, ".bmp", {}},
      {"40 MP WebP lossy", &rgb, ".webp", {cv::IMWRITE_WEBP_QUALITY, 80}},
  };
  for (const Legit& l : legit) compare(l.what, encode(*l.image, l.ext, l.params), 2);
  kt::JpegEncodeOptions full;
  full.progressive = true;
  full.full_chroma = true;
  compare("40 MP JPEG progressive 4:4:4",
          kt::encode_jpeg(rgb.ptr<uint8_t>(), rgb.cols, rgb.rows, 3, full), 2);
  // Lossless WebP is slow to encode at 40 MP: 16 MP.
  compare("16 MP WebP lossless RGB",
          encode(picture(4000, 4000, 3), ".webp", {cv::IMWRITE_WEBP_QUALITY, 101}), 2);
  return 0;
}
