// The fused CPU KDEformer kernel (attention/kdeformer/fused.h) against its oracle, the ATen
// composition (kdeformer.h), with the same randomness: every variant of the kernel this CPU
// runs, both residuals it implements, any n, Nq ≠ Nk, Dv ≠ D, odd head dims, empty query
// blocks, more samples than keys, clamping, large logits; the dispatch and its report; batch
// independence.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "attention/attention.h"
#include "attention/kdeformer/fused.h"
#include "attention/kdeformer/fused_kernel.h"
#include "attention/kdeformer/kdeformer.h"
#include "tests/attention/fused_cases.h"
#include "tests/attention/test_util.h"

namespace kdeserve::attention::kdeformer {
namespace {

using kdeserve::testing::max_rel_diff;
using kdeserve::testing::seeded_randn;
// The shared cases, options and checks of both fused kernels.
using namespace fused_cases;  // NOLINT(google-build-using-namespace)

std::vector<kernel::Isa> variants() { return kernel::supported_isas(); }

// Both implementations with the same call (so the same hyperplanes and samples); the kernel
// must match the oracle to float32 rounding of the logits and sums.
void expect_matches_oracle(const Case& c, const KdeformerOptions& opt, uint64_t seed,
                           double logit_gain, double tolerance) {
  const Inputs in = inputs(c, seed, logit_gain);
  const AttentionCall call = seeded_call(c, seed);
  const at::Tensor oracle = kdeformer_attention(in.q, in.k, in.v, c.scale, opt, call);
  for (const kernel::Isa isa : variants()) {
    const at::Tensor fused = kdeformer_fused_attention(in.q, in.k, in.v, c.scale, opt, call, isa);
    ASSERT_EQ(fused.sizes(), oracle.sizes());
    ASSERT_TRUE(fused.isfinite().all().item<bool>()) << c.name << " " << kernel::isa_name(isa);
    EXPECT_LT(max_rel_diff(fused, oracle), tolerance)
        << c.name << " isa " << kernel::isa_name(isa) << " residual " << to_string(opt.residual())
        << " m " << opt.sample_size() << " clamp " << opt.clamp_output();
  }
}

TEST(KdeformerFused, SampledResidualMatchesTheAtenPath) {
  check_sampled_cases(expect_matches_oracle, 4100);
}

TEST(KdeformerFused, ControlVariateMatchesTheAtenPath) {
  check_control_variate_cases(expect_matches_oracle, 4300);
}

TEST(KdeformerFused, EveryKnobMatchesTheAtenPath) {
  check_every_knob(expect_matches_oracle, 4500);
}

TEST(KdeformerFused, LargeLogitsStayFiniteAndMatch) {
  check_large_logits(expect_matches_oracle, 4700);
}

TEST(KdeformerFused, InjectedRandomnessIsUsed) {
  const Case c = cases()[2];
  const Inputs in = inputs(c, 4800);
  AttentionCall call;
  call.injected.projections = seeded_randn({c.dim, 7}, 4801, at::kFloat);
  call.injected.sample_indices = at::arange(c.samples) * 3 % c.nk;
  const KdeformerOptions opt = options_of(c, Residual::kSampled, c.samples);
  const at::Tensor oracle = kdeformer_attention(in.q, in.k, in.v, c.scale, opt, call);
  const at::Tensor fused = kdeformer_fused_attention(in.q, in.k, in.v, c.scale, opt, call);
  EXPECT_LT(max_rel_diff(fused, oracle), 2e-5);
  // Different hyperplanes give different blocks, so a different estimate.
  call.injected.projections = seeded_randn({c.dim, 7}, 4802, at::kFloat);
  const at::Tensor other = kdeformer_fused_attention(in.q, in.k, in.v, c.scale, opt, call);
  EXPECT_GT(max_rel_diff(other, fused), 1e-3);
}

// An entry's output depends only on its own inputs and seed, not on the rest of the batch.
TEST(KdeformerFused, BatchIndependent) {
  const Case c = cases()[0];
  const Inputs in = inputs(c, 4900);
  const KdeformerOptions opt = options_of(c, Residual::kSampled, c.samples);
  AttentionCall both;
  both.seed = 5;
  both.entry_seeds = {11, 12};
  const at::Tensor batched = kdeformer_fused_attention(in.q, in.k, in.v, c.scale, opt, both);
  AttentionCall alone;
  alone.seed = 5;
  alone.entry_seeds = {12};
  const at::Tensor single = kdeformer_fused_attention(in.q.narrow(0, 1, 1), in.k.narrow(0, 1, 1),
                                                      in.v.narrow(0, 1, 1), c.scale, opt, alone);
  EXPECT_TRUE(at::equal(batched.narrow(0, 1, 1), single));
  EXPECT_TRUE(at::equal(batched, kdeformer_fused_attention(in.q, in.k, in.v, c.scale, opt, both)));
}

// The dispatch: kAuto takes the kernel where it applies and says so in the report; kFused
// where it cannot run falls back with the reason; kAten always runs the composition.
TEST(KdeformerFused, DispatchAndReport) {
  const Case c = cases()[0];
  const Inputs in = inputs(c, 5000);
  AttentionOptions opt(Method::kKdeformer);
  opt.scale(c.scale).kdeformer(options_of(c, Residual::kSampled, c.samples));
  AttentionReport report;
  AttentionCall call;
  call.report = &report;
  const at::Tensor automatic = attention(in.q, in.k, in.v, opt, call);
  EXPECT_EQ(report.backend, fused_backend_name());
  EXPECT_FALSE(report.fell_back) << report.reason;
  EXPECT_EQ(report.num_blocks, 8);
  EXPECT_EQ(report.block_keys, 16);
  EXPECT_EQ(report.sample_size, c.samples);

  opt.kdeformer().kernel(KdeformerKernel::kAten);
  const at::Tensor aten = attention(in.q, in.k, in.v, opt, call);
  EXPECT_EQ(report.backend, "aten-cpu");
  EXPECT_LT(max_rel_diff(automatic, aten), 2e-5);

  opt.kdeformer().kernel(KdeformerKernel::kFused);
  attention(in.q.to(at::kDouble), in.k.to(at::kDouble), in.v.to(at::kDouble), opt, call);
  EXPECT_EQ(report.backend, "aten-cpu");
  EXPECT_TRUE(report.fell_back);
  EXPECT_NE(report.reason.find("float32 only"), std::string::npos) << report.reason;

  opt.kdeformer().kernel(KdeformerKernel::kAuto).residual(Residual::kCoreset);
  attention(in.q, in.k, in.v, opt, call);
  EXPECT_EQ(report.backend, "aten-cpu");
  EXPECT_FALSE(report.fell_back) << report.reason;

  EXPECT_EQ(kdeformer_kernel_from_string("fused"), KdeformerKernel::kFused);
  EXPECT_EQ(to_string(KdeformerKernel::kAten), "aten");
  EXPECT_THROW(kdeformer_kernel_from_string("cuda"), c10::Error);
}

TEST(KdeformerFused, CountingSortIsAStableArgsort) {
  const std::vector<int64_t> ranks = {3, 1, 3, 0, 1, 3, 2, 0};
  std::vector<int64_t> order(ranks.size());
  kernel::counting_sort(ranks.data(), static_cast<int64_t>(ranks.size()), 4, order.data());
  EXPECT_EQ(order, (std::vector<int64_t>{3, 7, 1, 4, 6, 0, 2, 5}));
}

}  // namespace
}  // namespace kdeserve::attention::kdeformer
