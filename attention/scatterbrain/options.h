#pragma once
/// ScatterBrain's options (part of AttentionOptions).

#include <torch/arg.h>

#include <cstdint>

#include "attention/method.h"

namespace kdeserve::attention {

/// Where ScatterBrain's exact sparse support comes from.
enum class SparseSupport {
  kBand,  ///< The reference's positional band: query i sees keys i − ⌊w/2⌋ … i + ⌈w/2⌉ − 1.
  kLsh,   ///< Keys in the query's LSH block (hash-sorted blocks of w keys).
};

/// Options of ScatterBrain (Chen et al. 2021, fly's SBLocalAttention; peers.md §5).
struct ScatterBrainOptions {
  /// w: keys of the exact sparse support per query.
  TORCH_ARG(int64_t, local_window) = 32;
  /// Random features of the low-rank part.
  TORCH_ARG(int64_t, num_features) = 64;
  TORCH_ARG(SparseSupport, support) = SparseSupport::kBand;
  /// kLsh: hyperplanes of the angular LSH.
  TORCH_ARG(int64_t, num_projections) = 7;
};

}  // namespace kdeserve::attention
