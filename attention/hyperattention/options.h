#pragma once
/// HyperAttention's options (part of AttentionOptions).

#include <torch/arg.h>

#include <cstdint>

#include "attention/method.h"

namespace kdeserve::attention {

/// Options of HyperAttention (Han et al. 2024, insuhan/hyper-attn; peers.md §3).
struct HyperAttentionOptions {
  /// b: keys per diagonal block of the sortLSH order.
  TORCH_ARG(int64_t, block_size) = 256;
  /// s: residual keys sampled uniformly with replacement.
  TORCH_ARG(int64_t, sample_size) = 256;
  /// r: hyperplanes of the sortLSH.
  TORCH_ARG(int64_t, num_projections) = 7;
  /// Below this many queries the reference computes exact attention (its default 4096).
  TORCH_ARG(int64_t, min_seq_len) = 4096;
  /// Mask the zero padding of the last block (a fix); false is the reference's unmasked padding.
  TORCH_ARG(bool, mask_padding) = true;
  TORCH_ARG(BucketOrder, bucket_order) = BucketOrder::kGray;
};

}  // namespace kdeserve::attention
