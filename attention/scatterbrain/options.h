#pragma once
/// ScatterBrain's options (part of AttentionOptions).

#include <torch/arg.h>

#include <cstdint>

#include "attention/method.h"

namespace kdeserve::attention {

/// Where ScatterBrain's exact sparse support comes from.
enum class SparseSupport {
  /// The reference's positional band (fast-transformers local_dot_product): query i sees keys
  /// i − ⌊w/2⌋ … i + ⌈w/2⌉ − 1 that exist. It covers every key of every query only when
  /// ⌊w/2⌋ ≥ Nq − 1 and ⌈w/2⌉ ≥ Nk.
  kBand,
  /// Hash-sorted blocks: keys and queries sorted by their angular-LSH bucket (KDEformer's
  /// sortLSH), keys split into ⌈Nk/w⌉ balanced blocks of at most w keys, queries into as many
  /// balanced blocks; a query sees the keys of its block. w ≥ Nk is exact attention.
  kLsh,
};

/// Options of ScatterBrain (Chen et al. 2021, fly's SBLocalAttention; peers.md §5).
struct ScatterBrainOptions {
  /// w: keys of the exact sparse support per query, ≥ 1.
  TORCH_ARG(int64_t, local_window) = 32;
  /// m: random features of the low-rank part (cosh map: m/2 directions); even, ≥ 2.
  TORCH_ARG(int64_t, num_features) = 64;
  TORCH_ARG(SparseSupport, support) = SparseSupport::kBand;
  /// kLsh: hyperplanes of the angular LSH, in [1, kdeformer::kMaxProjections].
  TORCH_ARG(int64_t, num_projections) = 7;
  /// kLsh: order of the bucket codes (as KdeformerOptions::bucket_order).
  TORCH_ARG(BucketOrder, bucket_order) = BucketOrder::kGray;
};

}  // namespace kdeserve::attention
