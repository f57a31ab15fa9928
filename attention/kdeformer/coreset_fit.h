#pragma once
/// The query-fitted coreset far field (KdeformerOptions::coreset_fit_rows): a ridge correction
/// of the coreset's off-block values, fitted on a few query rows whose exact sums are computed.
///
/// WildCat's Nyström weights W' make e^{β q·k_l} ≈ Σ_s W'_sl e^{β q·k_s + o_s} on the *keys*:
/// they minimise a kernel error that knows nothing of where the queries are or what the values
/// are. What the estimate needs is the off-block sum y_i = Σ_{l ∉ blk(i)} e^{β q_i·k_l − c_i}
/// [v_l, 1] of each query, which the coreset estimates as x_i (U − B_j): x_i [S] = e^{β q_i·k_s
/// + o_s − c_i} (the design row), U = W'·[V, 1], B_j the block's own W'·[V, 1] part. Per
/// (entry, head), t query rows F are drawn uniformly without replacement; their exact sums give
/// the residuals r_i = y_i − x_i (U − B_j), and ΔU [S, Dv + 1] solves the ridge problem
///   min_ΔU Σ_{i ∈ F} w_i² ‖x_i ΔU − r_i‖² + ρ ‖ΔU‖²,
/// with w_i = 1 / D_i (D_i the row's exact denominator) so each row's output error counts alike.
/// ρ is chosen per (entry, head) by the rows' leave-one-out error (PRESS, in closed form from one
/// eigendecomposition of XᵀW²X) among kCoresetFitRidges and ρ = ∞ (ΔU = 0, the Nyström values).
/// Every row's off-block estimate becomes x_i (U + ΔU − B_j), one [R, S] × [S, Dv + 1] product,
/// except where that moves the row's denominator estimate by more than kMaxFitMassChange either
/// way: such a row lies where the t rows did not constrain the fit (clustered attention, a
/// cluster no drawn row fell in), and it keeps the Nyström estimate. The t rows themselves are
/// returned exact.
///
/// Why it keeps the paper's guarantee: ΔU is a function of rows that are drawn independently of
/// everything else in the estimate, so the estimate is the Nyström one plus a correction whose
/// size the ridge bounds (‖ΔU‖ → 0 as ρ → ∞, and ΔU = 0 where the coreset is already exact, S ≥
/// Nk). Its error is that of a regression fitted on t uniform rows and is not unbiased; the
/// bound with calibration_rows (calibration.h: ‖out − A‖ ≤ λ‖Ô − A‖ + |1 − λ|‖μ − A‖) holds for
/// any Ô and so for this one. On the synthetic regimes it halves the Nyström coreset's error at
/// r ≥ 128 (bench/RESULTS.md).

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "attention/call.h"

namespace kdeserve::attention::kdeformer {

/// The ridges tried, as ρ / (tr(XᵀW²X) / S); the one with the smallest leave-one-out error
/// on the t rows wins, and ΔU = 0 (the Nyström values, ρ = ∞) wins where none beats it. The grid
/// starts at 0.1: down to 10⁻³ the leave-one-out error of the drawn rows chose ridges that
/// extrapolate on undrawn ones (peaked n = 16384, r = 96: 0.10 against 0.014, bench/RESULTS.md).
constexpr double kCoresetFitRidges[] = {0.1, 1.0, 10.0};

/// t / S of the budget chooser's fitted candidates and of the bench's kdeformer_wcf: at t = 2S
/// some draws of peaked attention lose to the Nyström values, at 4S fewer (bench/RESULTS.md).
constexpr int64_t kFitRowsPerCoresetKey = 4;

/// The largest factor by which the fit may move a row's denominator estimate. Without the guard,
/// peaked attention at n = 16384, r = 56 gave 0.082 against the Nyström coreset's 0.025 in one
/// draw of two (bench/RESULTS.md); with it, 0.025.
constexpr double kMaxFitMassChange = 2.0;

struct CoresetFit {
  at::Tensor delta;  ///< [G, S, Dv + 1] ΔU
  at::Tensor rows;   ///< [G, t] padded rows of the fitted queries
  at::Tensor exact;  ///< [G, t, Dv] their exact outputs
};

/// p_cs [G, R, S]: e^{logit − c} of the coreset keys in padded rows; off [G, R, Dv + 1]: the
/// baseline's off-block sums (the coreset's Nyström ones, or the far field's for
/// Residual::kFittedFarField, whose block_* then hold Σ_blk (e − f)); block_num [G, R, Dv],
/// block_den [G, R]: the exact block sums; shift [G, R] the rows' c; qs [G, R, D] the scaled queries in padded rows; k3 [G, Nk, D], v3 [G, Nk,
/// Dv]; row_of_query [G, Nq] the padded row of each query; rows: t ≥ 1 (min(t, Nq) are drawn,
/// from stream_generator(call, entry, head, Stream::kCoresetFit); batch · heads = G).
CoresetFit fit_coreset_values(const at::Tensor& p_cs, const at::Tensor& off,
                              const at::Tensor& block_num, const at::Tensor& block_den,
                              const at::Tensor& shift, const at::Tensor& qs, const at::Tensor& k3,
                              const at::Tensor& v3, const at::Tensor& row_of_query, int64_t rows,
                              int64_t batch, int64_t heads, const AttentionCall& call);

/// off [G, R, Dv + 1] + p_cs [G, R, S] · delta [G, S, Dv + 1] on the rows whose denominator
/// block_den + off[..., Dv] it changes by at most kMaxFitMassChange either way, off elsewhere.
at::Tensor apply_coreset_fit(const at::Tensor& off, const at::Tensor& p_cs,
                             const at::Tensor& block_den, const at::Tensor& delta);

}  // namespace kdeserve::attention::kdeformer
