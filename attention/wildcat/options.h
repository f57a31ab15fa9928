#pragma once
/// WildCat's options (part of AttentionOptions).

#include <torch/arg.h>

#include <cstdint>

#include "attention/method.h"

namespace kdeserve::attention {

/// Options of WildCat (Schröder & Mackey 2026: RPCholesky coreset with Nyström weights;
/// peers.md §2).
struct WildCatOptions {
  /// r: coreset keys in all (the method's budget), split evenly over the bins.
  TORCH_ARG(int64_t, rank) = 96;
  /// C: contiguous key bins compressed separately.
  TORCH_ARG(int64_t, num_bins) = 8;
  /// Clamp each output coordinate to the values' [min, max] (exact attention lies there).
  TORCH_ARG(bool, clamp_output) = true;
};

}  // namespace kdeserve::attention
