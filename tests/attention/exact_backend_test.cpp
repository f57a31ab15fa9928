// The exact-attention backends behind attention()'s dispatch: ours (chunked) and SDPA's fused
// kernel, each against the naive float64 oracle, the auto choice, fallbacks with reasons, large
// logits and batch independence.
#include <gtest/gtest.h>

#include <tuple>

#include "attention/attention.h"
#include "attention/sdpa.h"
#include "tests/attention/test_util.h"

namespace kdeserve::attention {
namespace {

using kdeserve::testing::max_rel_diff;
using kdeserve::testing::naive_attention;
using kdeserve::testing::seeded_randn;

AttentionOptions exact_on(ExactBackend backend) {
  AttentionOptions o(Method::kExact);
  o.exact().backend(backend);
  return o;
}

// Runs attention() and returns (output, report).
std::tuple<at::Tensor, AttentionReport> run(const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& v, const AttentionOptions& o) {
  AttentionReport report;
  AttentionCall call;
  call.report = &report;
  at::Tensor out = attention(q, k, v, o, call);
  return {out, report};
}

class EveryExactBackend : public ::testing::TestWithParam<ExactBackend> {
 protected:
  void SetUp() override {
    if (GetParam() == ExactBackend::kSdpa && !sdpa_compiled()) {
      GTEST_SKIP() << "this LibTorch has no scaled_dot_product_attention";
    }
  }
};

TEST_P(EveryExactBackend, Float32MatchesNaiveFloat64) {
  const at::Tensor q = seeded_randn({2, 3, 130, 32}, 1, at::kFloat);
  const at::Tensor k = seeded_randn({2, 3, 97, 32}, 2, at::kFloat);
  const at::Tensor v = seeded_randn({2, 3, 97, 32}, 3, at::kFloat);
  auto [out, report] = run(q, k, v, exact_on(GetParam()));
  EXPECT_FALSE(report.fell_back) << report.reason;
  EXPECT_EQ(out.scalar_type(), at::kFloat);
  EXPECT_LT(max_rel_diff(out, naive_attention(q, k, v, 1 / std::sqrt(32.0))), 2e-6);
}

TEST_P(EveryExactBackend, Float64MatchesNaiveTo1e12) {
  const at::Tensor q = seeded_randn({1, 2, 150, 16}, 4);
  const at::Tensor k = seeded_randn({1, 2, 300, 16}, 5);
  const at::Tensor v = seeded_randn({1, 2, 300, 16}, 6);
  auto [out, report] = run(q, k, v, exact_on(GetParam()).scale(0.4));
  EXPECT_FALSE(report.fell_back) << report.reason;
  EXPECT_LT(max_rel_diff(out, naive_attention(q, k, v, 0.4)), 1e-12);
}

TEST_P(EveryExactBackend, FiniteAndAccurateAtLogitsOf1e4) {
  const at::Tensor q = seeded_randn({1, 1, 64, 8}, 7).mul_(40.0);
  const at::Tensor k = seeded_randn({1, 1, 64, 8}, 8).mul_(40.0);
  const at::Tensor v = seeded_randn({1, 1, 64, 8}, 9);
  ASSERT_GT(at::matmul(q, k.transpose(-2, -1)).abs().max().item<double>(), 5e3);
  auto [out, report] = run(q, k, v, exact_on(GetParam()).scale(1.0));
  EXPECT_TRUE(at::isfinite(out).all().item<bool>());
  EXPECT_LT(max_rel_diff(out, naive_attention(q, k, v, 1.0)), 1e-10);
}

TEST_P(EveryExactBackend, EntryOutputDoesNotDependOnTheBatch) {
  // Bit for bit: a request's result must not change with what it was batched with.
  const at::Tensor q = seeded_randn({4, 2, 77, 16}, 10, at::kFloat);
  const at::Tensor k = seeded_randn({4, 2, 91, 16}, 11, at::kFloat);
  const at::Tensor v = seeded_randn({4, 2, 91, 16}, 12, at::kFloat);
  auto [batched, report] = run(q, k, v, exact_on(GetParam()));
  for (int64_t b = 0; b < 4; ++b) {
    auto [alone, r] = run(q.narrow(0, b, 1), k.narrow(0, b, 1), v.narrow(0, b, 1),
                          exact_on(GetParam()));
    EXPECT_TRUE(at::equal(alone, batched.narrow(0, b, 1))) << "entry " << b;
  }
}

TEST_P(EveryExactBackend, HalfPrecisionComputesInFloat32) {
  const at::Tensor q = seeded_randn({1, 2, 40, 16}, 13, at::kHalf);
  const at::Tensor k = seeded_randn({1, 2, 50, 16}, 14, at::kHalf);
  const at::Tensor v = seeded_randn({1, 2, 50, 16}, 15, at::kHalf);
  auto [out, report] = run(q, k, v, exact_on(GetParam()));
  EXPECT_EQ(out.scalar_type(), at::kHalf);
  EXPECT_NE(report.reason.find("computed in float32"), std::string::npos) << report.reason;
  EXPECT_LT(max_rel_diff(out, naive_attention(q, k, v, 0.25)), 2e-3);
}

INSTANTIATE_TEST_SUITE_P(Backends, EveryExactBackend,
                         ::testing::Values(ExactBackend::kChunked, ExactBackend::kSdpa),
                         [](const auto& info) { return to_string(info.param); });

TEST(ExactBackendChoice, ReportsTheBackendThatRan) {
  const at::Tensor q = seeded_randn({1, 2, 64, 16}, 16, at::kFloat);
  auto [chunked_out, chunked] = run(q, q, q, exact_on(ExactBackend::kChunked));
  EXPECT_EQ(chunked.backend, "aten-cpu");
  EXPECT_FALSE(chunked.fell_back);
  auto [auto_out, automatic] = run(q, q, q, exact_on(ExactBackend::kAuto));
  EXPECT_FALSE(automatic.fell_back) << automatic.reason;
  if (sdpa_compiled()) {
    // Measured faster wherever SDPA has a fused kernel (bench/RESULTS.md).
    EXPECT_EQ(automatic.backend, "sdpa-flash-cpu");
  } else {
    EXPECT_EQ(automatic.backend, "aten-cpu");
  }
  EXPECT_LT(max_rel_diff(auto_out, chunked_out), 2e-6);
}

TEST(ExactBackendChoice, AutoTakesTheChunkedPathWithoutAFusedKernelAndSaysNothing) {
  // SDPA has no fused CPU kernel for Dv != D (BigGAN's 64 / 256): auto is not a fallback.
  const at::Tensor q = seeded_randn({1, 1, 48, 16}, 17, at::kFloat);
  const at::Tensor v = seeded_randn({1, 1, 48, 64}, 18, at::kFloat);
  const SdpaChoice choice = sdpa_choice(q, q, v, 0.25);
  EXPECT_FALSE(choice.fused);
  EXPECT_FALSE(choice.reason.empty());
  auto [out, report] = run(q, q, v, exact_on(ExactBackend::kAuto));
  EXPECT_EQ(report.backend, "aten-cpu");
  EXPECT_FALSE(report.fell_back) << report.reason;
}

TEST(ExactBackendChoice, RequestedSdpaWithoutAFusedKernelFallsBackWithTheReason) {
  const at::Tensor q = seeded_randn({1, 1, 48, 16}, 19, at::kFloat);
  const at::Tensor v = seeded_randn({1, 1, 48, 64}, 20, at::kFloat);
  auto [out, report] = run(q, q, v, exact_on(ExactBackend::kSdpa));
  EXPECT_EQ(report.backend, "aten-cpu");
  EXPECT_TRUE(report.fell_back);
  EXPECT_NE(report.reason.find("exact backend sdpa unavailable"), std::string::npos)
      << report.reason;
  if (!sdpa_compiled()) {
    EXPECT_NE(report.reason.find("has no scaled_dot_product_attention"), std::string::npos);
  }
  EXPECT_LT(max_rel_diff(out, naive_attention(q, q, v, 0.25)), 2e-6);
}

TEST(ExactBackendChoice, EmptyQueriesNeedNoKernel) {
  const at::Tensor q = at::zeros({1, 2, 0, 8});
  const at::Tensor k = seeded_randn({1, 2, 5, 8}, 21, at::kFloat);
  for (ExactBackend b : {ExactBackend::kAuto, ExactBackend::kSdpa, ExactBackend::kChunked}) {
    auto [out, report] = run(q, k, k, exact_on(b));
    EXPECT_EQ(out.sizes(), (std::vector<int64_t>{1, 2, 0, 8}));
  }
}

TEST(ExactBackendChoice, KdeformerFallbackToExactUsesTheSameChoice) {
  const at::Tensor q = seeded_randn({1, 1, 40, 16}, 22, at::kFloat);
  AttentionOptions o(Method::kKdeformer);
  o.kdeformer().bucket_size(64);  // >= Nk: KDEformer would be exact attention
  auto [out, report] = run(q, q, q, o);
  EXPECT_EQ(report.ran, Method::kExact);
  EXPECT_EQ(report.backend, sdpa_compiled() ? "sdpa-flash-cpu" : "aten-cpu");
}

TEST(ExactBackendNames, RoundTrip) {
  for (ExactBackend b : {ExactBackend::kAuto, ExactBackend::kChunked, ExactBackend::kSdpa}) {
    EXPECT_EQ(exact_backend_from_string(to_string(b)), b);
  }
  EXPECT_THROW(exact_backend_from_string("flash"), c10::Error);
}

}  // namespace
}  // namespace kdeserve::attention
