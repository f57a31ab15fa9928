// check_image(): the limits on declared pixels and decoded bytes, and the checks that the encoded
// data can hold the pixels its header declares, all before any pixel is decoded. A file that
// fails a lower bound below cannot be a complete image of its declared size in its format: the
// decoders would fill the missing pixels (libjpeg with grey, OpenCV's BMP reader with palette
// entry 0) at the full cost of the declared size, where Pillow says "image file is truncated".
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "models/preprocess/image.h"
#include "models/preprocess/image_detail.h"

namespace kdeserve::models {
namespace image_detail {

void check_pixel_count(int64_t width, int64_t height, int64_t max_pixels, const char* what) {
  TORCH_CHECK(max_pixels > 0, "max_pixels must be positive, got ", max_pixels);
  int64_t pixels = 0;
  const bool overflow = __builtin_mul_overflow(width, height, &pixels);
  TORCH_CHECK(!overflow && pixels <= max_pixels, what, " is ", width, "x", height, " = ",
              overflow ? std::string("more than 2^63") : std::to_string(pixels),
              " pixels, above the limit of ", max_pixels, " pixels");
}

void check_decoded_bytes(int64_t bytes, int64_t max_decoded_bytes, const std::string& what) {
  TORCH_CHECK(max_decoded_bytes > 0, "max_decoded_bytes must be positive, got ", max_decoded_bytes);
  TORCH_CHECK(bytes <= max_decoded_bytes, what, " needs ", bytes,
              " bytes of image buffers to decode, above the limit of ", max_decoded_bytes,
              " bytes (max_decoded_bytes)");
}

}  // namespace image_detail

namespace {

using image_detail::ByteReader;

// Every scan costs libjpeg a pass over its components' coefficients, however little data it
// has (an AC scan can skip 32,767 blocks per EOBRUN code), so a 14-byte scan repeated makes
// seconds of work (bench/RESULTS.md: 3.2 ms per luma scan of a 4-megapixel image). Each
// component may appear in 32 scans, which bounds the input passes to 32 per block. Encoders
// stay far below it: libjpeg's progression uses 6 scans for luma and 4 for each chroma, and
// mozjpeg's scan search picks among 23 luma candidates; nvImageCodec refuses more than 256
// scans in all (NVIMGCODEC_MAX_JPEG_SCANS, after the cure53 libjpeg-turbo report).
constexpr int kMaxJpegScansPerComponent = 32;

// JPEG (ITU-T T.81). Bounds per scan, on the bytes between its SOS header and the next marker
// other than RSTn (stuffed zero bytes and restart markers included, so the count is never below
// the coded bits / 8):
//  - sequential Huffman (SOF0, SOF1): every 8×8 block of the scan's components is coded, as a
//    DC difference category (F.1.2.1) then AC codes up to an EOB or the 63rd coefficient
//    (F.1.2.2), each a Huffman code of 1 to 16 bits (B.2.4.2): at least 2 bits per block;
//  - progressive DC scans (SOF2, Ss = 0): a first scan codes each block's DC difference with a
//    Huffman code of at least 1 bit, a refinement scan sends exactly 1 bit per block (G.1.2.1);
//  - progressive AC scans: one EOBRUN code can skip up to 32,767 blocks (G.1.2.2), no bound.
// Blocks per component: ceil(ceil(X·H/Hmax)/8) × ceil(ceil(Y·V/Vmax)/8) (A.1.1); an
// interleaved scan codes at least these (plus MCU padding). Every component must appear in a
// scan (a progressive one in a DC first scan, G.1.1.1.1), else libjpeg leaves it zero, and the
// data must end with EOI (B.2.1).
void check_jpeg_data(const ByteReader& r) {
  const image_detail::JpegFrame frame = image_detail::parse_jpeg_frame(r);
  const size_t count = frame.components.size();
  std::vector<bool> covered(count, false);
  std::vector<int> scans_of(count, 0);
  int scans = 0;
  size_t pos = frame.end;
  while (true) {
    uint8_t marker = 0;
    TORCH_CHECK(image_detail::jpeg_next_marker(r, &pos, &marker),
                "JPEG is truncated: its scan data does not end with an EOI marker");
    if (marker == image_detail::kJpegEoi) {
      break;
    }
    if (image_detail::jpeg_marker_is_standalone(marker)) {
      continue;
    }
    uint32_t length = 0;
    TORCH_CHECK(r.be16(pos, &length) && length >= 2 && r.has(pos, length),
                "JPEG is truncated: segment ", image_detail::hex_byte(marker), " at byte ", pos,
                " runs past the end of the data");
    TORCH_CHECK(!image_detail::jpeg_marker_is_sof(marker), "JPEG has a second frame header (",
                image_detail::hex_byte(marker), ") at byte ", pos);
    if (marker != image_detail::kJpegSos) {
      pos += length;
      continue;
    }
    ++scans;
    const size_t in_scan = length >= 3 ? r.u8(pos + 2) : 0;
    TORCH_CHECK(in_scan >= 1 && in_scan <= count && length >= 6 + 2 * in_scan, "JPEG scan header ",
                scans, " is malformed");
    const uint8_t spectral_start = r.u8(pos + 3 + 2 * in_scan);
    const uint8_t refinement = r.u8(pos + 5 + 2 * in_scan) >> 4;
    int64_t blocks = 0;
    for (size_t i = 0; i < in_scan; ++i) {
      const uint8_t id = r.u8(pos + 3 + 2 * i);
      size_t c = 0;
      while (c < count && frame.components[c].id != id) ++c;
      TORCH_CHECK(c < count, "JPEG scan ", scans, " refers to component ", int{id},
                  ", which the frame header does not declare");
      TORCH_CHECK(++scans_of[c] <= kMaxJpegScansPerComponent, "JPEG component ", c + 1,
                  " is in more than ", kMaxJpegScansPerComponent, " scans");
      blocks += frame.blocks_across(c) * frame.blocks_down(c);
      if (!frame.progressive() || (spectral_start == 0 && refinement == 0)) covered[c] = true;
    }
    const int64_t bits_per_block = !frame.progressive() ? 2 : spectral_start == 0 ? 1 : 0;
    const int64_t need = (blocks * bits_per_block + 7) / 8;
    const size_t data = pos + length;
    const size_t end = image_detail::jpeg_entropy_end(r, data);
    TORCH_CHECK(end < r.size(), "JPEG is truncated: its scan data does not end with an EOI marker");
    TORCH_CHECK(static_cast<int64_t>(end - data) >= need, "JPEG is truncated: scan ", scans,
                " has ", end - data, " bytes of entropy-coded data, but its ", blocks,
                " blocks of 8x8 samples (", frame.width, "x", frame.height,
                " pixels) need at least ", need, " (", bits_per_block, " bits per block)");
    pos = end;
  }
  for (size_t c = 0; c < count; ++c) {
    TORCH_CHECK(covered[c], "JPEG is truncated: component ", c + 1, " of ", count, " has no ",
                frame.progressive() ? "DC scan" : "scan", " before the EOI marker");
  }
}

// PNG (ISO/IEC 15948): the zlib stream in the IDAT chunks inflates to the filtered image, each
// scanline a filter-type byte then ceil(width · bits per pixel / 8) bytes, for each of the 7
// Adam7 passes when interlaced (empty passes have no scanlines) (PNG spec 7.2, 8.2). Deflate
// (RFC 1951) codes every literal or length with a prefix code of at least 1 bit, and a match of
// at most 258 bytes (length symbol 285) needs a length code and a distance code, so 2 bits
// produce at most 258 bytes: the data is at least 1/1032 of the filtered size (zlib's FAQ
// gives 1032:1 as deflate's limit). Header and checksum bytes only add to it.
void check_png_data(const ByteReader& r, const ImageHeader& header) {
  int64_t idat = 0;
  for (size_t pos = 8; r.has(pos, 8);) {
    uint32_t length = 0;
    r.be32(pos, &length);
    const size_t available = std::min<size_t>(length, r.size() - pos - 8);
    if (r.starts_with(pos + 4, "IDAT")) idat += static_cast<int64_t>(available);
    if (r.starts_with(pos + 4, "IEND") || available < length) break;
    pos += 12 + static_cast<size_t>(length);
  }
  const int64_t depth = r.u8(24);
  const int color = r.u8(25);
  const int64_t samples = color == 2 ? 3 : color == 4 ? 2 : color == 6 ? 4 : 1;
  const int64_t bits_per_pixel = samples * depth;
  const bool interlaced = r.u8(28) == 1;
  // Adam7 passes: first column and row, column and row steps.
  constexpr int64_t kPasses[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                     {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
  int64_t filtered = 0;
  for (const auto& p : kPasses) {
    const int64_t x0 = interlaced ? p[0] : 0;
    const int64_t y0 = interlaced ? p[1] : 0;
    const int64_t dx = interlaced ? p[2] : 1;
    const int64_t dy = interlaced ? p[3] : 1;
    const int64_t cols = header.width > x0 ? (header.width - x0 + dx - 1) / dx : 0;
    const int64_t rows = header.height > y0 ? (header.height - y0 + dy - 1) / dy : 0;
    if (cols > 0 && rows > 0) filtered += rows * (1 + (cols * bits_per_pixel + 7) / 8);
    if (!interlaced) break;
  }
  const int64_t need = (filtered + 1031) / 1032;
  TORCH_CHECK(idat >= need, "PNG is truncated: its image data (IDAT) has ", idat, " bytes, but ",
              header.width, "x", header.height, " pixels of ", bits_per_pixel, " bits filter to ",
              filtered, " bytes, which deflate cannot store in fewer than ", need,
              " (at most 1032:1)");
}

// BMP (Microsoft's BITMAPINFOHEADER and "Bitmap Compression" documentation). Uncompressed rows
// are padded to 4 bytes and follow each other from bfOffBits: every row but the last takes its
// whole stride, the last at least its pixels. RLE8/RLE4 codes are walked, counting pixels as
// Pillow's BmpRleDecoder does: a run or an absolute block covers its pixels (a run clipped at
// the end of its row), end-of-line pads the row, a delta skips right and down; the data must
// cover width · height pixels before end-of-bitmap or its own end, as Pillow requires ("not
// enough image data"), while OpenCV would fill the rest with palette entry 0.
void check_bmp_data(const ByteReader& r, const ImageHeader& header) {
  uint32_t offset = 0;
  uint32_t dib_size = 0;
  r.le32(10, &offset);
  r.le32(14, &dib_size);
  TORCH_CHECK(offset <= r.size(), "BMP pixel data offset ", offset,
              " is past the end of the data (", r.size(), " bytes)");
  uint32_t bpp = 0;
  uint32_t compression = 0;
  if (dib_size == 12) {
    r.le16(24, &bpp);
  } else {
    r.le16(28, &bpp);
    r.le32(30, &compression);
  }
  const int64_t width = header.width;
  const int64_t total = width * header.height;  // within max_pixels, checked before
  const auto available = static_cast<int64_t>(r.size() - offset);
  if (compression != 1 && compression != 2) {
    const int64_t stride = (width * bpp + 31) / 32 * 4;
    const int64_t need = stride * (header.height - 1) + (width * bpp + 7) / 8;
    TORCH_CHECK(available >= need, "BMP is truncated: its pixel data has ", available,
                " bytes, but ", width, "x", header.height, " pixels of ", bpp, " bits need ", need);
    return;
  }
  const bool rle4 = compression == 2;
  int64_t covered = 0;
  size_t pos = offset;
  bool end_of_bitmap = false;
  bool cut_short = false;
  while (covered < total && !end_of_bitmap && !cut_short && r.has(pos, 2)) {
    const int64_t n = r.u8(pos);
    const int64_t code = r.u8(pos + 1);
    pos += 2;
    if (n > 0) {
      covered += std::min(n, width - covered % width);
    } else if (code == 0) {
      covered += (width - covered % width) % width;
    } else if (code == 1) {
      end_of_bitmap = true;
    } else if (code == 2) {
      cut_short = !r.has(pos, 2);
      if (!cut_short) covered += r.u8(pos) + static_cast<int64_t>(r.u8(pos + 1)) * width;
      pos += 2;
    } else {
      const size_t bytes = rle4 ? static_cast<size_t>(code + 1) / 2 : static_cast<size_t>(code);
      cut_short = !r.has(pos, bytes);
      if (!cut_short) covered += code;
      pos += bytes + (bytes & 1U);  // absolute runs are padded to 16 bits
    }
  }
  TORCH_CHECK(covered >= total, "BMP (", rle4 ? "RLE4" : "RLE8", ") is truncated: its codes ",
              end_of_bitmap ? "reach end-of-bitmap" : "end", " after covering ", covered,
              " of its ", width, "x", header.height, " = ", total, " pixels");
}

}  // namespace

ImageHeader check_image(std::string_view bytes, const DecodeOptions& options) {
  const ImageHeader header = read_image_header(bytes);
  const char* name = image_format_name(header.format);
  image_detail::check_pixel_count(header.width, header.height, options.max_pixels(), name);
  image_detail::check_decoded_bytes(header.decoded_bytes, options.max_decoded_bytes(),
                                    std::string(name) + " of " + std::to_string(header.width) +
                                        "x" + std::to_string(header.height) + " with " +
                                        std::to_string(header.channels) + " channels of " +
                                        std::to_string(8 * header.bytes_per_sample) + " bits");
  const ByteReader r(bytes);
  switch (header.format) {
    case ImageFormat::kJpeg:
      check_jpeg_data(r);
      break;
    case ImageFormat::kPng:
      check_png_data(r, header);
      break;
    case ImageFormat::kBmp:
      check_bmp_data(r, header);
      break;
    case ImageFormat::kWebp:
      // No lower bound exists: a lossless (VP8L) prefix code with a single symbol takes zero
      // bits per pixel (RFC 9649, "simple code length code"), so a constant image of any size
      // fits in a few dozen bytes, and lossy VP8's boolean coder (RFC 6386) spends a small
      // fraction of a bit on a probable decision. libwebp refuses data that ends early
      // (VP8_STATUS_NOT_ENOUGH_DATA); max_decoded_bytes bounds the rest.
      break;
  }
  return header;
}

}  // namespace kdeserve::models
