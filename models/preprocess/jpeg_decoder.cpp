// JPEG decoding with libjpeg(-turbo) directly rather than through OpenCV: OpenCV's reader lets
// libjpeg print its warnings and carries on, so data that ends inside a scan ("Corrupt JPEG data:
// premature end of data segment") decodes with the rest filled grey. Here those warnings are
// errors (libjpeg-turbo's advice for applications that must not spend a full decode on a
// truncated file, CVE-2019-13960), and rows go straight into the RGB result. The colour handling
// is OpenCV's (grfmt_jpeg.cpp, IMREAD_UNCHANGED): gray for one component, RGB from libjpeg's
// YCbCr or RGB conversion for three, and OpenCV's CMYK → RGB formula for four, so pixels are
// bit-identical to cv::imdecode's.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

// clang-format off
#include <cstddef>
#include <cstdio>  // jpeglib.h needs size_t and FILE first
#include <jpeglib.h>
#include <jerror.h>
// clang-format on

#include <csetjmp>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "models/preprocess/image_detail.h"

namespace kdeserve::models::image_detail {
namespace {

struct ErrorManager {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool premature_end;
};

void on_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// msg_level −1 is a warning, ≥ 0 a trace message. A warning that the data ended early stops the
// decode; others (extraneous bytes before a marker, a bad Huffman code) keep the behaviour of
// every libjpeg user, Pillow and OpenCV included: decode on.
void on_emit_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level >= 0) return;
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  const int code = cinfo->err->msg_code;
  if (code == JWRN_HIT_MARKER || code == JWRN_JPEG_EOF) {
    err->premature_end = true;
    (*cinfo->err->format_message)(cinfo, err->message);
    std::longjmp(err->jump, 1);
  }
  cinfo->err->num_warnings++;
}

void on_output_message(j_common_ptr) {}

// The libjpeg part, with nothing but plain data in its frame: longjmp skips destructors.
// Returns false with err->message set when libjpeg fails or the image is not width × height.
bool run_libjpeg(const unsigned char* data, size_t size, int64_t width, int64_t height,
                 uint8_t* rgb, uint8_t* row, ErrorManager* err) {
  jpeg_decompress_struct cinfo;
  std::memset(&cinfo, 0, sizeof(cinfo));
  cinfo.err = jpeg_std_error(&err->pub);
  err->pub.error_exit = on_error_exit;
  err->pub.emit_message = on_emit_message;
  err->pub.output_message = on_output_message;
  err->premature_end = false;
  err->message[0] = '\0';
  if (setjmp(err->jump) != 0) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  const int components = cinfo.num_components;
  cinfo.out_color_space = components == 1 ? JCS_GRAYSCALE : components == 4 ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  if (static_cast<int64_t>(cinfo.output_width) != width ||
      static_cast<int64_t>(cinfo.output_height) != height) {
    std::snprintf(err->message, sizeof(err->message), "libjpeg decoded %ux%u", cinfo.output_width,
                  cinfo.output_height);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  const auto stride = static_cast<size_t>(width) * 3;
  while (cinfo.output_scanline < cinfo.output_height) {
    uint8_t* out = rgb + cinfo.output_scanline * stride;
    JSAMPROW target = components == 3 ? out : row;
    jpeg_read_scanlines(&cinfo, &target, 1);
    if (components == 1) {
      for (int64_t x = 0; x < width; ++x) {
        out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = row[x];
      }
    } else if (components == 4) {
      // OpenCV's icvCvt_CMYK2BGR_8u_C4C3R: each of C, M, Y scaled by K.
      for (int64_t x = 0; x < width; ++x) {
        const int k = row[4 * x + 3];
        for (int c = 0; c < 3; ++c) {
          out[3 * x + c] = static_cast<uint8_t>(k - ((255 - row[4 * x + c]) * k >> 8));
        }
      }
    }
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

}  // namespace

at::Tensor decode_jpeg(std::string_view bytes, const ImageHeader& header) {
  at::Tensor rgb = at::empty({header.height, header.width, 3}, at::kByte);
  // A row for gray (1 byte per pixel) or CMYK (4) output, converted into the result.
  std::vector<uint8_t> row(static_cast<size_t>(header.width) * 4);
  ErrorManager err;
  const bool ok =
      run_libjpeg(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), header.width,
                  header.height, rgb.data_ptr<uint8_t>(), row.data(), &err);
  TORCH_CHECK(ok || !err.premature_end, "JPEG is truncated: its data ends before the image does (",
              err.message, ")");
  TORCH_CHECK(ok, "JPEG data could not be decoded: ", err.message, " (header declares ",
              header.width, "x", header.height, ")");
  return rgb;
}

}  // namespace kdeserve::models::image_detail
