// Performer (FAVOR+) and the shared positive random features: unbiasedness, convergence in m,
// stabilisation, the usual invariances, and parity with fly's PerformerAttention and the
// KDEformer authors' Performer.py (fixtures/performer_parity.safetensors).
#include "attention/performer/performer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <memory>

#include "attention/attention.h"
#include "attention/common/random_features.h"
#include "models/weights/safetensors.h"
#include "tests/attention/peer_test_util.h"
#include "tests/attention/test_util.h"
#include "tests/support/peak_memory.h"

namespace kdeserve::attention::performer {
namespace {

using kdeserve::testing::max_rel_diff;
using kdeserve::testing::naive_attention;
using kdeserve::testing::PeakMemoryScope;
using kdeserve::testing::seeded_call;
using kdeserve::testing::seeded_randn;
using kdeserve::testing::with_options;
using random_features::Directions;

// The estimator written densely from its definition with directions w [m, D] (shared by every
// entry and head): φ(x) = m^{-1/2} exp(w x̃ − ‖x̃‖²/2), out = Σ_n φ(q)·φ(k_n) v_n / Σ_n φ(q)·φ(k_n).
// float64; only for logits small enough that nothing overflows.
at::Tensor dense_performer(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           double scale, const at::Tensor& w) {
  const double root = std::sqrt(scale);
  auto phi = [&](const at::Tensor& x) {
    at::Tensor xs = x.to(at::kDouble) * root;
    return (at::matmul(xs, w.to(at::kDouble).t()) - xs.square().sum(-1, true) / 2).exp() /
           std::sqrt(static_cast<double>(w.size(0)));
  };
  at::Tensor kernel = at::matmul(phi(q), phi(k).transpose(-2, -1));  // [B, H, Nq, Nk]
  return at::matmul(kernel, v.to(at::kDouble)) / kernel.sum(-1, true);
}

TEST(RandomFeatures, OrthogonalDirectionsAreOrthogonalWithinBlocksAndGaussianInNorm) {
  at::Generator gen = at::detail::createCPUGenerator(3);
  const at::Tensor w = random_features::draw_directions(20, 8, Directions::kOrthogonal, gen);
  ASSERT_EQ(w.sizes(), (at::IntArrayRef{20, 8}));
  const at::Tensor norms = w.norm(2, {1}, true);
  for (int64_t block = 0; block < 3; ++block) {
    const int64_t rows = block < 2 ? 8 : 4;
    at::Tensor unit = (w / norms).narrow(0, block * 8, rows);
    EXPECT_LT(
        (at::matmul(unit, unit.t()) - at::eye(rows, unit.options())).abs().max().item<double>(),
        1e-12);
  }
  // Norms are χ_8 (mean ≈ 2.74), not all equal to √8 as they would be without the rescaling.
  EXPECT_GT(norms.std().item<double>(), 0.05);
}

TEST(RandomFeatures, StabilizedProductsEqualTheUnshiftedKernel) {
  const at::Tensor a = seeded_randn({2, 5, 6}, 1) * 30;  // logits far outside exp's range
  const at::Tensor b = seeded_randn({2, 7, 6}, 2) * 30;
  const random_features::StabilizedFeatures f = random_features::stabilize(a, b);
  const at::Tensor log_kernel = at::logsumexp(a.unsqueeze(2) + b.unsqueeze(1), {3}) - std::log(6.0);
  const at::Tensor log_est =
      at::matmul(f.query, f.key.transpose(1, 2)).log() + f.log_scale.unsqueeze(2);
  EXPECT_LT((log_est - log_kernel).abs().max().item<double>(), 1e-12);
  EXPECT_TRUE(f.query.amax(2).eq(1).all().item<bool>());
  EXPECT_TRUE(f.key.amax(1).eq(1).all().item<bool>());
}

// E[φ(q)·φ(k)] = exp(scale q·k) for iid and orthogonal directions. Tolerance: 4 standard errors
// of the mean over 4000 independent draws (empirical standard error), and 10 % of the kernel.
// One call draws all of them: m is a multiple of D, so every m consecutive rows are whole,
// independent Haar blocks with their own norms, i.e. one draw.
TEST(RandomFeatures, KernelEstimateIsUnbiased) {
  const int64_t dim = 4, m = 16, draws = 4000;
  const double scale = 0.5;
  const at::Tensor q = seeded_randn({1, 3, dim}, 10);
  const at::Tensor k = seeded_randn({1, 3, dim}, 11);
  const at::Tensor exact = (q * k).sum(-1).mul(scale).exp().squeeze(0);  // pairs (q_i, k_i)
  for (Directions kind : {Directions::kIid, Directions::kOrthogonal}) {
    at::Generator gen = at::detail::createCPUGenerator(1000);
    at::Tensor w = random_features::draw_directions(draws * m, dim, kind, gen).unsqueeze(0);
    at::Tensor a = random_features::log_features(q, w, scale, false);  // [1, 3, draws·m]
    at::Tensor b = random_features::log_features(k, w, scale, false);
    at::Tensor estimates = (a + b).exp().view({3, draws, m}).mean(2);  // [3, draws]
    testing::expect_unbiased_estimates(estimates, exact);
  }
}

TEST(Performer, MatchesTheDenseEstimatorOnOddSizesWithNqNeNkAndDvNeD) {
  const at::Tensor q = seeded_randn({2, 3, 13, 5}, 1) * 0.7;
  const at::Tensor k = seeded_randn({2, 3, 9, 5}, 2) * 0.7;
  const at::Tensor v = seeded_randn({2, 3, 9, 7}, 3);
  const at::Tensor w = seeded_randn({11, 5}, 4);
  AttentionCall call;
  call.injected.features = w;
  for (auto stab :
       {PerformerStabilizer::kNone, PerformerStabilizer::kRowGlobal, PerformerStabilizer::kJoint}) {
    const at::Tensor out = performer_attention(
        q, k, v, 0.4, PerformerOptions().num_features(11).stabilizer(stab), call);
    ASSERT_EQ(out.sizes(), (at::IntArrayRef{2, 3, 13, 7}));
    EXPECT_LT(max_rel_diff(out, dense_performer(q, k, v, 0.4, w)), 1e-12);
  }
}

TEST(Performer, PerHeadInjectedFeaturesAreUsedPerHead) {
  const at::Tensor q = seeded_randn({2, 2, 6, 4}, 1), k = seeded_randn({2, 2, 8, 4}, 2);
  const at::Tensor v = seeded_randn({2, 2, 8, 3}, 3);
  const at::Tensor w = seeded_randn({2, 2, 10, 4}, 4);
  AttentionCall call;
  call.injected.features = w;
  const at::Tensor out =
      performer_attention(q, k, v, 0.5, PerformerOptions().num_features(10), call);
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t h = 0; h < 2; ++h) {
      auto sl = [&](const at::Tensor& x) { return x.slice(0, b, b + 1).slice(1, h, h + 1); };
      EXPECT_LT(max_rel_diff(sl(out), dense_performer(sl(q), sl(k), sl(v), 0.5, w[b][h])), 1e-12);
    }
  }
  call.injected.features = seeded_randn({9, 4}, 5);
  EXPECT_THROW(performer_attention(q, k, v, 0.5, PerformerOptions().num_features(10), call),
               c10::Error);
}

// Error against exact attention shrinks with m (mean over 4 seeds; the 1/√m rate predicts a
// factor 4 per 16× features, required: a factor 2). Moderate norms (‖q̃‖² ≈ 0.7): with larger
// ones the estimator is heavy-tailed and needs far more features (peers.md §6).
TEST(Performer, ErrorShrinksAsFeaturesGrow) {
  testing::expect_error_shrinks_as_features_grow([](const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v, double scale, int64_t m,
                                                    const AttentionCall& call) {
    return performer_attention(q, k, v, scale, PerformerOptions().num_features(m), call);
  });
}

TEST(Performer, FiniteAtLargeLogitsAndAConvexCombinationOfValues) {
  for (auto dtype : {at::kFloat, at::kDouble}) {
    // ‖q‖ ≈ ‖k‖ ≈ 40: logits of a few hundred, ‖q̃‖²/2 ≈ 800.
    const at::Tensor q = seeded_randn({1, 2, 33, 16}, 1, dtype) * 10;
    const at::Tensor k = seeded_randn({1, 2, 40, 16}, 2, dtype) * 10;
    const at::Tensor v = seeded_randn({1, 2, 40, 3}, 3, dtype);
    const at::Tensor out = performer_attention(q, k, v, 1.0, PerformerOptions(), seeded_call(1));
    ASSERT_TRUE(at::isfinite(out).all().item<bool>()) << dtype;
    const at::Tensor vmin = v.amin(2, true), vmax = v.amax(2, true);
    const double tol = dtype == at::kFloat ? 1e-5 : 1e-12;
    EXPECT_TRUE((out >= vmin - tol).all().item<bool>() && (out <= vmax + tol).all().item<bool>());
    // The unshifted reference mode overflows here (why upstream runs it in float64 on scaled
    // inputs); the stabilised fly mode loses every query feature to underflow.
    const at::Tensor none = performer_attention(
        q, k, v, 1.0, PerformerOptions().stabilizer(PerformerStabilizer::kNone), seeded_call(1));
    EXPECT_FALSE(at::isfinite(none).all().item<bool>()) << dtype;
    const at::Tensor fly = performer_attention(
        q, k, v, 1.0, PerformerOptions().stabilizer(PerformerStabilizer::kRowGlobal),
        seeded_call(1));
    EXPECT_FALSE(at::isfinite(fly).all().item<bool>()) << dtype;
  }
}

TEST(Performer, Float32MatchesFloat64) {
  const at::Tensor q = seeded_randn({2, 2, 17, 8}, 1), k = seeded_randn({2, 2, 23, 8}, 2);
  const at::Tensor v = seeded_randn({2, 2, 23, 6}, 3);
  testing::expect_float32_matches_float64(with_options(performer_attention, PerformerOptions()), q,
                                          k, v, 0.35, 1e-5);
}

TEST(Performer, DeterministicPerSeedAndEntriesAreIndependent) {
  const at::Tensor q = seeded_randn({2, 2, 12, 6}, 1), k = seeded_randn({2, 2, 10, 6}, 2);
  const at::Tensor v = seeded_randn({2, 2, 10, 5}, 3);
  testing::expect_deterministic_and_entries_independent(
      with_options(performer_attention, PerformerOptions().num_features(16)), q, k, v, 0.4);
}

TEST(Performer, ValueShiftShiftsTheOutput) {
  const at::Tensor q = seeded_randn({1, 1, 9, 4}, 1), k = seeded_randn({1, 1, 7, 4}, 2);
  const at::Tensor v = seeded_randn({1, 1, 7, 3}, 3);
  testing::expect_value_shift_shifts_output(with_options(performer_attention, PerformerOptions()),
                                            q, k, v, 0.5);
}

TEST(Performer, DispatchReportsFeaturesAndHasNoExactLimit) {
  EXPECT_TRUE(exact_reason(PerformerOptions().num_features(1), 1, 1).empty());
  EXPECT_TRUE(exact_reason(PerformerOptions().num_features(100000), 4, 4).empty());
  const at::Tensor q = seeded_randn({1, 2, 5, 4}, 1), k = seeded_randn({1, 2, 6, 4}, 2);
  const at::Tensor v = seeded_randn({1, 2, 6, 3}, 3);
  AttentionReport report;
  AttentionCall call;
  call.report = &report;
  const at::Tensor out = attention(
      q, k, v,
      AttentionOptions().method(Method::kPerformer).performer(PerformerOptions().num_features(24)),
      call);
  EXPECT_EQ(report.ran, Method::kPerformer);
  EXPECT_EQ(report.num_features, 24);
  EXPECT_EQ(out.sizes(), (at::IntArrayRef{1, 2, 5, 3}));
}

// No Nq × Nk tensor: the extra memory grows linearly in n and stays below n² bytes.
TEST(Performer, MemoryIsLinearInTheSequenceLength) {
  const int64_t m = 64, d = 64;
  testing::expect_memory_linear_in_sequence_length(
      with_options(performer_attention, PerformerOptions().num_features(m)),
      [&](int64_t n) { return 8 * n * (m + 2 * d) * 4; });
}

TEST(Performer, RejectsBadOptions) {
  const at::Tensor q = seeded_randn({1, 1, 3, 2}, 1);
  EXPECT_THROW(performer_attention(q, q, q, 1.0, PerformerOptions().num_features(0)), c10::Error);
  EXPECT_THROW(performer_attention(q, q, q, 1.0, PerformerOptions().feature_eps(-1)), c10::Error);
  EXPECT_THROW(exact_reason(PerformerOptions().normalization_eps(NAN), 3, 3), c10::Error);
}

class PerformerParity : public ::testing::Test {
 protected:
  void SetUp() override {
    file_ = std::make_unique<models::SafetensorsFile>(models::SafetensorsFile::open(
        std::string(KDESERVE_PEER_FIXTURE_DIR) + "/performer_parity.safetensors"));
  }
  at::Tensor get(const std::string& name) const { return file_->get(name); }
  std::unique_ptr<models::SafetensorsFile> file_;
};

TEST_F(PerformerParity, FlyPerformerAttention) {
  AttentionCall call;
  call.injected.features = get("fly_features");
  const double scale = get("fly_scale").item<double>();
  const at::Tensor q = get("fly_q"), k = get("fly_k"), v = get("fly_v");
  const PerformerOptions fly =
      PerformerOptions().num_features(10).stabilizer(PerformerStabilizer::kRowGlobal);
  const double d0 =
      max_rel_diff(performer_attention(q, k, v, scale, fly, call), get("fly_out_eps0"));
  const double d_joint =
      max_rel_diff(performer_attention(q, k, v, scale, PerformerOptions().num_features(10), call),
                   get("fly_out_eps0"));
  const double d_eps = max_rel_diff(
      performer_attention(q, k, v, scale,
                          PerformerOptions(fly).feature_eps(1e-4).normalization_eps(1e-6), call),
      get("fly_out_default_eps"));
  std::cout << "fly PerformerAttention: eps 0 (kRowGlobal) " << d0 << ", eps 0 (kJoint) " << d_joint
            << ", eps 1e-4/1e-6 (kRowGlobal) " << d_eps << "\n";
  EXPECT_LT(d0, 1e-12);
  EXPECT_LT(d_joint, 1e-12);
  EXPECT_LT(d_eps, 1e-12);
}

TEST_F(PerformerParity, KdeformerPerformerPy) {
  AttentionCall call;
  call.injected.features = get("ref_features");
  const at::Tensor q = get("ref_q"), k = get("ref_k"), v = get("ref_v");
  const PerformerOptions ref =
      PerformerOptions().num_features(12).orthogonal(false).stabilizer(PerformerStabilizer::kNone);
  const double d1 = max_rel_diff(performer_attention(q, k, v, 1.0, ref, call), get("ref_out"));
  // Performer.py has no temperature: scale s here is Performer.py on inputs times √s.
  const double s = 0.3;
  const double ds = max_rel_diff(
      performer_attention(q / std::sqrt(s), k / std::sqrt(s), v, s, ref, call), get("ref_out"));
  std::cout << "KDEformer Performer.py: scale 1 " << d1 << ", scale 0.3 on rescaled inputs " << ds
            << "\n";
  EXPECT_LT(d1, 1e-12);
  EXPECT_LT(ds, 1e-12);
}

}  // namespace
}  // namespace kdeserve::attention::performer
