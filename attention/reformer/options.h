#pragma once
/// Reformer's options (part of AttentionOptions).

#include <torch/arg.h>

#include <cstdint>

#include "attention/method.h"

namespace kdeserve::attention {

/// Options of Reformer LSH attention (Kitaev et al. 2020; peers.md §7).
struct ReformerOptions {
  /// Keys per chunk; each chunk attends to itself and the previous one.
  TORCH_ARG(int64_t, bucket_size) = 32;
  /// Hash rounds, merged by log-sum-exp.
  TORCH_ARG(int64_t, num_hashes) = 2;
  /// Use the L2-normalised queries as keys, as the reference does ("shared-QK", labelled);
  /// false uses the real keys.
  TORCH_ARG(bool, shared_qk) = false;
};

}  // namespace kdeserve::attention
