#pragma once
/// The KDEformer budget chooser: measure candidate settings on a layer's recorded inputs (error
/// against exact attention, time per call), then pick the cheapest under an error target or the
/// most accurate under a time budget. Models set their defaults from its output
/// (bench/plan_budget), so a plan can say "KDEformer at ≤ x % error" instead of raw b and m.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "attention/options.h"

namespace kdeserve::attention::kdeformer {

/// One candidate measured on one layer's inputs.
struct BudgetPoint {
  KdeformerOptions options;
  /// Mean over (entry, head) of ‖Â − A‖₂ / ‖A‖₂ against exact attention, and of the centered
  /// error (column means of Â − A and of A removed).
  double rel_error = 0, centered_error = 0;
  /// Median seconds per call over the repetitions.
  double seconds = 0;
};

/// "b=32 m=98 sampled" / "b=64 m=0 control_variate clamped".
std::string describe(const KdeformerOptions& options);

/// Candidate settings for a layer with nk keys: b ∈ {16, 32, 64, 128, 256} below nk, m ∈ {0,
/// b/2, b, 2b} for the paper's sampled residual (m > 0), the control variate (m ≥ 0, clamped)
/// the mass-calibrated far field and the coreset far field (m > 0, clamped; also with its values
/// fitted on 4m rows, coreset_fit.h, and the far field fitted on the same coreset and rows,
/// Residual::kFittedFarField), and the control variate at m = 0 calibrated on 32 exact rows, all
/// with `base`'s projections, order and power iterations.
std::vector<KdeformerOptions> candidate_grid(int64_t nk, const KdeformerOptions& base = {});

/// Measures every candidate on q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] at `scale`:
/// `reps` calls each (seeds seed, seed + 1, …; errors averaged over them, time the median),
/// calibrated (calibrate_to_mean) where a candidate asks for calibration rows.
/// The candidates run interleaved, so a noisy machine slows them alike.
std::vector<BudgetPoint> measure_budgets(const at::Tensor& q, const at::Tensor& k,
                                         const at::Tensor& v, double scale,
                                         const std::vector<KdeformerOptions>& candidates,
                                         int64_t reps = 3, uint64_t seed = 1);

/// The fastest point with rel_error ≤ target; nullopt when none reaches it.
std::optional<BudgetPoint> cheapest_within_error(const std::vector<BudgetPoint>& points,
                                                 double target);
/// The most accurate point with seconds ≤ budget; nullopt when none is that fast.
std::optional<BudgetPoint> best_within_time(const std::vector<BudgetPoint>& points,
                                            double seconds);

}  // namespace kdeserve::attention::kdeformer
