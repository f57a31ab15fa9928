#pragma once
/// WildCat's options (part of AttentionOptions).

#include <torch/arg.h>

#include <cstdint>

#include "attention/method.h"

namespace kdeserve::attention {

/// Options of WildCat (Schröder & Mackey 2026: RPCholesky coreset with Nyström weights;
/// peers.md §2).
struct WildCatOptions {
  /// r: coreset keys in all (the method's budget), split evenly over the bins; padded up to a
  /// multiple of num_bins, as the reference does. Must be >= num_bins.
  TORCH_ARG(int64_t, rank) = 96;
  /// C: contiguous key bins compressed separately (224 / 196 on T2T layers 1 / 2, 8 on BigGAN,
  /// 1 or small where keys have no locality). Keys beyond C·⌊Nk/C⌋ form a remainder bin,
  /// compressed with the same r/C pivots.
  TORCH_ARG(int64_t, num_bins) = 8;
  /// Clamp each output coordinate to the values' [min, max] (exact attention lies there).
  TORCH_ARG(bool, clamp_output) = true;
  /// A pivot whose residual (Schur complement of the Gaussian kernel, whose diagonal is 1) is
  /// <= this floor is dropped (weight 0) instead of dividing by its square root. 0 picks
  /// 1000·epsilon of the computation dtype (1.2e-4 in float32, 2.2e-13 in float64).
  TORCH_ARG(double, residual_floor) = 0;
};

}  // namespace kdeserve::attention
