// The engine's shadow check (ModelEngine::shadow_classify / shadow_generate) against an
// independent computation: the same model rebuilt from the registry, each approximated layer's
// recorded inputs put through softmax(q kᵀ · scale) v by hand in float64, its norms taken from
// singular values, and the model outputs compared from the engine's own exact and approximate
// batches. A LibTorch test, like the engine it checks (tests/server/*.cpp stay torch-free).
#include "server/engine/model_engine.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "attention/attention.h"
#include "models/attention_plan.h"
#include "models/registry.h"

namespace ks = kdeserve::server;
namespace km = kdeserve::models;

namespace {

std::vector<float> values_of(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

bool never() { return false; }

// Relative errors of each image of one layer, computed independently of the engine.
void expected_errors(const km::RecordedAttention& r, const at::Tensor& approx,
                     std::vector<double>* frobenius, std::vector<double>* spectral) {
  const at::Tensor q = r.q.to(at::kDouble), k = r.k.to(at::kDouble), v = r.v.to(at::kDouble);
  const at::Tensor exact = at::softmax(at::matmul(q, k.transpose(-2, -1)) * r.scale, -1).matmul(v);
  const at::Tensor d = approx.to(at::kDouble) - exact;
  for (int64_t b = 0; b < d.size(0); ++b) {
    frobenius->push_back((d[b].pow(2).sum() / exact[b].pow(2).sum()).sqrt().item<double>());
    double worst = 0;
    for (int64_t h = 0; h < d.size(1); ++h) {
      const double sd = at::linalg_svdvals(d[b][h])[0].item<double>();
      const double se = at::linalg_svdvals(exact[b][h])[0].item<double>();
      worst = std::max(worst, sd / se);
    }
    spectral->push_back(worst);
  }
}

}  // namespace

TEST(ShadowEngine, ClassifierFiguresMatchAnIndependentComputation) {
  const std::string name = "t2t_vit_t_24";
  ks::ModelEngine engine(name, {});
  at::Generator gen = at::detail::createCPUGenerator(7);
  const std::vector<float> x = values_of(at::randn({2, 3, 224, 224}, gen));
  const std::vector<uint64_t> seeds = {11, 12};
  const std::vector<ks::RgbImage> none;
  const ks::ClassifyInput input{&none, &seeds, 0, &x, true};
  const ks::ShadowResult got = engine.shadow_classify({input}, ks::AttentionMode::kKdeformer, never);
  ASSERT_FALSE(got.stopped);

  // The approximated layers, from the model itself: their recorded inputs, the approximation.
  const auto model = km::create_model(name, {});
  const km::AttentionPlan& plan = model->plan_for(kdeserve::attention::Method::kKdeformer);
  std::vector<km::RecordedAttention> recorded;
  km::ForwardContext ctx;
  ctx.entry_seeds = seeds;
  ctx.recorded = &recorded;
  const at::Tensor images = at::from_blob(const_cast<float*>(x.data()), {2, 3, 224, 224});
  (void)model->classify(images, plan, ctx);
  std::vector<double> frobenius, spectral;
  std::vector<std::string> groups;
  for (const km::RecordedAttention& r : recorded) {
    if (plan.at(r.group).method() == kdeserve::attention::Method::kExact) continue;
    kdeserve::attention::AttentionOptions options = plan.at(r.group);
    options.scale(r.scale);  // the layer's own, as the forward ran it
    const at::Tensor approx =
        kdeserve::attention::attention(r.q, r.k, r.v, options, ctx.call_for_layer(r.layer, nullptr));
    expected_errors(r, approx, &frobenius, &spectral);
    groups.insert(groups.end(), static_cast<size_t>(r.q.size(0)), r.group);
  }
  ASSERT_EQ(groups.size(), 4u) << "t2t_layer1 and t2t_layer2, two images each";
  ASSERT_EQ(got.layers.size(), groups.size());
  for (size_t i = 0; i < groups.size(); ++i) {
    EXPECT_EQ(got.layers[i].group, groups[i]);
    EXPECT_GT(frobenius[i], 1e-4) << "KDEformer is not exact";
    EXPECT_NEAR(got.layers[i].frobenius, frobenius[i], 1e-4 * frobenius[i]) << groups[i];
    EXPECT_NEAR(got.layers[i].spectral, spectral[i], 1e-4 * spectral[i]) << groups[i];
  }

  // The model outputs: the engine's own batches in both modes, probabilities by hand.
  const auto approx = engine.classify({input}, ks::AttentionMode::kKdeformer).outputs[0].logits;
  const auto exact = engine.classify({input}, ks::AttentionMode::kExact).outputs[0].logits;
  ASSERT_EQ(got.top1_agree.size(), 2u);
  for (size_t row = 0; row < 2; ++row) {
    auto probabilities = [&](const std::vector<float>& logits) {
      std::vector<double> p(logits.begin() + row * 1000, logits.begin() + (row + 1) * 1000);
      const double top = *std::max_element(p.begin(), p.end());
      double sum = 0;
      for (double& v : p) sum += (v = std::exp(v - top));
      for (double& v : p) v /= sum;
      return p;
    };
    const std::vector<double> pa = probabilities(approx), pe = probabilities(exact);
    double diff = 0;
    for (size_t c = 0; c < 1000; ++c) diff = std::max(diff, std::fabs(pa[c] - pe[c]));
    const bool agree = std::max_element(pa.begin(), pa.end()) - pa.begin() ==
                       std::max_element(pe.begin(), pe.end()) - pe.begin();
    EXPECT_EQ(got.top1_agree[row], agree);
    EXPECT_NEAR(got.max_probability_difference[row], diff, 1e-7 + 1e-4 * diff);
  }
}

TEST(ShadowEngine, GeneratorPsnrMatchesTheEngineImages) {
  ks::ModelEngine engine("biggan-deep-128", {});
  const std::vector<float> z = [] {
    std::vector<float> a = ks::truncated_noise(3, 0.4, 128), b = ks::truncated_noise(4, 0.4, 128);
    a.insert(a.end(), b.begin(), b.end());
    return a;
  }();
  const std::vector<ks::ClassWeights> classes = {{{207, 1.0}}, {{980, 1.0}}};
  const std::vector<uint64_t> seeds = {3, 4};
  const ks::GenerateInput input{&z, &classes, &seeds};
  const ks::ShadowResult got =
      engine.shadow_generate({input}, 0.4, ks::AttentionMode::kKdeformer, never);
  ASSERT_FALSE(got.stopped);
  ASSERT_EQ(got.layers.size(), 2u) << "one self-attention layer, two images";
  for (const ks::ShadowLayerError& e : got.layers) {
    EXPECT_EQ(e.group, "self_attention");
    EXPECT_TRUE(std::isfinite(e.frobenius) && e.frobenius > 0) << e.frobenius;
  }
  const auto approx = engine.generate({input}, 0.4, ks::AttentionMode::kKdeformer).images;
  const auto exact = engine.generate({input}, 0.4, ks::AttentionMode::kExact).images;
  ASSERT_EQ(got.psnr_db.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    double se = 0;
    for (size_t p = 0; p < approx[i].pixels.size(); ++p) {
      const double d = double(approx[i].pixels[p]) - double(exact[i].pixels[p]);
      se += d * d;
    }
    const double mse = se / static_cast<double>(approx[i].pixels.size());
    const double psnr = mse > 0 ? std::min(ks::kMaxPsnrDb, 10 * std::log10(255.0 * 255.0 / mse))
                                : ks::kMaxPsnrDb;
    EXPECT_NEAR(got.psnr_db[i], psnr, 1e-9) << "image " << i;
  }
}

TEST(ShadowEngine, StopEndsTheCheckBetweenSteps) {
  ks::ModelEngine engine("biggan-deep-128", {});
  const std::vector<float> z = ks::truncated_noise(1, 0.4, 128);
  const std::vector<ks::ClassWeights> classes = {{{1, 1.0}}};
  const std::vector<uint64_t> seeds = {1};
  int asked = 0;
  const ks::ShadowResult got = engine.shadow_generate(
      {{&z, &classes, &seeds}}, 0.4, ks::AttentionMode::kKdeformer, [&] { return ++asked > 0; });
  EXPECT_TRUE(got.stopped);
  EXPECT_EQ(asked, 1) << "asked before the first layer check";
  EXPECT_TRUE(got.layers.empty());
  EXPECT_TRUE(got.psnr_db.empty());
}
