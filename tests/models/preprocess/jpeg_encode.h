#pragma once
// JPEG encoding with libjpeg for tests and bench/decode_bench.cpp, for the layouts OpenCV 4.6
// cannot write: 4:4:4 sampling, CMYK, non-interleaved scans, optimised Huffman tables.

// clang-format off
#include <cstddef>
#include <cstdio>  // jpeglib.h needs size_t and FILE first
#include <jpeglib.h>
// clang-format on

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace kdeserve::testing {

struct JpegEncodeOptions {
  int quality = 90;
  bool progressive = false;
  /// 4:4:4 (every component at full resolution) instead of libjpeg's 4:2:0 default.
  bool full_chroma = false;
  /// Huffman tables fitted to the image (jpegtran -optimize).
  bool optimize = false;
  /// One scan per component (a sequential multi-scan file).
  bool separate_scans = false;
};

/// Encodes `samples` (height × width × components, interleaved; components 1: gray, 3: RGB,
/// 4: CMYK) as a JPEG. Throws std::runtime_error when libjpeg fails.
inline std::string encode_jpeg(const uint8_t* samples, int width, int height, int components,
                               const JpegEncodeOptions& options = {}) {
  jpeg_compress_struct cinfo{};
  jpeg_error_mgr jerr{};
  cinfo.err = jpeg_std_error(&jerr);
  // libjpeg's default error_exit exits the process; an encoding error is a test bug anyway.
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = static_cast<JDIMENSION>(width);
  cinfo.image_height = static_cast<JDIMENSION>(height);
  cinfo.input_components = components;
  cinfo.in_color_space = components == 1 ? JCS_GRAYSCALE : components == 3 ? JCS_RGB : JCS_CMYK;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, options.quality, TRUE);
  cinfo.optimize_coding = options.optimize ? TRUE : FALSE;
  if (options.full_chroma) {
    for (int c = 0; c < cinfo.num_components; ++c) {
      cinfo.comp_info[c].h_samp_factor = 1;
      cinfo.comp_info[c].v_samp_factor = 1;
    }
  }
  jpeg_scan_info scans[4];
  if (options.progressive) {
    jpeg_simple_progression(&cinfo);
  } else if (options.separate_scans) {
    for (int c = 0; c < cinfo.num_components; ++c) {
      scans[c] = jpeg_scan_info{1, {c, 0, 0, 0}, 0, 63, 0, 0};
    }
    cinfo.scan_info = scans;
    cinfo.num_scans = cinfo.num_components;
  }
  jpeg_start_compress(&cinfo, TRUE);
  const auto stride = static_cast<size_t>(width) * static_cast<size_t>(components);
  while (cinfo.next_scanline < cinfo.image_height) {
    auto* row = const_cast<JSAMPLE*>(samples + cinfo.next_scanline * stride);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::string out(reinterpret_cast<const char*>(buffer), size);
  jpeg_destroy_compress(&cinfo);
  std::free(buffer);
  if (out.empty()) throw std::runtime_error("encode_jpeg: libjpeg wrote nothing");
  return out;
}

}  // namespace kdeserve::testing
