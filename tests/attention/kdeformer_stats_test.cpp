// (e) The residual estimator is unbiased: over many seeds its mean converges to the exact
// residual (A − A_spar)[V, 1], with the error shrinking as 1/sqrt(draws).
#include <gtest/gtest.h>

#include <cmath>

#include "attention/kdeformer/kdeformer.h"
#include "tests/attention/test_util.h"

namespace kdeserve::attention::kdeformer {
namespace {

using kdeserve::testing::DrawStats;
using kdeserve::testing::seeded_randn;

TEST(KdeformerStatistics, ResidualEstimatorIsUnbiased) {
  const int64_t n = 96, d = 8, dv = 4, draws = 4000;
  const double scale = 0.5;
  const at::Tensor q = seeded_randn({1, 1, n, d}, 201);
  const at::Tensor k = seeded_randn({1, 1, n, d}, 202);
  const at::Tensor v = seeded_randn({1, 1, n, dv}, 203);
  const auto opt = KdeformerOptions().bucket_size(16).sample_size(16);
  AttentionCall call;
  call.injected.projections = seeded_randn({d, 7}, 204);  // fixed blocks, fresh samples per seed

  // Exact residual from the block structure: Σ_{j ∉ block(i)} e^{s_ij} [v_j, 1].
  const KdeformerParts first = kdeformer_parts(q, k, v, scale, opt, call);
  const at::Tensor s = at::matmul(q, k.transpose(-2, -1)).mul_(scale)[0][0];  // [n, n]
  const at::Tensor outside =
      first.query_block[0][0].unsqueeze(1).ne(first.key_block[0][0].unsqueeze(0));
  const at::Tensor a = s.exp() * outside.to(at::kDouble);
  const at::Tensor v_aug = at::cat({v[0][0], at::ones({n, 1}, v.options())}, 1);
  const at::Tensor exact = at::matmul(a, v_aug);  // [n, dv + 1]

  DrawStats stats;
  double gap_at_250 = 0;
  for (int64_t t = 1; t <= draws; ++t) {
    call.seed = static_cast<uint64_t>(t);
    const KdeformerParts p = kdeformer_parts(q, k, v, scale, opt, call);
    const at::Tensor c = p.shift[0][0].exp().unsqueeze(1);
    const at::Tensor est =
        at::cat({p.residual_numerator[0][0], p.residual_denominator[0][0].unsqueeze(1)}, 1) * c;
    stats.add(est);
    if (t == 250) gap_at_250 = stats.relative_gap(exact);
  }
  const double gap = stats.gap(exact);
  const double standard_error = stats.standard_error();
  const double relative_gap = stats.relative_gap(exact);
  // Stated tolerance: for an unbiased estimator E‖mean − exact‖² = Σ var / draws, so the gap
  // stays within 3 standard errors; a biased one would not shrink with more draws.
  EXPECT_LT(gap, 3 * standard_error) << "relative gap " << relative_gap;
  EXPECT_LT(relative_gap, 0.05);
  EXPECT_LT(relative_gap, gap_at_250 / 2) << "1/sqrt(T): 16x the draws should ~quarter the gap";
  std::cout << "residual mean vs exact, relative Frobenius gap: " << gap_at_250 << " at T=250, "
            << relative_gap << " at T=" << draws << " (3 SE bound " << 3 * standard_error /
            exact.norm().item<double>() << ")\n";
}

}  // namespace
}  // namespace kdeserve::attention::kdeformer
