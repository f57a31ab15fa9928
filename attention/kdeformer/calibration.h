#pragma once
/// Calibration of a KDEformer estimate against a few exact rows (KdeformerOptions::
/// calibration_rows): a guard against the estimate being worse than the trivial one.
///
/// Where a query's block holds a small part of a large cluster of keys its softmax weighs
/// (peaked attention, small b), the block's few values dominate the estimate and its error can
/// exceed that of "every row = mean(V)". Per (entry, head), with s query rows R drawn uniformly
/// without replacement, their exact outputs A_R and μ = mean_j v_j:
///   λ = clamp(⟨Ô_R − μ, A_R − μ⟩ / ‖Ô_R − μ‖², 0, 2),   out = μ + λ (Ô − μ),   out_R = A_R.
/// λ minimises the Frobenius error of μ + λ(Ô − μ) on R; both sums are, scaled by Nq/s,
/// unbiased estimates of their sums over all rows, so λ is a ratio estimator of the
/// all-row least-squares coefficient (bias O(1/s)). That coefficient's error is at most the
/// smaller of Ô's (λ = 1) and the trivial estimate's (λ = 0) in Frobenius norm. Whatever λ is
/// drawn, ‖out − A‖ ≤ λ ‖Ô − A‖ + |1 − λ| ‖μ − A‖ in any norm (the triangle inequality), so
/// the paper's spectral bound on ‖Ô − A‖ carries over with the factor λ ≤ 2 and the trivial
/// estimate's error added. λ > 1 undoes a shrinkage towards μ that the far-field residuals
/// have in diffuse attention. With s ≥ Nq every row is exact.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "attention/call.h"

namespace kdeserve::attention::kdeformer {

/// The calibration rows of the budget chooser's calibrated candidates and of the bench's *_cal
/// variants (the cost of s = 32 rows is 32/Nq of exact attention).
constexpr int64_t kDefaultCalibrationRows = 32;

/// The calibrated estimate. estimate [B, H, Nq, Dv] (consumed in place), q [B, H, Nq, D],
/// k [B, H, Nk, D], v [B, H, Nk, Dv]; rows = s ≥ 1; clamp: clamp to the values' range after
/// (λ > 1 can leave it). Draws from stream_generator(call, entry, head, Stream::kCalibration).
at::Tensor calibrate_to_mean(at::Tensor estimate, const at::Tensor& q, const at::Tensor& k,
                             const at::Tensor& v, double scale, int64_t rows, bool clamp,
                             const AttentionCall& call);

}  // namespace kdeserve::attention::kdeformer
