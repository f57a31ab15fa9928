// The budget chooser: its candidate grid, its measurements against exact attention and its picks.
#include <gtest/gtest.h>

#include <utility>

#include "attention/attention.h"
#include "attention/kdeformer/budget.h"
#include "attention/kdeformer/coreset_fit.h"
#include "attention/kdeformer/kdeformer.h"
#include "attention/spectral_norm.h"
#include "tests/attention/test_util.h"

namespace kdeserve::attention::kdeformer {
namespace {

using kdeserve::testing::seeded_randn;

TEST(KdeformerBudget, GridStaysBelowNkAndCoversBothResiduals) {
  const auto grid = candidate_grid(100);
  ASSERT_FALSE(grid.empty());
  bool sampled = false, cv_without_samples = false, coreset = false, calibrated = false;
  bool fitted = false, fitted_far_field = false;
  for (const auto& o : grid) {
    EXPECT_LT(o.bucket_size(), 100);
    if (o.residual() == Residual::kSampled) {
      sampled = true;
      EXPECT_GT(o.sample_size(), 0);
    } else {
      EXPECT_TRUE(o.clamp_output());
      cv_without_samples |= o.sample_size() == 0;
      coreset |= o.residual() == Residual::kCoreset && o.sample_size() > 0;
    }
    calibrated |= o.calibration_rows() > 0;
    if (o.coreset_fit_rows() > 0) {
      fitted = true;
      fitted_far_field |= o.residual() == Residual::kFittedFarField;
      EXPECT_TRUE(o.residual() == Residual::kCoreset ||
                  o.residual() == Residual::kFittedFarField);
      EXPECT_EQ(o.coreset_fit_rows(), kFitRowsPerCoresetKey * o.sample_size());
    }
  }
  EXPECT_TRUE(sampled);
  EXPECT_TRUE(cv_without_samples);
  EXPECT_TRUE(coreset);
  EXPECT_TRUE(calibrated);
  EXPECT_TRUE(fitted);
  EXPECT_TRUE(fitted_far_field);
  EXPECT_TRUE(candidate_grid(16).empty());
}

TEST(KdeformerBudget, MeasuresErrorsAgainstExactAttention) {
  const at::Tensor q = seeded_randn({1, 2, 64, 8}, 401);
  const at::Tensor k = seeded_randn({1, 2, 64, 8}, 402);
  const at::Tensor v = seeded_randn({1, 2, 64, 4}, 403);
  const std::vector<KdeformerOptions> candidates = {
      KdeformerOptions().bucket_size(64).sample_size(0),  // one block: exact
      KdeformerOptions().bucket_size(8).sample_size(8),
      KdeformerOptions().bucket_size(8).sample_size(0).residual(Residual::kControlVariate)
          .clamp_output(true).calibration_rows(16),
  };
  const auto points = measure_budgets(q, k, v, 0.5, candidates, 1, /*seed=*/9);
  ASSERT_EQ(points.size(), 3U);
  EXPECT_LT(points[0].rel_error, 1e-12);
  EXPECT_GT(points[0].seconds, 0);
  // The second candidate's errors, computed here from their definitions.
  AttentionCall call;
  call.seed = 9;
  const at::Tensor exact = kdeserve::testing::naive_attention(q, k, v, 0.5)[0];
  auto errors = [&](const at::Tensor& est) {
    double rel = 0, centered = 0;
    for (int64_t h = 0; h < 2; ++h) {
      const at::Tensor d = est[h] - exact[h];
      rel += (spectral_norm(d) / spectral_norm(exact[h])).item<double>() / 2;
      centered += (spectral_norm(d - d.mean(0, true)) /
                   spectral_norm(exact[h] - exact[h].mean(0, true))).item<double>() / 2;
    }
    return std::make_pair(rel, centered);
  };
  const auto [rel, centered] = errors(kdeformer_attention(q, k, v, 0.5, candidates[1], call)[0]);
  EXPECT_GT(rel, 1e-3);
  EXPECT_NEAR(points[1].rel_error, rel, 1e-9);
  EXPECT_NEAR(points[1].centered_error, centered, 1e-9);
  // The calibrated candidate is measured as attention() runs it.
  AttentionOptions o(Method::kKdeformer);
  o.kdeformer(candidates[2]).scale(0.5);
  const auto [rel_c, centered_c] = errors(attention(q, k, v, o, call)[0]);
  EXPECT_NEAR(points[2].rel_error, rel_c, 1e-9);
  EXPECT_NEAR(points[2].centered_error, centered_c, 1e-9);
}

TEST(KdeformerBudget, PicksTheCheapestUnderATargetAndTheBestWithinATime) {
  auto point = [](int64_t b, double err, double s) {
    BudgetPoint p;
    p.options = KdeformerOptions().bucket_size(b);
    p.rel_error = err;
    p.seconds = s;
    return p;
  };
  const std::vector<BudgetPoint> points = {point(16, 0.30, 1), point(32, 0.08, 3),
                                           point(64, 0.04, 2), point(128, 0.01, 9)};
  EXPECT_EQ(cheapest_within_error(points, 0.1)->options.bucket_size(), 64);
  EXPECT_EQ(cheapest_within_error(points, 0.02)->options.bucket_size(), 128);
  EXPECT_FALSE(cheapest_within_error(points, 0.001).has_value());
  EXPECT_EQ(best_within_time(points, 2.5)->options.bucket_size(), 64);
  EXPECT_EQ(best_within_time(points, 1)->options.bucket_size(), 16);
  EXPECT_FALSE(best_within_time(points, 0.5).has_value());
}

}  // namespace
}  // namespace kdeserve::attention::kdeformer
