#include "models/preprocess/resize.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace kdeserve::models {
namespace {

// Pillow's Resample.c: 8-bit results, two guard bits for the filter's negative lobes and sums
// above 1, the rest for the coefficients.
constexpr int kPrecisionBits = 32 - 8 - 2;

// Pillow's sizes are C ints; larger ones are refused before any buffer is sized from them.
constexpr int64_t kMaxSide = std::numeric_limits<int32_t>::max();

// Pillow's bicubic_filter with a = −0.5 (Keys' kernel), support 2.
double bicubic_filter(double x) {
  constexpr double kA = -0.5;
  if (x < 0.0) {
    x = -x;
  }
  if (x < 1.0) {
    return ((kA + 2.0) * x - (kA + 3.0)) * x * x + 1;
  }
  if (x < 2.0) {
    return (((x - 5) * x + 8) * x - 4) * kA;
  }
  return 0.0;
}
constexpr double kBicubicSupport = 2.0;

// The taps of one resampling pass for the outputs [begin, begin + count), as Pillow's
// precompute_coeffs + normalize_coeffs_8bpc compute them for every output.
struct Taps {
  int64_t ksize = 0;
  // Per output pixel: first input index and tap count.
  std::vector<int64_t> first;
  std::vector<int64_t> count;
  // [count, ksize] fixed-point coefficients with kPrecisionBits fractional bits.
  std::vector<int32_t> coeffs;
};

Taps precompute_taps(int64_t in_size, int64_t out_size, int64_t begin, int64_t count) {
  // Pillow keeps the box edges as float (in0 = 0, in1 = in_size: exact for sizes < 2^24).
  const float in0 = 0.0F;
  const float in1 = static_cast<float>(in_size);
  const double scale = static_cast<double>(in1 - in0) / static_cast<double>(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double support = kBicubicSupport * filterscale;

  Taps taps;
  taps.ksize = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  taps.first.resize(count);
  taps.count.resize(count);
  taps.coeffs.assign(count * taps.ksize, 0);
  std::vector<double> k(taps.ksize);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t xx = begin + i;
    const double center = in0 + (static_cast<double>(xx) + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    // Pillow truncates (int)(v + 0.5) toward zero, then clamps; lround would differ.
    // NOLINTNEXTLINE(bugprone-incorrect-roundings)
    int64_t xmin = static_cast<int64_t>(center - support + 0.5);
    xmin = std::max<int64_t>(xmin, 0);
    // NOLINTNEXTLINE(bugprone-incorrect-roundings)
    int64_t xmax = static_cast<int64_t>(center + support + 0.5);
    xmax = std::min(xmax, in_size);
    xmax -= xmin;
    // Cannot happen for valid sizes; guards the fixed-size row below.
    TORCH_INTERNAL_ASSERT(xmax >= 0 && xmax <= taps.ksize, "resize: tap count out of range");
    double ww = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      const double w = bicubic_filter((static_cast<double>(x + xmin) - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (int64_t x = 0; x < xmax; ++x) {
      const double kx = ww != 0.0 ? k[x] / ww : k[x];
      // Pillow's normalize_coeffs_8bpc: round half away from zero, then C truncation.
      const double scaled = kx * static_cast<double>(1 << kPrecisionBits);
      taps.coeffs[i * taps.ksize + x] = static_cast<int32_t>(kx < 0 ? -0.5 + scaled : 0.5 + scaled);
    }
    taps.first[i] = xmin;
    taps.count[i] = xmax;
  }
  return taps;
}

// Pillow's clip8: drop the fraction (arithmetic shift, i.e. floor) and clamp to [0, 255].
inline uint8_t clip8(int64_t acc) {
  const int64_t v = acc >> kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

constexpr int64_t kRoundingBias = int64_t{1} << (kPrecisionBits - 1);

// Rows [row_begin, row_begin + out_rows) of `in` [rows, in_w, C] resampled along the width into
// `out` [out_rows, out_w, C]. Pillow sums in int32; int64 gives the same values without the
// undefined behaviour an overflow would have (it never overflows for these coefficients).
void horizontal_pass(const uint8_t* in, int64_t in_w, int64_t channels, int64_t row_begin,
                     int64_t out_rows, const Taps& taps, int64_t out_w, uint8_t* out) {
  for (int64_t y = 0; y < out_rows; ++y) {
    const uint8_t* src_row = in + (row_begin + y) * in_w * channels;
    uint8_t* dst_row = out + y * out_w * channels;
    for (int64_t xx = 0; xx < out_w; ++xx) {
      const int32_t* k = taps.coeffs.data() + xx * taps.ksize;
      const uint8_t* src = src_row + taps.first[xx] * channels;
      for (int64_t c = 0; c < channels; ++c) {
        int64_t acc = kRoundingBias;
        for (int64_t x = 0; x < taps.count[xx]; ++x) {
          acc += static_cast<int64_t>(src[x * channels + c]) * k[x];
        }
        dst_row[xx * channels + c] = clip8(acc);
      }
    }
  }
}

// `in` [in_rows, width, C] resampled along the height into `out` [out_h, width, C]; tap rows are
// relative to `row_offset` (the first input row the horizontal pass kept).
void vertical_pass(const uint8_t* in, int64_t width, int64_t channels, int64_t row_offset,
                   const Taps& taps, int64_t out_h, uint8_t* out) {
  const int64_t row_len = width * channels;
  std::vector<int64_t> acc(row_len);
  for (int64_t yy = 0; yy < out_h; ++yy) {
    const int32_t* k = taps.coeffs.data() + yy * taps.ksize;
    const uint8_t* src = in + (taps.first[yy] - row_offset) * row_len;
    std::fill(acc.begin(), acc.end(), kRoundingBias);
    for (int64_t y = 0; y < taps.count[yy]; ++y) {
      const uint8_t* row = src + y * row_len;
      const int64_t ky = k[y];
      for (int64_t i = 0; i < row_len; ++i) {
        acc[i] += static_cast<int64_t>(row[i]) * ky;
      }
    }
    uint8_t* dst = out + yy * row_len;
    for (int64_t i = 0; i < row_len; ++i) {
      dst[i] = clip8(acc[i]);
    }
  }
}

}  // namespace

at::Tensor resize_bicubic_pil_crop(const at::Tensor& image, int64_t out_height, int64_t out_width,
                                   int64_t top, int64_t left, int64_t crop_height,
                                   int64_t crop_width) {
  TORCH_CHECK(image.defined() && image.scalar_type() == at::kByte && image.dim() == 3,
              "resize_bicubic_pil: expected a uint8 [H, W, C] image, got ",
              image.defined() ? c10::toString(image.scalar_type()) : "an undefined tensor",
              " of shape ", image.defined() ? image.sizes() : at::IntArrayRef());
  const int64_t in_h = image.size(0);
  const int64_t in_w = image.size(1);
  const int64_t channels = image.size(2);
  TORCH_CHECK(in_h > 0 && in_w > 0 && channels > 0, "resize_bicubic_pil: empty image of shape ",
              image.sizes());
  TORCH_CHECK(out_height > 0 && out_width > 0,
              "resize_bicubic_pil: output size must be positive, got ", out_height, "x", out_width);
  TORCH_CHECK(
      in_h <= kMaxSide && in_w <= kMaxSide && out_height <= kMaxSide && out_width <= kMaxSide,
      "resize_bicubic_pil: sides above ", kMaxSide, " are not supported (", in_h, "x", in_w, " -> ",
      out_height, "x", out_width, ")");
  TORCH_CHECK(crop_height > 0 && crop_width > 0 && top >= 0 && left >= 0 &&
                  top <= out_height - crop_height && left <= out_width - crop_width,
              "resize_bicubic_pil: crop ", crop_height, "x", crop_width, " at (", top, ", ", left,
              ") is not inside the ", out_height, "x", out_width, " output");

  const at::Tensor in = image.to(at::kCPU).contiguous();
  const bool need_horizontal = out_width != in_w;
  const bool need_vertical = out_height != in_h;
  if (!need_horizontal && !need_vertical) {
    return in.narrow(0, top, crop_height)
        .narrow(1, left, crop_width)
        .clone(at::MemoryFormat::Contiguous);
  }

  // The source rows the vertical pass reads: Pillow's horizontal pass covers only these.
  Taps vert;
  int64_t row_first = top;
  int64_t rows = crop_height;
  if (need_vertical) {
    vert = precompute_taps(in_h, out_height, top, crop_height);
    row_first = vert.first.front();
    rows = vert.first.back() + vert.count.back() - row_first;
  }
  at::Tensor horizontal;
  if (need_horizontal) {
    const Taps horiz = precompute_taps(in_w, out_width, left, crop_width);
    horizontal = at::empty({rows, crop_width, channels}, in.options());
    horizontal_pass(in.data_ptr<uint8_t>(), in_w, channels, row_first, rows, horiz, crop_width,
                    horizontal.data_ptr<uint8_t>());
  } else {
    horizontal = in.narrow(0, row_first, rows).narrow(1, left, crop_width).contiguous();
  }
  if (!need_vertical) {
    return horizontal;
  }
  at::Tensor out = at::empty({crop_height, crop_width, channels}, in.options());
  vertical_pass(horizontal.data_ptr<uint8_t>(), crop_width, channels, row_first, vert, crop_height,
                out.data_ptr<uint8_t>());
  return out;
}

at::Tensor resize_bicubic_pil(const at::Tensor& image, int64_t out_height, int64_t out_width) {
  return resize_bicubic_pil_crop(image, out_height, out_width, 0, 0, out_height, out_width);
}

std::pair<int64_t, int64_t> resized_shorter_side(int64_t height, int64_t width, int64_t size) {
  TORCH_CHECK(height > 0 && width > 0 && size > 0,
              "resized_shorter_side: sizes must be positive, got image ", height, "x", width,
              " and size ", size);
  const bool width_is_short = width <= height;
  const int64_t shorter = width_is_short ? width : height;
  const int64_t longer = width_is_short ? height : width;
  // Python's int(size * long / short): an exact integer product, one correctly rounded division,
  // then truncation.
  const double ratio = static_cast<double>(size * longer) / static_cast<double>(shorter);
  const auto new_long = static_cast<int64_t>(ratio);
  return width_is_short ? std::make_pair(new_long, size) : std::make_pair(size, new_long);
}

int64_t center_crop_offset(int64_t size, int64_t crop) {
  TORCH_CHECK(crop >= 1 && crop <= size, "center_crop_offset: crop ", crop,
              " must be in [1, size = ", size, "]");
  const int64_t diff = size - crop;
  int64_t half = diff / 2;
  // (diff / 2.0) ends in .5 when diff is odd: round half to even.
  if (diff % 2 == 1 && half % 2 == 1) {
    ++half;
  }
  return half;
}

}  // namespace kdeserve::models
