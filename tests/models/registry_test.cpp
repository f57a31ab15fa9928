#include <gtest/gtest.h>

#include <algorithm>

#include "models/biggan/noise.h"
#include "models/registry.h"

namespace kdeserve::models {
namespace {

TEST(Registry, ListsEveryModelWithSpecs) {
  const auto names = model_names();
  EXPECT_EQ(names.size(), 13u);  // 10 T2T-ViT variants + 3 BigGAN-deep sizes
  for (const char* n : {"t2t_vit_t_24", "t2t_vit_14_384", "biggan-deep-128", "biggan-deep-512"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  }
  const ModelSpec t2t = model_spec("t2t_vit_14_384");
  EXPECT_EQ(t2t.kind, ModelKind::kClassifier);
  EXPECT_EQ(t2t.image_size, 384);
  EXPECT_EQ(t2t.num_classes, 1000);
  const ModelSpec gan = model_spec("biggan-deep-256");
  EXPECT_EQ(gan.kind, ModelKind::kGenerator);
  EXPECT_EQ(gan.image_size, 256);
  EXPECT_EQ(gan.z_dim, 128);
  try {
    model_spec("resnet50");
    FAIL();
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("registered: t2t_vit_7"), std::string::npos);
  }
}

TEST(Registry, ClassifierWithRandomWeightsRunsBothPlans) {
  auto model = create_model("t2t_vit_7", LoadOptions{});
  EXPECT_FALSE(model->has_weights());
  EXPECT_EQ(model->weights_source(), "random init (seed 0)");
  EXPECT_EQ(model->default_plan().at("t2t_layer1").method(), attention::Method::kKdeformer);
  const at::Tensor images = at::randn({2, 3, 224, 224});
  std::vector<attention::AttentionReport> reports;
  ForwardContext ctx;
  ctx.reports = &reports;
  const at::Tensor logits = model->classify(images, model->default_plan(), ctx);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 1000}));
  EXPECT_EQ(reports.size(), 7u);  // t2t_vit_7: performer tokens, 7 exact blocks
  EXPECT_THROW(model->classify(at::randn({1, 3, 100, 100}), model->default_plan(), ctx),
               c10::Error);
  EXPECT_THROW(model->generate(at::randn({1, 128}), at::zeros({1, 1000}), 0.4,
                               model->default_plan(), ctx),
               c10::Error);
  // Seeded initialisation: the same seed builds the same model.
  auto again = create_model("t2t_vit_7", LoadOptions{});
  ForwardContext plain;
  EXPECT_TRUE(again->classify(images, model->default_plan(), plain)
                  .equal(model->classify(images, model->default_plan(), plain)));
}

TEST(Registry, GeneratorWithRandomWeightsRunsKdeformer) {
  auto model = create_model("biggan-deep-128", LoadOptions{});
  std::vector<attention::AttentionReport> reports;
  ForwardContext ctx;
  ctx.reports = &reports;
  const at::Tensor z = truncated_noise_sample(1, 0.4, 11);
  const at::Tensor image =
      model->generate(z, one_hot_class_vector({207}), 0.4, model->default_plan(), ctx);
  EXPECT_EQ(image.sizes(), (std::vector<int64_t>{1, 3, 128, 128}));
  EXPECT_LE(image.abs().max().item<double>(), 1.0);
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].ran, attention::Method::kKdeformer);
  EXPECT_EQ(reports[0].num_queries, 4096);
  EXPECT_EQ(reports[0].num_keys, 1024);
  EXPECT_THROW(model->generate(z, one_hot_class_vector({207}), 1.5, model->default_plan(), ctx),
               c10::Error);
}

}  // namespace
}  // namespace kdeserve::models
