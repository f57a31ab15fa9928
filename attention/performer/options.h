#pragma once
/// Performer's options (part of AttentionOptions).

#include <torch/arg.h>

#include <cstdint>

#include "attention/method.h"

namespace kdeserve::attention {

/// Options of Performer (FAVOR+, Choromanski et al. 2021; peers.md §6).
struct PerformerOptions {
  /// m: random features (the method's budget).
  TORCH_ARG(int64_t, num_features) = 64;
  /// Orthogonal (Haar blocks, rows rescaled to Gaussian norms) rather than iid N(0, 1) features.
  TORCH_ARG(bool, orthogonal) = true;
  /// Subtract the row max (queries) and global max (keys) before exp, as fly/lucidrains does.
  /// false with orthogonal = false is the KDEformer authors' Performer.py ("reference").
  TORCH_ARG(bool, stabilize) = true;
};

}  // namespace kdeserve::attention
