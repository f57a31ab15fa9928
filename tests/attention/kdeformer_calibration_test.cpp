// KDEformer's calibration against exact rows (KdeformerOptions::calibration_rows;
// attention/kdeformer/calibration.h): the coefficient on a known estimate, its clamp, the
// exact rows, the exact limit, the ATen and fused implementations alike, large logits and
// float32, determinism and batch independence, and that it brings an estimate worse than
// "every row = mean(V)" below it on clustered attention.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>

#include "attention/attention.h"
#include "attention/kdeformer/calibration.h"
#include "attention/kdeformer/kdeformer.h"
#include "attention/spectral_norm.h"
#include "tests/attention/peer_test_util.h"
#include "tests/attention/test_util.h"

namespace kdeserve::attention::kdeformer {
namespace {

using kdeserve::testing::max_rel_diff;
using kdeserve::testing::naive_attention;
using kdeserve::testing::seeded_call;
using kdeserve::testing::seeded_randn;

AttentionOptions calibrated(int64_t b, int64_t rows) {
  AttentionOptions o(Method::kKdeformer);
  o.kdeformer()
      .bucket_size(b)
      .sample_size(0)
      .residual(Residual::kControlVariate)
      .clamp_output(true)
      .calibration_rows(rows);
  return o;
}

// Rows of `out` [Nq, Dv] equal to those of `exact` within tol.
int64_t exact_rows(const at::Tensor& out, const at::Tensor& exact, double tol) {
  return (out - exact).abs().amax(1).le(tol).sum().item<int64_t>();
}

TEST(KdeformerCalibration, UndoesAKnownShrinkageAndClampsTheCoefficient) {
  // Ô = μ + c (A − μ): the fitted λ is 1/c, so the calibrated output is A on every row while
  // 1/c ≤ 2, and μ + 2c (A − μ) off the calibration rows beyond.
  const at::Tensor q = seeded_randn({2, 2, 40, 6}, 601);
  const at::Tensor k = seeded_randn({2, 2, 50, 6}, 602);
  const at::Tensor v = seeded_randn({2, 2, 50, 3}, 603);
  const double scale = 0.7;
  const at::Tensor exact = naive_attention(q, k, v, scale);
  const at::Tensor mean = v.mean(2, /*keepdim=*/true);
  for (double c : {0.7, 1.0, 1.6}) {
    const at::Tensor est = (exact - mean).mul_(c).add_(mean);
    const at::Tensor out = calibrate_to_mean(est.clone(), q, k, v, scale, 5, false, seeded_call(3));
    EXPECT_LT(max_rel_diff(out, exact), 1e-12) << "c " << c;
  }
  const at::Tensor est = (exact - mean).mul_(0.25).add_(mean);
  const at::Tensor out = calibrate_to_mean(est.clone(), q, k, v, scale, 5, false, seeded_call(3));
  const at::Tensor limited = (exact - mean).mul_(0.5).add_(mean);
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t h = 0; h < 2; ++h) {
      EXPECT_EQ(exact_rows(out[b][h], exact[b][h], 1e-12), 5);
      EXPECT_EQ(exact_rows(out[b][h], limited[b][h], 1e-12), 35);
    }
  }
  // An estimate pointing away from A gets λ = 0: the trivial estimate off the rows.
  const at::Tensor away = (exact - mean).mul_(-1.0).add_(mean);
  const at::Tensor out0 = calibrate_to_mean(away.clone(), q, k, v, scale, 5, false, seeded_call(3));
  EXPECT_EQ(exact_rows(out0[1][0], mean[1][0].expand({40, 3}), 1e-12), 35);
  EXPECT_THROW(calibrate_to_mean(est.clone(), q, k, v, scale, 0, false, seeded_call(3)),
               c10::Error);
}

TEST(KdeformerCalibration, ExactRowsAndTheExactLimitInBothImplementations) {
  // Nq ≠ Nk, Dv ≠ D; float32 takes the fused kernel (kAuto), float64 the ATen path.
  const at::Tensor q = seeded_randn({1, 2, 90, 8}, 611).mul_(0.8);
  const at::Tensor k = seeded_randn({1, 2, 120, 8}, 612).mul_(0.8);
  const at::Tensor v = seeded_randn({1, 2, 120, 5}, 613);
  for (at::ScalarType dtype : {at::kDouble, at::kFloat}) {
    const at::Tensor qd = q.to(dtype), kd = k.to(dtype), vd = v.to(dtype);
    const at::Tensor exact = naive_attention(q, k, v, 0.5);
    const double tol = dtype == at::kDouble ? 1e-12 : 1e-5;
    AttentionReport report;
    AttentionCall call = seeded_call(7);
    call.report = &report;
    const at::Tensor out = attention(qd, kd, vd, calibrated(16, 12).scale(0.5), call).to(at::kDouble);
    EXPECT_EQ(report.calibration_rows, 12);
    for (int64_t h = 0; h < 2; ++h) {
      EXPECT_GE(exact_rows(out[0][h], exact[0][h], tol), 12) << "dtype " << dtype;
    }
    const at::Tensor all = attention(qd, kd, vd, calibrated(16, 500).scale(0.5), seeded_call(7));
    EXPECT_LT(max_rel_diff(all.to(at::kDouble), exact), tol) << "dtype " << dtype;
  }
  // Without calibration rows the dispatch returns the estimate itself.
  const AttentionOptions plain = calibrated(16, 0);
  EXPECT_TRUE(attention(q, k, v, AttentionOptions(plain).scale(0.5), seeded_call(7))
                  .equal(kdeformer_attention(q, k, v, 0.5, plain.kdeformer(), seeded_call(7))));
  EXPECT_THROW(attention(q, k, v, calibrated(16, -1), seeded_call(7)), c10::Error);
}

TEST(KdeformerCalibration, FiniteAtLargeLogitsInsideTheValueRange) {
  const at::Tensor x = seeded_randn({1, 2, 300, 16}, 621);
  const at::Tensor v = seeded_randn({1, 2, 300, 16}, 622);
  for (at::ScalarType dtype : {at::kDouble, at::kFloat}) {
    for (double scale : {30.0, 1000.0}) {
      const at::Tensor xd = x.to(dtype), vd = v.to(dtype);
      const at::Tensor out = attention(xd, xd, vd, calibrated(32, 16).scale(scale), seeded_call(5));
      EXPECT_EQ(out.scalar_type(), dtype);
      EXPECT_TRUE(out.isfinite().all().item<bool>()) << "scale " << scale;
      const auto [lo, hi] = at::aminmax(vd, 2, /*keepdim=*/true);
      EXPECT_TRUE(out.ge(lo).logical_and(out.le(hi)).all().item<bool>()) << "scale " << scale;
    }
  }
}

TEST(KdeformerCalibration, DeterministicAndBatchIndependent) {
  const at::Tensor x = seeded_randn({3, 2, 96, 8}, 631);
  const at::Tensor v = seeded_randn({3, 2, 96, 4}, 632);
  const AttentionOptions o = calibrated(16, 8);
  kdeserve::testing::expect_deterministic_and_batch_independent(
      [o](const at::Tensor& q, const at::Tensor& k, const at::Tensor& val, double scale,
          const AttentionCall& call) {
        return attention(q, k, val, AttentionOptions(o).scale(scale), call);
      },
      x, v);
}

TEST(KdeformerCalibration, BelowTheTrivialEstimateOnClusteredAttention) {
  // 32 tight clusters of 4096 keys (the synthetic "very peaked" regime's construction) and
  // values independent of them: a block of 8 keys out of a query's ~128-key cluster leaves the
  // far-field estimate no better than every row = mean(V) (0.144 against 0.146); calibrated on
  // 32 rows it is well below both (0.091).
  const int64_t n = 4096, d = 32;
  const kdeserve::testing::ClusteredInputs in = kdeserve::testing::clustered_inputs(n, d, 14.4, 641);
  const at::Tensor& x = in.x;
  const at::Tensor& v = in.v;
  const at::Tensor exact = naive_attention(x, x, v, 1.0)[0][0];
  auto rel = [&](const at::Tensor& est) {
    return (spectral_norm(est - exact) / spectral_norm(exact)).item<double>();
  };
  const double trivial = rel(v[0][0].mean(0, true).expand({n, d}));
  double plain = 0, ours = 0;
  for (uint64_t seed : {1, 2, 3}) {
    plain += rel(attention(x, x, v, calibrated(8, 0).scale(1.0), seeded_call(seed))[0][0]) / 3;
    ours += rel(attention(x, x, v, calibrated(8, 32).scale(1.0), seeded_call(seed))[0][0]) / 3;
  }
  std::cout << "trivial " << trivial << ", far field " << plain << ", calibrated " << ours << "\n";
  EXPECT_LT(ours, 0.9 * std::min(trivial, plain));
}

}  // namespace
}  // namespace kdeserve::attention::kdeformer
