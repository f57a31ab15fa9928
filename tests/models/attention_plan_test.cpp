#include <gtest/gtest.h>
#include <torch/torch.h>

#include "models/attention_plan.h"
#include "models/weights/state_dict.h"

namespace kdeserve::models {
namespace {

TEST(AttentionPlan, LooksUpGroupsAndDescribes) {
  AttentionPlan plan;
  plan.groups["blocks"] = attention::AttentionOptions(attention::Method::kExact);
  auto kde = attention::AttentionOptions(attention::Method::kKdeformer);
  kde.kdeformer().bucket_size(32).sample_size(98);
  plan.groups["t2t_layer1"] = kde;
  EXPECT_EQ(plan.at("t2t_layer1").kdeformer().sample_size(), 98);
  EXPECT_THROW(plan.at("nope"), c10::Error);
  EXPECT_EQ(plan.describe(), "blocks=exact, t2t_layer1=kdeformer(b=32,m=98,r=7)");
  EXPECT_EQ(plan.with_method(attention::Method::kExact).at("t2t_layer1").method(),
            attention::Method::kExact);
}

TEST(AttentionPlan, RunAttentionReportsAndSeedsPerLayer) {
  AttentionPlan plan;
  auto kde = attention::AttentionOptions(attention::Method::kKdeformer);
  kde.kdeformer().bucket_size(8).sample_size(8);
  plan.groups["g"] = kde;
  std::vector<attention::AttentionReport> reports;
  ForwardContext ctx;
  ctx.seed = 5;
  ctx.reports = &reports;
  const at::Tensor x = at::randn({1, 1, 64, 8});
  const at::Tensor a = run_attention(x, x, x, plan, "g", 0, ctx);
  const at::Tensor b = run_attention(x, x, x, plan, "g", 1, ctx);
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].ran, attention::Method::kKdeformer);
  EXPECT_FALSE(a.equal(b));  // layers draw from different streams
  EXPECT_TRUE(a.equal(run_attention(x, x, x, plan, "g", 0, ctx)));
}

struct Tiny : torch::nn::Module {
  Tiny() {
    fc = register_module("fc", torch::nn::Linear(3, 2));
    register_buffer("stat", torch::zeros({4}));
  }
  torch::nn::Linear fc{nullptr};
};

TEST(StateDict, LoadsStrictlyAndNamesBadKeys) {
  const std::string path = ::testing::TempDir() + "/tiny.safetensors";
  save_safetensors(path, {{"fc.weight", torch::ones({2, 3})},
                          {"fc.bias", torch::full({2}, 2.0, torch::kDouble)},
                          {"stat", torch::arange(4).to(torch::kFloat)}});
  Tiny tiny;
  load_state_dict(tiny, SafetensorsFile::open(path));
  EXPECT_TRUE(tiny.fc->weight.equal(torch::ones({2, 3})));
  EXPECT_TRUE(tiny.fc->bias.equal(torch::full({2}, 2.0)));
  EXPECT_EQ(parameter_count(tiny), 8);

  save_safetensors(path, {{"fc.weight", torch::ones({3, 3})}, {"extra", torch::ones({1})},
                          {"stat", torch::zeros({4})}});
  try {
    load_state_dict(tiny, SafetensorsFile::open(path));
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("missing keys: fc.bias"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected keys: extra"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'fc.weight': expected [2, 3], got [3, 3]"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace kdeserve::models
