#pragma once
// Hostile encoded images built in code, for the decode-limit tests (decode_limits_test.cpp) and
// bench/decode_bench.cpp: each is small on the wire and declares far more pixels, or far more
// decoded bytes, than its size suggests (issue 10).

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace kdeserve::testing {

inline uint32_t png_crc32(const std::string& data) {
  uint32_t table[256];
  for (uint32_t n = 0; n < 256; ++n) {
    uint32_t c = n;
    for (int k = 0; k < 8; ++k) c = (c & 1U) != 0 ? 0xEDB88320U ^ (c >> 1) : c >> 1;
    table[n] = c;
  }
  uint32_t crc = 0xFFFFFFFFU;
  for (const char ch : data) crc = table[(crc ^ static_cast<uint8_t>(ch)) & 0xFFU] ^ (crc >> 8);
  return ~crc;
}

inline std::string little_endian(uint32_t v, int bytes) {
  std::string s;
  for (int i = 0; i < bytes; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xFFU));
  return s;
}

inline std::string big_endian32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

/// A PNG chunk: length, type, payload, CRC-32 of type and payload.
inline std::string png_chunk(const std::string& type, const std::string& payload) {
  return big_endian32(static_cast<uint32_t>(payload.size())) + type + payload +
         big_endian32(png_crc32(type + payload));
}

/// The PNG signature and an IHDR chunk (deflate, adaptive filters, no interlace unless asked).
inline std::string png_signature_and_ihdr(uint32_t width, uint32_t height, uint8_t bit_depth,
                                          uint8_t color_type, uint8_t interlace = 0) {
  const std::string ihdr = big_endian32(width) + big_endian32(height) +
                           std::string{static_cast<char>(bit_depth), static_cast<char>(color_type),
                                       0, 0, static_cast<char>(interlace)};
  return std::string("\x89PNG\r\n\x1A\n", 8) + png_chunk("IHDR", ihdr);
}

/// A zlib stream of `count` zero bytes at deflate's best ratio, without compressing anything:
/// one dynamic-Huffman block whose literal/length code gives length 258 (symbol 285) one bit,
/// literal 0 and end-of-block two bits, and whose distance code is distance 1 in one bit. After
/// one literal 0, every 258 zero bytes cost a 1-bit length and a 1-bit distance, both 0: the
/// body is zero bytes, 1032 output bytes per input byte (the ratio's maximum, RFC 1951).
inline std::string zlib_zeros(uint64_t count) {
  if (count == 0) throw std::invalid_argument("zlib_zeros: count must be positive");
  std::string out = "\x78\xDA";  // CMF (deflate, 32K window) and FLG (level 3, FCHECK)
  uint64_t bitbuf = 0;
  int nbits = 0;
  auto put = [&](uint32_t value, int bits) {  // LSB first
    bitbuf |= static_cast<uint64_t>(value) << nbits;
    nbits += bits;
    while (nbits >= 8) {
      out.push_back(static_cast<char>(bitbuf & 0xFFU));
      bitbuf >>= 8;
      nbits -= 8;
    }
  };
  // Huffman codes are sent most significant bit first.
  auto put_code = [&](uint32_t code, int bits) {
    uint32_t reversed = 0;
    for (int i = 0; i < bits; ++i) reversed |= ((code >> i) & 1U) << (bits - 1 - i);
    put(reversed, bits);
  };
  put(1, 1);   // BFINAL
  put(2, 2);   // BTYPE dynamic
  put(29, 5);  // HLIT: 286 literal/length codes
  put(0, 5);   // HDIST: 1 distance code
  put(14, 4);  // HCLEN: 18 code length codes (up to symbol 1 in the permuted order)
  // Code length code lengths in the order 16 17 18 0 8 7 9 6 10 5 11 4 12 3 13 2 14 1:
  // symbol 18 (zero run) 1 bit, symbols 1 and 2 two bits each.
  const int order_lengths[18] = {0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2};
  for (const int len : order_lengths) put(static_cast<uint32_t>(len), 3);
  // Canonical code length codes: 18 → 0, 1 → 10, 2 → 11.
  auto length_2 = [&] { put_code(3, 2); };
  auto length_1 = [&] { put_code(2, 2); };
  auto zeros = [&](int run) {  // 11..138 zero lengths
    put_code(0, 1);
    put(static_cast<uint32_t>(run - 11), 7);
  };
  length_2();  // literal 0
  zeros(138);
  zeros(117);  // literals 1..255
  length_2();  // end of block (256)
  zeros(28);   // lengths 257..284
  length_1();  // length 258 (285)
  length_1();  // distance 1
  // Canonical literal/length codes: 285 → 0, literal 0 → 10, 256 → 11; distance 1 → 0.
  put_code(2, 2);  // the first zero, a literal
  const uint64_t matches = (count - 1) / 258;
  const uint64_t literals = (count - 1) % 258;
  out.reserve(out.size() + matches / 4 + 16);
  for (uint64_t i = 0; i < matches; ++i) put(0, 2);
  for (uint64_t i = 0; i < literals; ++i) put_code(2, 2);
  put_code(3, 2);  // end of block
  if (nbits > 0) put(0, 8 - nbits);
  // Adler-32 of zeros: a stays 1, b grows by 1 per byte.
  const auto b = static_cast<uint32_t>(count % 65521U);
  return out + big_endian32((b << 16) | 1U);
}

/// A zlib stream of `raw` in stored (uncompressed) deflate blocks.
inline std::string zlib_stored(const std::string& raw) {
  std::string out = "\x78\x01";
  size_t pos = 0;
  do {
    const size_t n = std::min<size_t>(raw.size() - pos, 65535);
    const bool last = pos + n == raw.size();
    out.push_back(static_cast<char>(last ? 1 : 0));
    out += little_endian(static_cast<uint32_t>(n), 2) + little_endian(~n & 0xFFFFU, 2);
    out.append(raw, pos, n);
    pos += n;
  } while (pos < raw.size());
  uint32_t a = 1;
  uint32_t b = 0;
  for (const char ch : raw) {
    a = (a + static_cast<uint8_t>(ch)) % 65521U;
    b = (b + a) % 65521U;
  }
  return out + big_endian32((b << 16) | a);
}

/// A PNG of the given IHDR whose IDAT holds `filtered` (scanlines with their filter bytes,
/// Adam7 passes one after the other when interlaced) in stored blocks; `chunks` (PLTE, tRNS, …)
/// go before it.
inline std::string png_file(uint32_t width, uint32_t height, uint8_t bit_depth, uint8_t color_type,
                            const std::string& filtered, const std::string& chunks = "",
                            uint8_t interlace = 0) {
  return png_signature_and_ihdr(width, height, bit_depth, color_type, interlace) + chunks +
         png_chunk("IDAT", zlib_stored(filtered)) + png_chunk("IEND", "");
}

/// The first hostile input of issue 10: a PNG of side × side RGBA with 16-bit samples, all zero,
/// at deflate's best ratio (6324 × 6324: 311 kB that decode to 320 MB of samples).
inline std::string hostile_png_rgba16_zeros(uint32_t side = 6324) {
  const uint64_t raw = static_cast<uint64_t>(side) * (1 + static_cast<uint64_t>(side) * 8);
  return png_signature_and_ihdr(side, side, 16, 6) + png_chunk("IDAT", zlib_zeros(raw)) +
         png_chunk("IEND", "");
}

/// `jpeg` with the size in its first frame header (SOFn) replaced: the scans stay those of the
/// original, smaller image. Throws std::invalid_argument when no frame header is found.
inline std::string with_declared_jpeg_size(std::string jpeg, uint16_t width, uint16_t height) {
  size_t pos = 2;
  while (pos + 4 <= jpeg.size() && static_cast<uint8_t>(jpeg[pos]) == 0xFF) {
    const auto marker = static_cast<uint8_t>(jpeg[pos + 1]);
    const size_t length = (static_cast<size_t>(static_cast<uint8_t>(jpeg[pos + 2])) << 8) |
                          static_cast<uint8_t>(jpeg[pos + 3]);
    if (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC) {
      if (pos + 9 > jpeg.size()) break;
      jpeg[pos + 5] = static_cast<char>(height >> 8);
      jpeg[pos + 6] = static_cast<char>(height & 0xFF);
      jpeg[pos + 7] = static_cast<char>(width >> 8);
      jpeg[pos + 8] = static_cast<char>(width & 0xFF);
      return jpeg;
    }
    pos += 2 + length;
  }
  throw std::invalid_argument("with_declared_jpeg_size: no frame header found");
}

/// A BMP with a BITMAPINFOHEADER: `bpp` bits per pixel, `compression` (0 BI_RGB, 1 BI_RLE8,
/// 2 BI_RLE4, 3 BI_BITFIELDS), a grey palette of 2^bpp entries when bpp ≤ 8, then `pixels`.
inline std::string bmp_file(int32_t width, int32_t height, uint16_t bpp, uint32_t compression,
                            const std::string& pixels) {
  std::string palette;
  if (bpp <= 8) {
    for (uint32_t i = 0; i < (1U << bpp); ++i) {
      const auto v = static_cast<char>(i * 255 / ((1U << bpp) - 1));
      palette += std::string{v, v, v, 0};
    }
  } else if (compression == 3) {
    palette = little_endian(0xFF0000, 4) + little_endian(0xFF00, 4) + little_endian(0xFF, 4);
  }
  const std::string dib = little_endian(40, 4) + little_endian(static_cast<uint32_t>(width), 4) +
                          little_endian(static_cast<uint32_t>(height), 4) + little_endian(1, 2) +
                          little_endian(bpp, 2) + little_endian(compression, 4) +
                          little_endian(static_cast<uint32_t>(pixels.size()), 4) +
                          little_endian(2835, 4) + little_endian(2835, 4) + little_endian(0, 4) +
                          little_endian(0, 4);
  const auto offset = static_cast<uint32_t>(14 + dib.size() + palette.size());
  return "BM" + little_endian(offset + static_cast<uint32_t>(pixels.size()), 4) +
         little_endian(0, 4) + little_endian(offset, 4) + dib + palette + pixels;
}

/// The third hostile input of issue 10: an 8-bit RLE BMP declaring width × height whose pixel
/// data is only the end-of-bitmap escape (00 01): 1,080 bytes for 6000 × 6000.
inline std::string hostile_bmp_rle8_no_pixels(int32_t width = 6000, int32_t height = 6000) {
  return bmp_file(width, height, 8, 1, std::string("\x00\x01", 2));
}

}  // namespace kdeserve::testing
