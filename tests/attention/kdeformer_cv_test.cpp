// KDEformer's far-field residuals (Residual::kControlVariate, kMassCalibrated; kdeformer.h):
// the far field against a direct sum, unbiasedness, the exact limits, the lower bound and the
// clamp, stability, determinism, batch independence, and that it beats the paper on diffuse data.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>

#include "attention/attention.h"
#include "attention/kdeformer/kdeformer.h"
#include "attention/spectral_norm.h"
#include "tests/attention/peer_test_util.h"
#include "tests/attention/test_util.h"

namespace kdeserve::attention::kdeformer {
namespace {

using kdeserve::testing::DrawStats;
using kdeserve::testing::max_rel_diff;
using kdeserve::testing::naive_attention;
using kdeserve::testing::seeded_randn;

KdeformerOptions cv(int64_t b, int64_t m) {
  return KdeformerOptions().bucket_size(b).sample_size(m).residual(Residual::kControlVariate);
}

// Logits of one (entry, head) and the mask of the pairs outside query i's diagonal block.
struct Blocks {
  at::Tensor s;        // [Nq, Nk]
  at::Tensor outside;  // [Nq, Nk] double 0/1
};

Blocks blocks_of(const KdeformerParts& p, const at::Tensor& q, const at::Tensor& k, double scale,
                 int64_t b, int64_t h) {
  Blocks out;
  out.s = at::matmul(q[b][h], k[b][h].transpose(0, 1)).mul_(scale);
  out.outside = p.query_block[b][h].unsqueeze(1).ne(p.key_block[b][h].unsqueeze(0))
                    .to(at::kDouble);
  return out;
}

// The far field, summed over the off-block keys directly from its definition.
TEST(KdeformerControlVariate, FarFieldEqualsTheDirectSum) {
  const at::Tensor q = seeded_randn({2, 2, 90, 8}, 301);
  const at::Tensor k = seeded_randn({2, 2, 75, 8}, 302);
  const at::Tensor v = seeded_randn({2, 2, 75, 5}, 303);
  const double scale = 0.45;
  for (int64_t m : {0, 24}) {
    AttentionCall call;
    call.seed = 7;
    const KdeformerParts p = kdeformer_parts(q, k, v, scale, cv(16, m), call);
    for (int64_t b = 0; b < 2; ++b) {
      for (int64_t h = 0; h < 2; ++h) {
        const Blocks blk = blocks_of(p, q, k, scale, b, h);
        const at::Tensor mean = blk.s.mean(1, true);
        const at::Tensor var = (blk.s - mean).square().mean(1, true);
        const at::Tensor c = p.shift[b][h].unsqueeze(1);
        const at::Tensor alpha = at::clamp_max(mean + var / 2 - c, 0).exp();
        const at::Tensor f = alpha * (blk.s - mean + 1) * blk.outside;  // [Nq, Nk]
        EXPECT_LT(max_rel_diff(p.far_field_numerator[b][h], at::matmul(f, v[b][h])), 1e-12);
        EXPECT_LT(max_rel_diff(p.far_field_denominator[b][h], f.sum(1)), 1e-12);
        const at::Tensor e_block = (blk.s - c).exp() * (1 - blk.outside);
        EXPECT_LT(max_rel_diff(p.block_numerator[b][h], at::matmul(e_block, v[b][h])), 1e-12);
      }
    }
  }
}

// (N̂, D̂) are unbiased: the mean over seeds of far field + sampled correction converges to the
// exact off-block sum Σ_{j ∉ blk(i)} e^{s_ij} [v_j, 1], the gap shrinking as 1/sqrt(draws).
TEST(KdeformerControlVariate, ResidualIsUnbiased) {
  const int64_t n = 96, d = 8, dv = 4, draws = 1600;
  const double scale = 0.5;
  const at::Tensor q = seeded_randn({1, 1, n, d}, 311);
  const at::Tensor k = seeded_randn({1, 1, n, d}, 312);
  const at::Tensor v = seeded_randn({1, 1, n, dv}, 313);
  const auto opt = cv(16, 16);
  AttentionCall call;
  call.injected.projections = seeded_randn({d, 7}, 314);  // fixed blocks, fresh samples per seed
  const KdeformerParts first = kdeformer_parts(q, k, v, scale, opt, call);
  const Blocks blk = blocks_of(first, q, k, scale, 0, 0);
  const at::Tensor v_aug = at::cat({v[0][0], at::ones({n, 1}, v.options())}, 1);
  const at::Tensor exact = at::matmul(blk.s.exp() * blk.outside, v_aug);  // [n, dv + 1]

  DrawStats stats;
  double gap_at_100 = 0;
  for (int64_t t = 1; t <= draws; ++t) {
    call.seed = static_cast<uint64_t>(t);
    const KdeformerParts p = kdeformer_parts(q, k, v, scale, opt, call);
    const at::Tensor c = p.shift[0][0].exp().unsqueeze(1);
    const at::Tensor num = p.residual_numerator[0][0] + p.far_field_numerator[0][0];
    const at::Tensor den = p.residual_denominator[0][0] + p.far_field_denominator[0][0];
    const at::Tensor est = at::cat({num, den.unsqueeze(1)}, 1) * c;
    stats.add(est);
    if (t == 100) gap_at_100 = stats.relative_gap(exact);
  }
  const double gap = stats.gap(exact);
  const double standard_error = stats.standard_error();
  const double relative_gap = stats.relative_gap(exact);
  // Unbiased: E‖mean − exact‖² = Σ var / draws, so the gap stays within 3 standard errors.
  EXPECT_LT(gap, 3 * standard_error) << "relative gap " << relative_gap;
  EXPECT_LT(relative_gap, gap_at_100 / 2) << "16x the draws should ~quarter the gap";
  std::cout << "control-variate residual, relative gap " << gap_at_100 << " at T=100, "
            << relative_gap << " at T=" << draws << "\n";
}

// One block covering every key leaves nothing outside it: exact attention, for any m.
TEST(KdeformerControlVariate, SingleBlockIsExact) {
  const at::Tensor q = seeded_randn({2, 2, 70, 8}, 321);
  const at::Tensor k = seeded_randn({2, 2, 50, 8}, 322);
  const at::Tensor v = seeded_randn({2, 2, 50, 6}, 323);
  for (int64_t m : {0, 16}) {
    EXPECT_LT(max_rel_diff(kdeformer_attention(q, k, v, 0.4, cv(50, m)),
                           naive_attention(q, k, v, 0.4)),
              1e-12)
        << "m=" << m;
  }
}

// Keys with one logit per query (k = 0) make e = f: the far field is exact, so is the estimate.
TEST(KdeformerControlVariate, ConstantLogitsAreExact) {
  const at::Tensor q = seeded_randn({1, 2, 64, 8}, 331);
  const at::Tensor k = at::zeros({1, 2, 128, 8}, at::kDouble);
  const at::Tensor v = seeded_randn({1, 2, 128, 6}, 332);
  for (int64_t m : {0, 32}) {
    EXPECT_LT(max_rel_diff(kdeformer_attention(q, k, v, 1.0, cv(16, m)),
                           naive_attention(q, k, v, 1.0)),
              1e-12);
  }
}

// The fused estimate equals its parts' at any Nq ≠ Nk, Dv ≠ D and sizes no block divides.
TEST(KdeformerControlVariate, FusedEqualsPartsAtAnyShape) {
  for (const auto& [nq, nk, d, dv] : std::vector<std::array<int64_t, 4>>{
           {37, 53, 8, 3}, {100, 64, 16, 16}, {1, 9, 4, 7}, {129, 257, 12, 20}}) {
    const at::Tensor q = seeded_randn({2, 3, nq, d}, 341);
    const at::Tensor k = seeded_randn({2, 3, nk, d}, 342);
    const at::Tensor v = seeded_randn({2, 3, nk, dv}, 343);
    for (int64_t m : {0, 11}) {
      auto opt = cv(5, m).clamp_output(m > 0);
      AttentionCall call;
      call.seed = 3;
      const at::Tensor fused = kdeformer_attention(q, k, v, 0.3, opt, call);
      const KdeformerParts p = kdeformer_parts(q, k, v, 0.3, opt, call);
      EXPECT_TRUE(at::isfinite(fused).all().item<bool>());
      EXPECT_LT(max_rel_diff(fused, p.output), 1e-12) << nq << "x" << nk << " m=" << m;
    }
  }
}

// The denominator never drops below its lower bound, which never exceeds the true denominator;
// with clamp_output every coordinate lies in the values' range, as exact attention does.
TEST(KdeformerControlVariate, LowerBoundAndClampHold) {
  const at::Tensor q = seeded_randn({1, 1, 200, 8}, 351).mul_(2);
  const at::Tensor k = seeded_randn({1, 1, 200, 8}, 352).mul_(2);
  const at::Tensor v = seeded_randn({1, 1, 200, 6}, 353);
  AttentionCall call;
  call.seed = 11;
  const KdeformerParts p = kdeformer_parts(q, k, v, 1.0, cv(16, 16).clamp_output(true), call);
  const at::Tensor s = at::matmul(q[0][0], k[0][0].transpose(0, 1));
  const at::Tensor true_den = (s - p.shift[0][0].unsqueeze(1)).exp().sum(1);
  EXPECT_TRUE(p.denominator_floor[0][0].le(true_den * (1 + 1e-12)).all().item<bool>());
  const at::Tensor lo = v[0][0].amin(0), hi = v[0][0].amax(0);
  EXPECT_TRUE(p.output[0][0].ge(lo).logical_and(p.output[0][0].le(hi)).all().item<bool>());
}

// Finite at logits in the thousands, in float32 and float64, and float32 follows float64.
TEST(KdeformerControlVariate, StableAtLargeLogits) {
  const at::Tensor q = seeded_randn({1, 2, 128, 16}, 361).mul_(12);
  const at::Tensor k = seeded_randn({1, 2, 128, 16}, 362).mul_(12);
  const at::Tensor v = seeded_randn({1, 2, 128, 16}, 363);
  for (int64_t m : {0, 32}) {
    AttentionCall call;
    call.seed = 5;
    const auto opt = cv(32, m);
    const at::Tensor out64 = kdeformer_attention(q, k, v, 1.0, opt, call);
    const at::Tensor out32 =
        kdeformer_attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), 1.0, opt, call);
    EXPECT_TRUE(at::isfinite(out64).all().item<bool>());
    EXPECT_TRUE(at::isfinite(out32).all().item<bool>());
    EXPECT_LT(max_rel_diff(out32, out64), 1e-3) << "m=" << m;
  }
}

// Keys far from the origin (mean 20× their spread): the moments are centred by rank-one
// corrections, which must not lose the spread in float32.
TEST(KdeformerControlVariate, Float32FollowsFloat64ForOffsetKeys) {
  const at::Tensor q = seeded_randn({1, 2, 256, 16}, 391).mul_(0.5);
  const at::Tensor k = seeded_randn({1, 2, 256, 16}, 392).mul_(0.3).add_(6);
  const at::Tensor v = seeded_randn({1, 2, 256, 8}, 393).add_(3);
  const auto opt = cv(32, 0).clamp_output(true);
  const at::Tensor out64 = kdeformer_attention(q, k, v, 1.0, opt);
  const at::Tensor out32 =
      kdeformer_attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), 1.0, opt);
  const at::Tensor exact = naive_attention(q, k, v, 1.0);
  EXPECT_LT(max_rel_diff(out32, out64), 1e-4);
  EXPECT_LT(max_rel_diff(out64, exact), 0.05);
}

// Deterministic per seed; heads and entries never mix, and an entry's output does not depend on
// its neighbours or position (the peers' shared check, bit for bit), for both residuals.
TEST(KdeformerControlVariate, DeterministicAndIndependentOfTheBatch) {
  const at::Tensor x = seeded_randn({3, 2, 200, 16}, 371, at::kFloat);
  const at::Tensor v = seeded_randn({3, 2, 200, 16}, 372, at::kFloat);
  for (Residual r : {Residual::kControlVariate, Residual::kMassCalibrated}) {
    SCOPED_TRACE(to_string(r));
    const auto options = cv(32, 32).residual(r).clamp_output(true);
    kdeserve::testing::expect_deterministic_and_batch_independent(
        kdeserve::testing::with_options(&kdeformer_attention, options), x, v);
  }
}

// Diffuse attention over values with a common offset, the case where the paper's estimate is
// worse than every row = mean(V): the far field alone is below the floor; with samples the
// control variate is far below the paper (its samples still carry the (e − f) variance).
TEST(KdeformerControlVariate, BeatsThePaperAndTheFloorOnDiffuseAttention) {
  const int64_t n = 1024;
  const at::Tensor x = seeded_randn({1, 1, n, 32}, 381).mul_(0.25);
  const at::Tensor v = seeded_randn({1, 1, n, 32}, 382).add_(seeded_randn({1, 1, 1, 32}, 383));
  const at::Tensor exact = naive_attention(x, x, v, 1.0)[0][0];
  auto rel = [&](const at::Tensor& est) {
    return (spectral_norm(est[0][0] - exact) / spectral_norm(exact)).item<double>();
  };
  const double floor = rel(v.mean(2, true).expand({1, 1, n, 32}));
  AttentionCall call;
  call.seed = 21;
  const double paper = rel(kdeformer_attention(x, x, v, 1.0, KdeformerOptions().bucket_size(32)
                                                                 .sample_size(32), call));
  const double sampled = rel(kdeformer_attention(x, x, v, 1.0, cv(32, 32), call));
  const double far_field = rel(kdeformer_attention(x, x, v, 1.0, cv(64, 0), call));
  std::cout << "floor " << floor << ", paper " << paper << ", control variate " << sampled
            << ", far field " << far_field << "\n";
  EXPECT_GT(paper, floor);
  EXPECT_LT(sampled, 0.2 * paper);
  EXPECT_LT(far_field, 0.5 * floor);
}

KdeformerOptions mass(int64_t b, int64_t m) {
  return KdeformerOptions().bucket_size(b).sample_size(m).residual(Residual::kMassCalibrated);
}

// The mass-calibrated far field: its off-block mass is the control variate's (unbiased), its
// numerator the far field's scaled by it; the exact limits and the fused path hold.
TEST(KdeformerMassCalibrated, MassIsUnbiasedAndTheNumeratorFollowsIt) {
  const int64_t n = 96, d = 8, dv = 4, draws = 1200;
  const double scale = 0.5;
  const at::Tensor q = seeded_randn({1, 1, n, d}, 411);
  const at::Tensor k = seeded_randn({1, 1, n, d}, 412);
  const at::Tensor v = seeded_randn({1, 1, n, dv}, 413);
  AttentionCall call;
  call.injected.projections = seeded_randn({d, 7}, 414);
  const KdeformerParts first = kdeformer_parts(q, k, v, scale, mass(16, 16), call);
  const Blocks blk = blocks_of(first, q, k, scale, 0, 0);
  const at::Tensor exact_mass = (blk.s.exp() * blk.outside).sum(1);  // [n]
  DrawStats stats;
  int64_t clamped = 0;  // (draw, query) pairs whose raw mass was negative
  for (int64_t t = 1; t <= draws; ++t) {
    call.seed = static_cast<uint64_t>(t);
    const KdeformerParts p = kdeformer_parts(q, k, v, scale, mass(16, 16), call);
    const KdeformerParts c = kdeformer_parts(q, k, v, scale, cv(16, 16), call);
    // Same draws: the mass is the control variate's far field + correction (unbiased), clamped
    // at 0, which biases it up where it bites.
    const at::Tensor raw_mass = c.far_field_denominator[0][0] + c.residual_denominator[0][0];
    clamped += raw_mass.lt(0).sum().item<int64_t>();
    const at::Tensor cv_mass = raw_mass.clamp_min(0);
    ASSERT_LT(max_rel_diff(p.far_field_denominator[0][0], cv_mass), 1e-12);
    const at::Tensor ratio = cv_mass / c.far_field_denominator[0][0];
    ASSERT_LT(max_rel_diff(p.far_field_numerator[0][0],
                           c.far_field_numerator[0][0] * ratio.unsqueeze(1)),
              1e-12);
    EXPECT_TRUE(p.residual_numerator.eq(0).all().item<bool>());
    const at::Tensor est = p.far_field_denominator[0][0] * p.shift[0][0].exp();
    stats.add(est);
  }
  // The clamp bites rarely (1.5 % of the pairs here), so its bias stays within the sampling
  // error.
  EXPECT_LT(clamped, draws * n * 3 / 100) << "clamped in " << clamped << " of " << draws * n;
  EXPECT_LT(stats.gap(exact_mass), 3 * stats.standard_error());
  std::cout << "mass clamped at 0 in " << clamped << " of " << draws * n << " (draw, query)\n";
}

TEST(KdeformerMassCalibrated, ExactLimitsAndFusedEqualsParts) {
  const at::Tensor q = seeded_randn({2, 2, 70, 8}, 421);
  const at::Tensor k = seeded_randn({2, 2, 50, 8}, 422);
  const at::Tensor v = seeded_randn({2, 2, 50, 6}, 423);
  EXPECT_LT(max_rel_diff(kdeformer_attention(q, k, v, 0.4, mass(50, 16)),
                         naive_attention(q, k, v, 0.4)),
            1e-12);
  const at::Tensor k0 = at::zeros({2, 2, 50, 8}, at::kDouble);
  EXPECT_LT(max_rel_diff(kdeformer_attention(q, k0, v, 0.4, mass(8, 16)),
                         naive_attention(q, k0, v, 0.4)),
            1e-12);
  AttentionCall call;
  call.seed = 4;
  const auto opt = mass(8, 12).clamp_output(true);
  const at::Tensor fused = kdeformer_attention(q, k, v, 0.4, opt, call);
  EXPECT_LT(max_rel_diff(fused, kdeformer_parts(q, k, v, 0.4, opt, call).output), 1e-12);
  const at::Tensor big = kdeformer_attention(q.mul(20), k.mul(20), v, 1.0, opt, call);
  EXPECT_TRUE(at::isfinite(big).all().item<bool>());
}

}  // namespace
}  // namespace kdeserve::attention::kdeformer
