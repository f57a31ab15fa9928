// The fused CUDA KDEformer kernel (attention/kdeformer/fused_cuda.h) against its oracle, the
// ATen composition on the same GPU (kdeformer.h), with the same randomness: both residuals it
// implements on every shape the CPU kernel is checked on (fused_cases.h), every knob, large
// logits, the model shapes (many blocks, several thread blocks per diagonal block, Dv = 256),
// batch independence and determinism, the dispatch and its report. Skipped, with the reason,
// without a CUDA build or a GPU.
#include <gtest/gtest.h>

#include <string>

#include "attention/attention.h"
#include "attention/kdeformer/fused.h"
#include "attention/kdeformer/kdeformer.h"
#include "tests/attention/fused_cases.h"
#include "tests/attention/test_util.h"
#include "tests/support/cuda_skip.h"

namespace kdeserve::attention::kdeformer {
namespace {

// The shared cases, options and checks of both fused kernels.
using namespace fused_cases;  // NOLINT(google-build-using-namespace)
using kdeserve::testing::max_rel_diff;
using kdeserve::testing::seeded_randn;

const at::Device kCuda(at::kCUDA, 0);

// Both implementations on the GPU with the same call, so the same hyperplanes, hash order and
// samples; the kernel must match the oracle to float32 rounding of the logits and sums.
void expect_matches_oracle(const Case& c, const KdeformerOptions& opt, uint64_t seed,
                           double logit_gain, double tolerance) {
  const Inputs in = inputs(c, seed, logit_gain);
  const at::Tensor q = in.q.to(kCuda), k = in.k.to(kCuda), v = in.v.to(kCuda);
  const AttentionCall call = seeded_call(c, seed);
  const at::Tensor oracle = kdeformer_attention(q, k, v, c.scale, opt, call).cpu();
  const at::Tensor fused = kdeformer_fused_attention(q, k, v, c.scale, opt, call);
  ASSERT_TRUE(fused.is_cuda());
  ASSERT_EQ(fused.sizes(), oracle.sizes());
  const at::Tensor got = fused.cpu();
  ASSERT_TRUE(got.isfinite().all().item<bool>()) << c.name;
  EXPECT_LT(max_rel_diff(got, oracle), tolerance)
      << c.name << " residual " << to_string(opt.residual()) << " m " << opt.sample_size()
      << " clamp " << opt.clamp_output();
}

TEST(KdeformerFusedOnCuda, SampledResidualMatchesTheAtenPath) {
  KDESERVE_SKIP_WITHOUT_CUDA();
  check_sampled_cases(expect_matches_oracle, 6100);
}

TEST(KdeformerFusedOnCuda, ControlVariateMatchesTheAtenPath) {
  KDESERVE_SKIP_WITHOUT_CUDA();
  check_control_variate_cases(expect_matches_oracle, 6300);
}

TEST(KdeformerFusedOnCuda, EveryKnobMatchesTheAtenPath) {
  KDESERVE_SKIP_WITHOUT_CUDA();
  check_every_knob(expect_matches_oracle, 6500);
}

TEST(KdeformerFusedOnCuda, LargeLogitsStayFiniteAndMatch) {
  KDESERVE_SKIP_WITHOUT_CUDA();
  check_large_logits(expect_matches_oracle, 6700);
}

// The benchmark's model shapes at batch 1: T2T layer 1 (3136 tokens, b = 32, m = 98: two
// thread blocks per diagonal block), BigGAN (4096 queries × 1024 keys, Dv = 256), n = 8192.
TEST(KdeformerFusedOnCuda, ModelShapesMatchTheAtenPath) {
  KDESERVE_SKIP_WITHOUT_CUDA();
  const std::vector<Case> shapes = {
      {"t2t_layer1", 1, 1, 3136, 3136, 64, 64, 32, 98, 0.0825},
      {"biggan", 1, 1, 4096, 1024, 64, 256, 64, 128, 1.0},
      {"n8192", 1, 2, 8192, 8192, 64, 64, 64, 128, 0.125},
  };
  uint64_t seed = 6800;
  for (const Case& c : shapes) {
    for (Residual residual : {Residual::kSampled, Residual::kControlVariate}) {
      expect_matches_oracle(c, options_of(c, residual, c.samples), seed += 10, 0.5, 1e-4);
    }
  }
}

// An entry's output depends only on its own inputs and seed, not on the rest of the batch (to
// the rounding of cuBLAS, whose kernels for the boundary's products may differ with the batch
// count), and the same call gives the same bits.
TEST(KdeformerFusedOnCuda, BatchIndependentAndDeterministic) {
  KDESERVE_SKIP_WITHOUT_CUDA();
  const Case c = cases()[0];
  const Inputs in = inputs(c, 6900);
  const at::Tensor q = in.q.to(kCuda), k = in.k.to(kCuda), v = in.v.to(kCuda);
  const KdeformerOptions opt = options_of(c, Residual::kControlVariate, c.samples);
  AttentionCall both;
  both.seed = 5;
  both.entry_seeds = {11, 12};
  const at::Tensor batched = kdeformer_fused_attention(q, k, v, c.scale, opt, both).cpu();
  AttentionCall alone;
  alone.seed = 5;
  alone.entry_seeds = {12};
  const at::Tensor single = kdeformer_fused_attention(q.narrow(0, 1, 1), k.narrow(0, 1, 1),
                                                      v.narrow(0, 1, 1), c.scale, opt, alone);
  EXPECT_LT(max_rel_diff(batched.narrow(0, 1, 1), single.cpu()), 1e-6);
  EXPECT_TRUE(at::equal(batched, kdeformer_fused_attention(q, k, v, c.scale, opt, both).cpu()));
}

// The dispatch on CUDA: kFused takes the kernel for float32 and says so (kAuto keeps the ATen
// path until the kernel has been measured on a GPU); where it cannot run (float64, Dv above its
// limit) kFused falls back to ATen with the reason.
TEST(KdeformerFusedOnCuda, DispatchAndReport) {
  KDESERVE_SKIP_WITHOUT_CUDA();
  const Case c = cases()[0];
  const Inputs in = inputs(c, 7000);
  const at::Tensor q = in.q.to(kCuda), k = in.k.to(kCuda), v = in.v.to(kCuda);
  AttentionOptions opt(Method::kKdeformer);
  opt.scale(c.scale).kdeformer(options_of(c, Residual::kSampled, c.samples));
  AttentionReport report;
  AttentionCall call;
  call.report = &report;
  attention(q, k, v, opt, call);
  EXPECT_EQ(report.backend, "aten-cuda");
  EXPECT_FALSE(report.fell_back) << report.reason;

  opt.kdeformer().kernel(KdeformerKernel::kFused);
  const at::Tensor fused = attention(q, k, v, opt, call);
  EXPECT_EQ(report.backend, "fused-cuda");
  EXPECT_EQ(fused_backend_name(q), "fused-cuda");
  EXPECT_FALSE(report.fell_back) << report.reason;
  EXPECT_EQ(report.num_blocks, 8);
  EXPECT_EQ(report.block_keys, 16);
  EXPECT_EQ(report.sample_size, c.samples);

  opt.kdeformer().kernel(KdeformerKernel::kAten);
  const at::Tensor aten = attention(q, k, v, opt, call);
  EXPECT_EQ(report.backend, "aten-cuda");
  EXPECT_LT(max_rel_diff(fused.cpu(), aten.cpu()), 2e-5);

  opt.kdeformer().kernel(KdeformerKernel::kFused);
  attention(q.to(at::kDouble), k.to(at::kDouble), v.to(at::kDouble), opt, call);
  EXPECT_EQ(report.backend, "aten-cuda");
  EXPECT_TRUE(report.fell_back);
  EXPECT_NE(report.reason.find("float32 only"), std::string::npos) << report.reason;

  const at::Tensor wide = seeded_randn({2, 2, c.nk, 300}, 7001, at::kFloat).to(kCuda);
  attention(q, k, wide, opt, call);
  EXPECT_EQ(report.backend, "aten-cuda");
  EXPECT_NE(report.reason.find("value dims up to 256"), std::string::npos) << report.reason;

  opt.kdeformer().kernel(KdeformerKernel::kAuto).residual(Residual::kCoreset);
  attention(q, k, v, opt, call);
  EXPECT_EQ(report.backend, "aten-cuda");
  EXPECT_FALSE(report.fell_back) << report.reason;
}

}  // namespace
}  // namespace kdeserve::attention::kdeformer
