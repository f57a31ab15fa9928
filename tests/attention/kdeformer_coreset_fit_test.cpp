// KDEformer's query-fitted coreset far field (KdeformerOptions::coreset_fit_rows;
// attention/kdeformer/coreset_fit.h): the fitted correction against explicit ridge solves and
// leave-one-out refits, the exact rows and the exact limit, option checks, large logits,
// determinism and batch independence, and that it beats the Nyström coreset on diffuse
// clustered attention at the same budget; the same for the fitted far field
// (Residual::kFittedFarField: the far field as the fit's baseline), which beats both the far
// field and the fitted coreset at small budgets.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <limits>

#include "attention/attention.h"
#include "attention/kdeformer/coreset_fit.h"
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

AttentionOptions fitted(int64_t b, int64_t r, int64_t rows,
                        Residual residual = Residual::kCoreset) {
  AttentionOptions o(Method::kKdeformer);
  o.kdeformer()
      .bucket_size(b)
      .sample_size(r)
      .residual(residual)
      .clamp_output(true)
      .coreset_fit_rows(rows);
  return o;
}

// ‖est − exact‖₂ / ‖exact‖₂, the paper's error.
double relative_error(const at::Tensor& est, const at::Tensor& exact) {
  return (spectral_norm(est - exact) / spectral_norm(exact)).item<double>();
}

// Rows of `out` [Nq, Dv] equal to those of `exact` within tol.
int64_t exact_rows(const at::Tensor& out, const at::Tensor& exact, double tol) {
  return (out - exact).abs().amax(1).le(tol).sum().item<int64_t>();
}

TEST(KdeformerCoresetFit, MatchesExplicitRidgeSolvesAndLeaveOneOutRefits) {
  // One group per head, R = Nq = 24 rows (row_of_query the identity), S = 5, t = 14 rows.
  const int64_t heads = 2, n = 24, nk = 30, d = 4, dv = 3, s = 5, t = 14;
  const at::Tensor qs = seeded_randn({heads, n, d}, 701).mul_(0.6);
  const at::Tensor k3 = seeded_randn({heads, nk, d}, 702).mul_(0.6);
  const at::Tensor v3 = seeded_randn({heads, nk, dv}, 703);
  const at::Tensor shift = at::bmm(qs, k3.transpose(1, 2)).amax(2).sub_(0.3);  // [G, R]
  const at::Tensor p_cs = seeded_randn({heads, n, s}, 704).mul_(0.5).exp_().mul_(0.2);
  const at::Tensor off = seeded_randn({heads, n, dv + 1}, 705).mul_(0.1).add_(1.5);
  const at::Tensor block_num = seeded_randn({heads, n, dv}, 706).mul_(0.2);
  const at::Tensor block_den = seeded_randn({heads, n}, 707).abs_().add_(0.5);
  const at::Tensor row_of_query = at::arange(n, at::kLong).unsqueeze(0).expand({heads, n});
  const CoresetFit fit = fit_coreset_values(p_cs, off, block_num, block_den, shift, qs, k3, v3,
                                            row_of_query.contiguous(), t, 1, heads,
                                            seeded_call(9));
  ASSERT_EQ(fit.rows.sizes(), (at::IntArrayRef{heads, t}));
  ASSERT_EQ(fit.delta.sizes(), (at::IntArrayRef{heads, s, dv + 1}));
  const at::Tensor v1 = at::cat({v3, at::ones({heads, nk, 1}, v3.options())}, 2);
  for (int64_t g = 0; g < heads; ++g) {
    const at::Tensor idx = fit.rows[g];
    // Exact sums of the drawn rows in the estimate's units, their weights 1 / D.
    const at::Tensor y =
        at::matmul(qs[g].index_select(0, idx).matmul(k3[g].t()).sub(
                       shift[g].index_select(0, idx).unsqueeze(1)).exp(), v1[g]);  // [t, Dv+1]
    EXPECT_LT(max_rel_diff(fit.exact[g], y.narrow(1, 0, dv) / y.narrow(1, dv, 1)), 1e-12);
    const at::Tensor w = y.select(1, dv).reciprocal().unsqueeze(1);
    const at::Tensor own = at::cat({block_num[g], block_den[g].unsqueeze(1)}, 1) + off[g];
    const at::Tensor r = (y - own.index_select(0, idx)) * w;
    const at::Tensor x = p_cs[g].index_select(0, idx) * w;
    const double mean_diag = x.square().sum().item<double>() / s;
    auto solve = [&](const at::Tensor& xs, const at::Tensor& rs, double rho) {
      return at::linalg_solve(xs.t().matmul(xs) + rho * at::eye(s, x.options()), xs.t().matmul(rs));
    };
    double best = r.square().sum().item<double>();
    at::Tensor expected = at::zeros({s, dv + 1}, x.options());
    for (const double ratio : kCoresetFitRidges) {
      const double rho = ratio * mean_diag;
      double press = 0;
      for (int64_t i = 0; i < t; ++i) {
        const at::Tensor keep = at::cat({at::arange(i), at::arange(i + 1, t)});
        const at::Tensor refit = solve(x.index_select(0, keep), r.index_select(0, keep), rho);
        press += (r[i] - x[i].matmul(refit)).square().sum().item<double>();
      }
      if (press < best) {
        best = press;
        expected = solve(x, r, rho);
      }
    }
    EXPECT_LT(max_rel_diff(fit.delta[g], expected), 1e-8) << "group " << g;
  }
  EXPECT_THROW(fit_coreset_values(p_cs, off, block_num, block_den, shift, qs, k3, v3,
                                  row_of_query.contiguous(), 0, 1, heads, seeded_call(9)),
               c10::Error);
}

TEST(KdeformerCoresetFit, TheGuardKeepsRowsWhoseMassTheFitMovesTooFar) {
  // One group, 4 rows, S = 1, Dv = 1: p_cs·ΔU adds 0, 1.5, 3.5 and −1.5 to the denominators
  // 2 (block 1 + off 1) of the rows.
  const at::Tensor off = at::tensor({0.5, 1.0, 0.5, 1.0, 0.5, 1.0, 0.5, 1.0}, at::kDouble)
                             .view({1, 4, 2});
  const at::Tensor p_cs = at::tensor({0.0, 1.0, 3.5 / 1.5, -1.0}, at::kDouble).view({1, 4, 1});
  const at::Tensor block_den = at::ones({1, 4}, at::kDouble);
  const at::Tensor delta = at::tensor({0.25, 1.5}, at::kDouble).view({1, 1, 2});
  const at::Tensor out = apply_coreset_fit(off, p_cs, block_den, delta)[0];
  EXPECT_DOUBLE_EQ(out[0][1].item<double>(), 1.0);        // unchanged by ΔU
  EXPECT_DOUBLE_EQ(out[1][1].item<double>(), 2.5);        // 2 → 3.5: within 2×, fitted
  EXPECT_DOUBLE_EQ(out[1][0].item<double>(), 0.75);
  EXPECT_DOUBLE_EQ(out[2][1].item<double>(), 1.0);        // 2 → 5.5: kept at Nyström
  EXPECT_DOUBLE_EQ(out[3][1].item<double>(), 1.0);        // 2 → 0.5: kept at Nyström
  EXPECT_DOUBLE_EQ(out[3][0].item<double>(), 0.5);
}

TEST(KdeformerCoresetFit, ExactRowsTheExactLimitAndOptionChecks) {
  const at::Tensor q = seeded_randn({1, 2, 90, 8}, 711).mul_(0.8);
  const at::Tensor k = seeded_randn({1, 2, 120, 8}, 712).mul_(0.8);
  const at::Tensor v = seeded_randn({1, 2, 120, 5}, 713);
  const at::Tensor exact = naive_attention(q, k, v, 0.5);
  for (Residual residual : {Residual::kCoreset, Residual::kFittedFarField}) {
    for (at::ScalarType dtype : {at::kDouble, at::kFloat}) {
      const double tol = dtype == at::kDouble ? 1e-12 : 1e-5;
      const at::Tensor qd = q.to(dtype), kd = k.to(dtype), vd = v.to(dtype);
      AttentionReport report;
      AttentionCall call = seeded_call(7);
      call.report = &report;
      const at::Tensor out = attention(qd, kd, vd, fitted(16, 20, 30, residual).scale(0.5), call);
      EXPECT_EQ(report.coreset_fit_rows, 30);
      EXPECT_EQ(report.coreset_size, 20);
      EXPECT_EQ(report.sample_size, 0);
      EXPECT_EQ(report.backend, "aten-cpu");
      for (int64_t h = 0; h < 2; ++h) {
        EXPECT_GE(exact_rows(out.to(at::kDouble)[0][h], exact[0][h], tol), 30)
            << dtype << " " << to_string(residual);
      }
      // t ≥ Nq: every row exact.
      const at::Tensor all =
          attention(qd, kd, vd, fitted(16, 20, 500, residual).scale(0.5), seeded_call(7));
      EXPECT_LT(max_rel_diff(all.to(at::kDouble), exact), tol) << dtype << to_string(residual);
    }
  }
  // A coreset of every key is exact already: the fit leaves it so.
  const at::Tensor full = attention(q, k, v, fitted(16, 200, 40).scale(0.5), seeded_call(7));
  EXPECT_LT(max_rel_diff(full, exact), 1e-9);
  AttentionOptions sampled = fitted(16, 20, 8);
  sampled.kdeformer().residual(Residual::kSampled);
  EXPECT_THROW(attention(q, k, v, sampled, seeded_call(7)), c10::Error);
  EXPECT_THROW(attention(q, k, v, fitted(16, 20, -1), seeded_call(7)), c10::Error);
  // The fitted far field needs its fit rows and its coreset keys.
  EXPECT_THROW(attention(q, k, v, fitted(16, 20, 0, Residual::kFittedFarField), seeded_call(7)),
               c10::Error);
  EXPECT_THROW(attention(q, k, v, fitted(16, 0, 8, Residual::kFittedFarField), seeded_call(7)),
               c10::Error);
  EXPECT_EQ(residual_from_string(to_string(Residual::kFittedFarField)),
            Residual::kFittedFarField);
}

TEST(KdeformerCoresetFit, FiniteAtLargeLogitsInsideTheValueRange) {
  const at::Tensor x = seeded_randn({1, 2, 300, 16}, 721);
  const at::Tensor v = seeded_randn({1, 2, 300, 16}, 722);
  for (Residual residual : {Residual::kCoreset, Residual::kFittedFarField}) {
    for (at::ScalarType dtype : {at::kDouble, at::kFloat}) {
      for (double scale : {30.0, 1000.0}) {
        const at::Tensor xd = x.to(dtype), vd = v.to(dtype);
        const at::Tensor out =
            attention(xd, xd, vd, fitted(16, 24, 64, residual).scale(scale), seeded_call(5));
        EXPECT_EQ(out.scalar_type(), dtype);
        EXPECT_TRUE(out.isfinite().all().item<bool>()) << "scale " << scale;
        const auto [lo, hi] = at::aminmax(vd, 2, /*keepdim=*/true);
        EXPECT_TRUE(out.ge(lo).logical_and(out.le(hi)).all().item<bool>())
            << "scale " << scale << " " << to_string(residual);
      }
    }
  }
}

TEST(KdeformerCoresetFit, DeterministicAndBatchIndependent) {
  const at::Tensor x = seeded_randn({3, 2, 96, 8}, 731);
  const at::Tensor v = seeded_randn({3, 2, 96, 4}, 732);
  for (Residual residual : {Residual::kCoreset, Residual::kFittedFarField}) {
    const AttentionOptions o = fitted(8, 16, 24, residual);
    kdeserve::testing::expect_deterministic_and_batch_independent(
        [o](const at::Tensor& q, const at::Tensor& k, const at::Tensor& val, double scale,
            const AttentionCall& call) {
          return attention(q, k, val, AttentionOptions(o).scale(scale), call);
        },
        x, v);
  }
}

TEST(KdeformerCoresetFit, BeatsTheNystromCoresetOnDiffuseClusteredAttention) {
  // The synthetic "diffuse" regime's construction (32 clusters, mean squared logit 3.6) at
  // n = 2048, b = 16, r = 112: fitted on 4r rows the error is well under the Nyström coreset's.
  const int64_t n = 2048, d = 32;
  const kdeserve::testing::ClusteredInputs in = kdeserve::testing::clustered_inputs(n, d, 3.6, 741);
  const at::Tensor& x = in.x;
  const at::Tensor& v = in.v;
  const at::Tensor exact = naive_attention(x, x, v, 1.0)[0][0];
  auto rel = [&](const at::Tensor& est) { return relative_error(est, exact); };
  double plain = 0, ours = 0;
  for (uint64_t seed : {1, 2, 3}) {
    plain += rel(attention(x, x, v, fitted(16, 112, 0).scale(1.0), seeded_call(seed))[0][0]) / 3;
    ours += rel(attention(x, x, v, fitted(16, 112, 448).scale(1.0), seeded_call(seed))[0][0]) / 3;
  }
  std::cout << "Nyström coreset " << plain << ", fitted " << ours << "\n";
  EXPECT_LT(ours, 0.8 * plain);
}

TEST(KdeformerCoresetFit, TheFittedFarFieldBeatsBothAtSmallBudgets) {
  // The same diffuse construction at n = 4096, m = 64 per query: the far field alone (b = 64, no
  // samples), the fitted coreset and the fitted far field (both b = 4, r = 60, t = 4r = 240).
  const int64_t n = 4096, d = 32;
  const kdeserve::testing::ClusteredInputs in = kdeserve::testing::clustered_inputs(n, d, 3.6, 751);
  const at::Tensor& x = in.x;
  const at::Tensor& v = in.v;
  const at::Tensor exact = naive_attention(x, x, v, 1.0)[0][0];
  auto rel = [&](const at::Tensor& est) { return relative_error(est, exact); };
  AttentionOptions far_field(Method::kKdeformer);
  far_field.scale(1.0).kdeformer().bucket_size(64).sample_size(0).clamp_output(true).residual(
      Residual::kControlVariate);
  double ff = 0, coreset = 0, ours = 0;
  for (uint64_t seed : {1, 2, 3}) {
    ff += rel(attention(x, x, v, far_field, seeded_call(seed))[0][0]) / 3;
    coreset += rel(attention(x, x, v, fitted(4, 60, 240).scale(1.0), seeded_call(seed))[0][0]) / 3;
    ours += rel(attention(x, x, v, fitted(4, 60, 240, Residual::kFittedFarField).scale(1.0),
                          seeded_call(seed))[0][0]) /
            3;
  }
  std::cout << "far field " << ff << ", fitted coreset " << coreset << ", fitted far field "
            << ours << "\n";
  // 0.0057 against 0.0062 and 0.0105 here; the margin grows with n (at n = 16384, m = 64:
  // 0.0030 against the fitted coreset's 0.0038, bench/RESULTS.md).
  EXPECT_LT(ours, 0.95 * std::min(ff, coreset));
}

}  // namespace
}  // namespace kdeserve::attention::kdeformer
