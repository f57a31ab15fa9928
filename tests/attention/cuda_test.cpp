// Every attention method and exact backend on CUDA tensors, through the same dispatch, against
// the CPU result with the same randomness (the CPU ATen path is the oracle). Skipped, with the
// reason, without a CUDA build or a GPU.
#include <gtest/gtest.h>

#include "attention/attention.h"
#include "tests/attention/test_util.h"
#include "tests/support/cuda_skip.h"

namespace kdeserve::attention {
namespace {

using kdeserve::testing::max_rel_diff;
using kdeserve::testing::naive_attention;
using kdeserve::testing::seeded_randn;

const at::Device kCuda(at::kCUDA, 0);

struct Result {
  at::Tensor out;
  AttentionReport report;
};

Result run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionOptions& o,
        uint64_t seed = 7) {
  Result r;
  AttentionCall call;
  call.seed = seed;
  call.entry_seeds = std::vector<uint64_t>(q.size(0), 3);
  call.report = &r.report;
  r.out = attention(q, k, v, o, call);
  return r;
}

TEST(AttentionOnCuda, ExactBackendsMatchTheOracle) {
  KDESERVE_SKIP_WITHOUT_CUDA();
  const at::Tensor q = seeded_randn({2, 3, 300, 64}, 1, at::kFloat);
  const at::Tensor k = seeded_randn({2, 3, 500, 64}, 2, at::kFloat);
  for (int64_t dv : {64, 256}) {
    const at::Tensor v = seeded_randn({2, 3, 500, dv}, 3, at::kFloat);
    const at::Tensor golden = naive_attention(q, k, v, 0.125);
    for (ExactBackend b : {ExactBackend::kChunked, ExactBackend::kSdpa, ExactBackend::kAuto}) {
      AttentionOptions o(Method::kExact);
      o.exact().backend(b);
      const Result r = run(q.to(kCuda), k.to(kCuda), v.to(kCuda), o);
      EXPECT_TRUE(r.out.is_cuda());
      EXPECT_NE(r.report.backend.find("cuda"), std::string::npos) << r.report.backend;
      // TF32 is off by default in LibTorch: float32 GEMMs keep float32 accuracy.
      EXPECT_LT(max_rel_diff(r.out.cpu(), golden), 1e-5)
          << to_string(b) << " Dv=" << dv << " ran " << r.report.backend;
    }
  }
}

TEST(AttentionOnCuda, KdeformerMatchesCpuWithTheSameSeeds) {
  KDESERVE_SKIP_WITHOUT_CUDA();
  // Randomness is drawn on the CPU per (entry, head): the same hyperplanes and samples on both
  // devices. In float64 no hash bit flips between the devices' roundings, so the results differ
  // by rounding only.
  const at::Tensor q = seeded_randn({2, 2, 1000, 64}, 4).mul_(0.5);
  const at::Tensor k = seeded_randn({2, 2, 777, 64}, 5).mul_(0.5);
  const at::Tensor v = seeded_randn({2, 2, 777, 96}, 6);
  AttentionOptions o(Method::kKdeformer);
  o.kdeformer().bucket_size(32).sample_size(64);
  const Result cpu = run(q, k, v, o);
  const Result gpu = run(q.to(kCuda), k.to(kCuda), v.to(kCuda), o);
  EXPECT_EQ(gpu.report.backend, "aten-cuda");
  EXPECT_EQ(gpu.report.ran, Method::kKdeformer);
  EXPECT_EQ(gpu.report.num_blocks, cpu.report.num_blocks);
  EXPECT_LT(max_rel_diff(gpu.out.cpu(), cpu.out), 1e-10);
}

TEST(AttentionOnCuda, HalfAndBfloat16ComputeInFloat32) {
  KDESERVE_SKIP_WITHOUT_CUDA();
  const at::Tensor q = seeded_randn({1, 2, 256, 64}, 7, at::kFloat);
  const at::Tensor golden = naive_attention(q, q, q, 0.125);
  for (at::ScalarType t : {at::kHalf, at::kBFloat16}) {
    for (Method m : {Method::kExact, Method::kKdeformer}) {
      AttentionOptions o(m);
      o.kdeformer().bucket_size(32).sample_size(32);
      const at::Tensor x = q.to(kCuda, t);
      const Result r = run(x, x, x, o);
      EXPECT_EQ(r.out.scalar_type(), t);
      EXPECT_TRUE(at::isfinite(r.out).all().item<bool>());
      if (m == Method::kExact) {
        EXPECT_LT(max_rel_diff(r.out.cpu(), golden), 1e-2);
      }
    }
  }
}

TEST(AttentionOnCuda, MixedDevicesAreRejected) {
  KDESERVE_SKIP_WITHOUT_CUDA();
  const at::Tensor q = seeded_randn({1, 1, 8, 4}, 8, at::kFloat);
  EXPECT_THROW(attention(q.to(kCuda), q, q), c10::Error);
}

}  // namespace
}  // namespace kdeserve::attention
