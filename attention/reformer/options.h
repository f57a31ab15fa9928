#pragma once
/// Reformer's options (part of AttentionOptions).

#include <torch/arg.h>

#include <cstdint>

#include "attention/method.h"

namespace kdeserve::attention {

/// Options of Reformer LSH attention (Kitaev et al. 2020; the KDEformer authors' root
/// Reformer.py @ majid-daliri/kdeformer 427df2d5; peers.md §7). The reference-faithful mode is
/// shared_qk(true).mask_padding(false).look_back_across_rounds(true) with scale 1.
struct ReformerOptions {
  /// Keys per chunk; each chunk of the sorted order attends to itself and the previous one.
  TORCH_ARG(int64_t, bucket_size) = 32;
  /// Hash rounds, merged by log-sum-exp.
  TORCH_ARG(int64_t, num_hashes) = 2;
  /// Use the L2-normalised queries as keys, as the reference does ("shared-QK", labelled; needs
  /// Nq = Nk and ignores k); a query never attends itself unless nothing else is in its window.
  /// false uses the real keys (and masks no "self").
  TORCH_ARG(bool, shared_qk) = false;
  /// Drop nothing but real keys (a fix); false is the reference's padding: the keys (and, with
  /// shared_qk, the queries) are zero-padded to a multiple of 2·bucket_size and the zero keys
  /// take part (logit 0, value 0).
  TORCH_ARG(bool, mask_padding) = true;
  /// The reference's look-back: the first chunk of round h looks back at the last chunk of round
  /// h − 1 (cyclically over all rounds). false: cyclically within its own round.
  TORCH_ARG(bool, look_back_across_rounds) = false;
};

}  // namespace kdeserve::attention
