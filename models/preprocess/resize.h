#pragma once
/// Pillow-exact resampling and the geometry of the ImageNet evaluation transform (models spec
/// A.6, D.17; fixtures README §4).
///
/// resize_bicubic_pil() reproduces Pillow 9.4 `Image.resize((w, h), Image.BICUBIC)` on 8-bit
/// images bit for bit: separable convolution (horizontal pass first, then vertical), the cubic
/// kernel with a = −0.5 and support 2 widened by the downscale factor (anti-aliasing), per-output-
/// pixel normalised coefficients quantised to 22 fractional bits, and each pass rounded and
/// clipped to uint8. It is NOT OpenCV INTER_CUBIC (a = −0.75, no anti-aliasing) nor LibTorch's
/// interpolate(bicubic, antialias) (float arithmetic, no intermediate rounding).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>

namespace kdeserve::models {

/// Resizes uint8 [H, W, C] (any C ≥ 1, any strides) to a contiguous uint8
/// [out_height, out_width, C] exactly as Pillow 9.4 `Image.resize(..., BICUBIC)` does with the
/// default box. A pass whose size does not change is skipped, as Pillow does. Throws c10::Error
/// for a non-uint8 or non-3-D input, an empty input or a non-positive output size.
at::Tensor resize_bicubic_pil(const at::Tensor& image, int64_t out_height, int64_t out_width);

/// resize_bicubic_pil(image, out_height, out_width) restricted to the window
/// [top, top + crop_height) × [left, left + crop_width): uint8 [crop_height, crop_width, C], equal
/// to narrowing the full result, but only the window (and the source rows it reads) is computed
/// and allocated, so a very elongated image cannot make it allocate the whole resized image.
/// Throws c10::Error as resize_bicubic_pil() does, and when the window is not inside the output.
at::Tensor resize_bicubic_pil_crop(const at::Tensor& image, int64_t out_height, int64_t out_width,
                                   int64_t top, int64_t left, int64_t crop_height,
                                   int64_t crop_width);

/// The (height, width) after torchvision `Resize(size)` with an int size: the shorter side
/// becomes `size` and the longer side int(size · long / short), truncated (the width counts as
/// the shorter side on a tie). Throws c10::Error for non-positive arguments.
std::pair<int64_t, int64_t> resized_shorter_side(int64_t height, int64_t width, int64_t size);

/// The offset of a centred crop of `crop` pixels in `size` pixels as torchvision `CenterCrop`
/// computes it: int(round((size − crop) / 2)) with Python's round-half-to-even, so 149 → 74 (not
/// C's round() = 75). Throws c10::Error unless 1 ≤ crop ≤ size.
int64_t center_crop_offset(int64_t size, int64_t crop);

}  // namespace kdeserve::models
