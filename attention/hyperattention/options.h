#pragma once
/// HyperAttention's options (part of AttentionOptions).

#include <torch/arg.h>

#include <cstdint>

#include "attention/method.h"

namespace kdeserve::attention {

/// Options of HyperAttention (Han et al. 2024, insuhan/hyper-attn @ 68b91e9b; peers.md §3).
struct HyperAttentionOptions {
  /// b: keys per diagonal block of the sortLSH order (the last block holds Nk mod b when b does
  /// not divide Nk).
  TORCH_ARG(int64_t, block_size) = 256;
  /// s: residual keys sampled uniformly with replacement; 0 gives the block-diagonal part only.
  TORCH_ARG(int64_t, sample_size) = 256;
  /// r: hyperplanes of the sortLSH.
  TORCH_ARG(int64_t, num_projections) = 7;
  /// Below this many queries the reference computes exact attention (its default 4096).
  /// attention() applies it through exact_reason() and reports why; 0 turns it off.
  TORCH_ARG(int64_t, min_seq_len) = 4096;
  /// Mask the zero padding of the last key block (a fix); false is the reference's unmasked
  /// padding: b − Nk mod b zero keys (logit 0, value 0) join the last block.
  TORCH_ARG(bool, mask_padding) = true;
  /// Drop the sampled keys that lie in the query's own block (they are already exact there).
  /// false is the reference as it runs in float32/float64 and with cuda=True: its mask only
  /// reaches the half-precision Triton kernel, so those keys are counted twice.
  TORCH_ARG(bool, deduplicate) = true;
  TORCH_ARG(BucketOrder, bucket_order) = BucketOrder::kGray;
};

}  // namespace kdeserve::attention
