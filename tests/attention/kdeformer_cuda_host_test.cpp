// The fused CUDA KDEformer kernel's own source (attention/kdeformer/fused_cuda_device.cuh), run
// on the host by tests/support/simt_host.h over the inputs its torch-facing side builds
// (fused_cuda_inputs), against the ATen oracle on the CPU with the same randomness: both
// residuals, every shape the fused kernels are checked on (fused_cases.h), the knobs, large
// logits. This checks the kernel's tiling, indexing, dropped samples and arithmetic on machines
// without a GPU; kdeformer_fused_cuda_test.cpp checks the compiled kernel on one.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "attention/kdeformer/fused_cuda.h"
#include "attention/kdeformer/kdeformer.h"
#include "tests/attention/fused_cases.h"
#include "tests/attention/test_util.h"
// After every other header: it turns the CUDA keywords into host code for the kernel's source.
#include "tests/support/simt_host.h"
// clang-format off
#include "attention/kdeformer/fused_cuda_device.cuh"
// clang-format on

namespace kdeserve::attention::kdeformer {
namespace {

// The shared cases, options and checks of both fused kernels.
using namespace fused_cases;  // NOLINT(google-build-using-namespace)
using kdeserve::testing::max_rel_diff;
namespace ck = cuda_kernel;

// The kernel over fused_cuda_inputs, as kdeformer_fused_cuda_attention launches it.
at::Tensor run_on_host(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                       const KdeformerOptions& opt, const AttentionCall& call) {
  FusedCudaInputs in = fused_cuda_inputs(q, k, v, scale, opt, call);
  const ck::Problem pb = in.problem;
  const int64_t chunks = ck::chunks_per_block(pb);
  std::function<void()> body;
  switch (ck::lane_columns(pb.dv)) {
    case 1:
      body = [&] { ck::device::fused_kernel<1>(pb, chunks); };
      break;
    case 2:
      body = [&] { ck::device::fused_kernel<2>(pb, chunks); };
      break;
    case 4:
      body = [&] { ck::device::fused_kernel<4>(pb, chunks); };
      break;
    default:
      body = [&] { ck::device::fused_kernel<8>(pb, chunks); };
      break;
  }
  simt::launch(static_cast<unsigned>(ck::grid_size(pb)), ck::kThreads,
               static_cast<std::size_t>(ck::shared_bytes(pb.dim, pb.dv)), body);
  return in.out.view({q.size(0), q.size(1), q.size(2), v.size(3)});
}

void expect_matches_oracle(const Case& c, const KdeformerOptions& opt, uint64_t seed,
                           double logit_gain, double tolerance) {
  const Inputs in = inputs(c, seed, logit_gain);
  const AttentionCall call = seeded_call(c, seed);
  const at::Tensor oracle = kdeformer_attention(in.q, in.k, in.v, c.scale, opt, call);
  const at::Tensor got = run_on_host(in.q, in.k, in.v, c.scale, opt, call);
  ASSERT_EQ(got.sizes(), oracle.sizes());
  ASSERT_TRUE(got.isfinite().all().item<bool>()) << c.name;
  EXPECT_LT(max_rel_diff(got, oracle), tolerance)
      << c.name << " residual " << to_string(opt.residual()) << " m " << opt.sample_size()
      << " clamp " << opt.clamp_output();
}

TEST(KdeformerCudaKernelOnHost, SampledResidualMatchesTheAtenPath) {
  check_sampled_cases(expect_matches_oracle, 8100);
}

TEST(KdeformerCudaKernelOnHost, ControlVariateMatchesTheAtenPath) {
  check_control_variate_cases(expect_matches_oracle, 8300);
}

TEST(KdeformerCudaKernelOnHost, EveryKnobMatchesTheAtenPath) {
  check_every_knob(expect_matches_oracle, 8500);
}

TEST(KdeformerCudaKernelOnHost, LargeLogitsStayFiniteAndMatch) {
  check_large_logits(expect_matches_oracle, 8700);
}

TEST(KdeformerCudaKernelOnHost, InputsCheckWhatTheKernelComputes) {
  const Case c = cases()[0];
  const Inputs in = inputs(c, 8800);
  const KdeformerOptions opt = options_of(c, Residual::kSampled, c.samples);
  EXPECT_EQ(fused_cuda_input_reason(in.q, in.v, opt), "");
  EXPECT_NE(fused_cuda_input_reason(in.q.to(at::kDouble), in.v, opt).find("float32 only"),
            std::string::npos);
  const at::Tensor wide = at::zeros({c.batch, c.heads, c.nk, 257});
  EXPECT_NE(fused_cuda_input_reason(in.q, wide, opt).find("value dims up to 256"),
            std::string::npos);
  EXPECT_NE(fused_cuda_input_reason(in.q, in.v, KdeformerOptions(opt).residual(Residual::kCoreset))
                .find("no coreset residual"),
            std::string::npos);
  EXPECT_THROW(fused_cuda_inputs(in.q, in.k, wide, c.scale, opt, {}), c10::Error);
}

}  // namespace
}  // namespace kdeserve::attention::kdeformer
