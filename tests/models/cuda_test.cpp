// Both model families on CUDA through the same code and attention dispatch: the CPU forward is
// the oracle (same seeded weights, same inputs, same attention seeds). Skipped, with the reason,
// without a CUDA build or a GPU.
#include <gtest/gtest.h>

#include "models/registry.h"
#include "tests/support/cuda_skip.h"

namespace kdeserve::models {
namespace {

const c10::Device kCuda(c10::DeviceType::CUDA, 0);

double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

// float64 so that no LSH hash bit differs between the devices' roundings.
LoadOptions on(c10::Device device) {
  LoadOptions o;
  o.init_seed = 5;
  o.dtype = at::kDouble;
  o.device = device;
  return o;
}

TEST(ModelsOnCuda, ClassifierMatchesCpuInBothAttentionModes) {
  KDESERVE_SKIP_WITHOUT_CUDA();
  auto cpu = create_model("t2t_vit_t_14", on(c10::Device(c10::DeviceType::CPU)));
  auto gpu = create_model("t2t_vit_t_14", on(kCuda));
  EXPECT_TRUE(gpu->device().is_cuda());
  const at::Tensor images = at::randn({2, 3, 224, 224}, at::kDouble);
  for (attention::Method mode : {attention::Method::kExact, attention::Method::kKdeformer}) {
    std::vector<attention::AttentionReport> reports;
    ForwardContext ctx;
    ctx.seed = 11;
    ctx.entry_seeds = {1, 2};
    ctx.reports = &reports;
    const at::Tensor want = cpu->classify(images, cpu->plan_for(mode), ctx);
    reports.clear();
    const at::Tensor got = gpu->classify(images, gpu->plan_for(mode), ctx);
    EXPECT_TRUE(got.is_cpu());  // results come back to the CPU
    EXPECT_LT(max_rel_diff(got.to(at::kDouble), want.to(at::kDouble)), 1e-6)
        << attention::to_string(mode);
    ASSERT_FALSE(reports.empty());
    for (const auto& r : reports) EXPECT_NE(r.backend.find("cuda"), std::string::npos);
  }
}

TEST(ModelsOnCuda, GeneratorMatchesCpuInBothAttentionModes) {
  KDESERVE_SKIP_WITHOUT_CUDA();
  auto cpu = create_model("biggan-deep-128", on(c10::Device(c10::DeviceType::CPU)));
  auto gpu = create_model("biggan-deep-128", on(kCuda));
  const at::Tensor z = at::randn({2, 128}, at::kDouble).mul_(0.4);
  at::Tensor classes = at::zeros({2, 1000}, at::kDouble);
  classes.index_put_({0, 207}, 1.0);
  classes.index_put_({1, 980}, 1.0);
  for (attention::Method mode : {attention::Method::kExact, attention::Method::kKdeformer}) {
    ForwardContext ctx;
    ctx.seed = 12;
    const at::Tensor want = cpu->generate(z, classes, 0.4, cpu->plan_for(mode), ctx);
    const at::Tensor got = gpu->generate(z, classes, 0.4, gpu->plan_for(mode), ctx);
    EXPECT_EQ(got.sizes(), want.sizes());
    EXPECT_LT(max_rel_diff(got.to(at::kDouble), want.to(at::kDouble)), 1e-6)
        << attention::to_string(mode);
  }
}

}  // namespace
}  // namespace kdeserve::models
