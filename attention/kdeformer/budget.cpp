#include "attention/kdeformer/budget.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <sstream>

#include "attention/exact.h"
#include "attention/kdeformer/calibration.h"
#include "attention/kdeformer/coreset_fit.h"
#include "attention/kdeformer/kdeformer.h"
#include "attention/spectral_norm.h"

namespace kdeserve::attention::kdeformer {
namespace {

double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  return xs.empty() ? 0 : xs[xs.size() / 2];
}

}  // namespace

std::string describe(const KdeformerOptions& o) {
  std::ostringstream out;
  out << "b=" << o.bucket_size() << " m=" << o.sample_size() << ' ' << to_string(o.residual());
  if (o.clamp_output()) out << " clamped";
  if (o.coreset_fit_rows() > 0) out << " fit=" << o.coreset_fit_rows();
  if (o.calibration_rows() > 0) out << " calibrated=" << o.calibration_rows();
  return out.str();
}

std::vector<KdeformerOptions> candidate_grid(int64_t nk, const KdeformerOptions& base) {
  std::vector<KdeformerOptions> out;
  for (int64_t b : {16, 32, 64, 128, 256}) {
    if (b >= nk) break;
    for (int64_t m : {int64_t{0}, b / 2, b, 2 * b}) {
      if (m > 0) out.push_back(KdeformerOptions(base).bucket_size(b).sample_size(m)
                                   .residual(Residual::kSampled).clamp_output(false));
      out.push_back(KdeformerOptions(base).bucket_size(b).sample_size(m)
                        .residual(Residual::kControlVariate).clamp_output(true));
      if (m == 0) {
        out.push_back(KdeformerOptions(out.back()).calibration_rows(kDefaultCalibrationRows));
      }
      if (m > 0) out.push_back(KdeformerOptions(base).bucket_size(b).sample_size(m)
                                   .residual(Residual::kMassCalibrated).clamp_output(true));
      if (m > 0) {
        out.push_back(KdeformerOptions(base).bucket_size(b).sample_size(m)
                          .residual(Residual::kCoreset).clamp_output(true));
        out.push_back(KdeformerOptions(out.back()).coreset_fit_rows(kFitRowsPerCoresetKey * m));
        out.push_back(KdeformerOptions(out.back()).residual(Residual::kFittedFarField));
      }
    }
  }
  return out;
}

std::vector<BudgetPoint> measure_budgets(const at::Tensor& q, const at::Tensor& k,
                                         const at::Tensor& v, double scale,
                                         const std::vector<KdeformerOptions>& candidates,
                                         int64_t reps, uint64_t seed) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "measure_budgets: want 4-d inputs");
  TORCH_CHECK(reps >= 1, "measure_budgets: reps must be >= 1");
  const int64_t groups = q.size(0) * q.size(1);
  const at::Tensor exact = exact_attention(q, k, v, scale).to(at::kDouble);
  const at::Tensor ex3 = exact.reshape({groups, exact.size(2), exact.size(3)});
  std::vector<double> norms(groups), centered_norms(groups);
  for (int64_t g = 0; g < groups; ++g) {
    norms[g] = spectral_norm(ex3[g]).item<double>();
    centered_norms[g] = spectral_norm(ex3[g] - ex3[g].mean(0, true)).item<double>();
  }
  std::vector<BudgetPoint> points(candidates.size());
  std::vector<std::vector<double>> times(candidates.size());
  for (int64_t r = 0; r < reps; ++r) {
    for (size_t c = 0; c < candidates.size(); ++c) {
      AttentionCall call;
      call.seed = seed + static_cast<uint64_t>(r);
      const auto t0 = std::chrono::steady_clock::now();
      at::Tensor est = kdeformer_attention(q, k, v, scale, candidates[c], call);
      if (candidates[c].calibration_rows() > 0) {
        est = calibrate_to_mean(est, q, k, v, scale, candidates[c].calibration_rows(),
                                candidates[c].clamp_output(), call);
      }
      times[c].push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      const at::Tensor diff =
          (est.to(at::kDouble) - exact).reshape({groups, exact.size(2), exact.size(3)});
      for (int64_t g = 0; g < groups; ++g) {
        points[c].rel_error += spectral_norm(diff[g]).item<double>() / norms[g];
        points[c].centered_error +=
            spectral_norm(diff[g] - diff[g].mean(0, true)).item<double>() / centered_norms[g];
      }
    }
  }
  for (size_t c = 0; c < candidates.size(); ++c) {
    points[c].options = candidates[c];
    points[c].rel_error /= static_cast<double>(reps * groups);
    points[c].centered_error /= static_cast<double>(reps * groups);
    points[c].seconds = median(times[c]);
  }
  return points;
}

std::optional<BudgetPoint> cheapest_within_error(const std::vector<BudgetPoint>& points,
                                                 double target) {
  std::optional<BudgetPoint> best;
  for (const BudgetPoint& p : points) {
    if (p.rel_error <= target && (!best || p.seconds < best->seconds)) best = p;
  }
  return best;
}

std::optional<BudgetPoint> best_within_time(const std::vector<BudgetPoint>& points,
                                            double seconds) {
  std::optional<BudgetPoint> best;
  for (const BudgetPoint& p : points) {
    if (p.seconds <= seconds && (!best || p.rel_error < best->rel_error)) best = p;
  }
  return best;
}

}  // namespace kdeserve::attention::kdeformer
