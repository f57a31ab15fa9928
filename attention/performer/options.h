#pragma once
/// Performer's options (part of AttentionOptions).

#include <torch/arg.h>

#include <cstdint>

#include "attention/method.h"

namespace kdeserve::attention {

/// How Performer shifts its log-features before exp (peers.md §6).
enum class PerformerStabilizer {
  /// No shift: φ(x) = m^{-1/2} exp(ω·x̃ − ‖x̃‖²/2), as the KDEformer authors' root Performer.py.
  /// Overflows once ω·x̃ − ‖x̃‖²/2 passes ~88 (float32) or ~709 (float64).
  kNone,
  /// fly/lucidrains softmax_kernel, bit for bit: queries subtract their row max of ω·q̃, keys the
  /// max of ω·k̃ over all keys and features of the (entry, head); the ‖x̃‖²/2 stays inside. Query
  /// features underflow to 0 once ‖q̃‖²/2 passes the exp range (then the output is 0/0 without
  /// feature_eps / normalization_eps).
  kRowGlobal,
  /// Key columns shifted by their max over keys, that shift folded into the queries, and each
  /// query row shifted by its max (random_features::stabilize): the largest feature of every
  /// query and of every key column is 1, so the denominator is ≥ m^{-1} at any logit size.
  /// With both eps at 0 it equals kRowGlobal (and kNone) up to rounding.
  kJoint,
};

/// Options of Performer (FAVOR+, Choromanski et al. 2021; peers.md §6).
///
/// Presets: fly/lucidrains PerformerAttention as configured for T2T = orthogonal, kRowGlobal,
/// both eps 0 (its class defaults are feature_eps 1e-4, normalization_eps 1e-6); the KDEformer
/// authors' Performer.py ("reference-faithful") = orthogonal false, kNone, both eps 0. Upstream
/// Performer.py applies no temperature (the kernel is exp(q·k)): it corresponds to scale = 1,
/// and a scale s here equals Performer.py run on q·√s, k·√s.
struct PerformerOptions {
  /// m: random features (the method's budget), ≥ 1.
  TORCH_ARG(int64_t, num_features) = 64;
  /// Orthogonal directions (Haar blocks, rows rescaled to Gaussian norms) rather than iid N(0, 1).
  TORCH_ARG(bool, orthogonal) = true;
  TORCH_ARG(PerformerStabilizer, stabilizer) = PerformerStabilizer::kJoint;
  /// Added to every shifted feature before the m^{-1/2} (fly's softmax_eps), ≥ 0.
  TORCH_ARG(double, feature_eps) = 0.0;
  /// Added to the denominator φ(q)·Σφ(k) (fly's normalization_eps), ≥ 0.
  TORCH_ARG(double, normalization_eps) = 0.0;
};

}  // namespace kdeserve::attention
