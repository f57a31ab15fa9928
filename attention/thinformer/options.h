#pragma once
/// Thinformer's options (part of AttentionOptions).

#include <torch/arg.h>

#include <cstdint>

#include "attention/method.h"

namespace kdeserve::attention {

/// Options of Thinformer (Carrell et al. 2025, KH-Compress(g); peers.md §4).
struct ThinformerOptions {
  /// g: the coreset holds 2^g · √n' keys.
  TORCH_ARG(int64_t, g) = 2;
  /// Keep every stride-th key first (n' = largest power of 4 ≤ Nk), as shipped; false pads the
  /// keys to a power of 4 instead of dropping any.
  TORCH_ARG(bool, strided_prethinning) = true;
};

}  // namespace kdeserve::attention
