#include <gtest/gtest.h>
#include <torch/torch.h>

#include "attention/hyperattention/hyperattention.h"
#include "attention/performer/performer.h"
#include "attention/reformer/reformer.h"
#include "attention/scatterbrain/scatterbrain.h"
#include "attention/thinformer/thinformer.h"
#include "attention/wildcat/wildcat.h"
#include "models/attention_plan.h"
#include "models/biggan/biggan.h"
#include "models/registry.h"
#include "models/t2t_vit/t2t_vit.h"
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

TEST(AttentionPlan, RecordsEachCallsInputsWhenAsked) {
  AttentionPlan plan;
  plan.groups["g"] = attention::AttentionOptions(attention::Method::kExact).scale(0.25);
  std::vector<RecordedAttention> recorded;
  ForwardContext ctx;
  ctx.recorded = &recorded;
  const at::Tensor q = at::randn({1, 2, 16, 8}), k = at::randn({1, 2, 12, 8});
  const at::Tensor v = at::randn({1, 2, 12, 4});
  run_attention(q, k, v, plan, "g", 3, ctx);
  ASSERT_EQ(recorded.size(), 1u);
  EXPECT_EQ(recorded[0].group, "g");
  EXPECT_EQ(recorded[0].layer, 3);
  EXPECT_EQ(recorded[0].scale, 0.25);
  EXPECT_TRUE(recorded[0].q.equal(q) && recorded[0].k.equal(k) && recorded[0].v.equal(v));
  run_attention(q, k, v, plan, "g", 4, ForwardContext{});  // nothing recorded without the vector
  EXPECT_EQ(recorded.size(), 1u);
}

TEST(AttentionPlan, WithGroupMixesMethodsPerGroup) {
  const AttentionPlan kde = t2t_vit_plan(attention::Method::kKdeformer);
  const AttentionPlan mixed =
      kde.with_group("t2t_layer1", t2t_vit_plan(attention::Method::kWildCat).at("t2t_layer1"));
  EXPECT_EQ(mixed.describe(),
            "blocks=exact, t2t_layer1=wildcat(r=224,bins=224,clamped), "
            "t2t_layer2=kdeformer(b=32,m=0,r=7,cv,clamped)");
  EXPECT_EQ(kde.at("t2t_layer1").method(), attention::Method::kKdeformer);  // a copy
  EXPECT_THROW(kde.with_group("t2t_layer3", attention::Method::kExact), c10::Error);
}

TEST(AttentionPlan, DescribesEveryMethodWithItsBudget) {
  using attention::Method;
  attention::AttentionOptions o(Method::kPerformer);
  o.performer().num_features(12).orthogonal(false);
  EXPECT_EQ(describe(o), "performer(m=12,iid)");
  o.method(Method::kReformer).reformer().bucket_size(12).num_hashes(8).shared_qk(true);
  EXPECT_EQ(describe(o), "reformer(bucket=12,hashes=8,shared_qk)");
  o.method(Method::kScatterBrain)
      .scatterbrain()
      .local_window(12)
      .num_features(6)
      .support(attention::SparseSupport::kLsh)
      .num_projections(5);
  EXPECT_EQ(describe(o), "scatterbrain(w=12,f=6,lsh,r=5)");
  o.method(Method::kHyperAttention)
      .hyperattention()
      .block_size(16)
      .sample_size(8)
      .min_seq_len(4096)
      .mask_padding(false)
      .bucket_order(attention::BucketOrder::kReference);
  EXPECT_EQ(describe(o), "hyperattention(b=16,s=8,r=7,min_seq_len=4096,unmasked,reference_order)");
  o.method(Method::kWildCat).wildcat().rank(8).num_bins(1).clamp_output(false);
  EXPECT_EQ(describe(o), "wildcat(r=8,bins=1,unclamped)");
  o.method(Method::kThinformer).thinformer().g(3).strided_prethinning(false);
  EXPECT_EQ(describe(o), "thinformer(g=3,padded)");
  o.method(Method::kExact);
  EXPECT_EQ(describe(o), "exact");
}

// The paper's settings per T2T layer (kdeformer.md §1.7; peers.md §2.4, §3, §4.5, §5.5, §6,
// §7.4): one check per method and layer group.
TEST(ModelPlans, T2TViTRunsEachMethodWithThePapersSettingsPerLayer) {
  using attention::Method;
  for (Method m : attention::kAllMethods) {
    const AttentionPlan plan = t2t_vit_plan(m);
    ASSERT_EQ(plan.groups.size(), 3u) << attention::to_string(m);
    EXPECT_EQ(plan.at("t2t_layer1").method(), m);
    EXPECT_EQ(plan.at("t2t_layer2").method(), m);
    EXPECT_EQ(plan.at("blocks").method(), Method::kExact) << attention::to_string(m);
    // The layers pass their own scale (1/√147, 1/24): the plan leaves it unset.
    EXPECT_FALSE(plan.at("t2t_layer1").scale().has_value());
  }
  EXPECT_EQ(t2t_vit_default_plan().describe(), t2t_vit_plan(Method::kKdeformer).describe());
  EXPECT_EQ(t2t_vit_plan(Method::kKdeformer).describe(),
            "blocks=exact, t2t_layer1=kdeformer(b=32,m=0,r=7,cv,clamped), "
            "t2t_layer2=kdeformer(b=32,m=0,r=7,cv,clamped)");
  EXPECT_EQ(t2t_vit_plan(Method::kKdeformer).at("t2t_layer2").kdeformer().power_iterations(), 32);
  EXPECT_EQ(t2t_vit_paper_plan().describe(),
            "blocks=exact, t2t_layer1=kdeformer(b=32,m=98,r=7), "
            "t2t_layer2=kdeformer(b=32,m=24,r=7)");
  EXPECT_EQ(biggan_paper_plan().describe(), "self_attention=kdeformer(b=64,m=128,r=7)");
  EXPECT_EQ(t2t_vit_plan(Method::kPerformer).describe(),
            "blocks=exact, t2t_layer1=performer(m=49,orthogonal), "
            "t2t_layer2=performer(m=12,orthogonal)");
  EXPECT_EQ(t2t_vit_plan(Method::kReformer).describe(),
            "blocks=exact, t2t_layer1=reformer(bucket=49,hashes=2,keys), "
            "t2t_layer2=reformer(bucket=12,hashes=2,keys)");
  EXPECT_EQ(t2t_vit_plan(Method::kScatterBrain).describe(),
            "blocks=exact, t2t_layer1=scatterbrain(w=49,f=48,band), "
            "t2t_layer2=scatterbrain(w=12,f=6,band)");
  EXPECT_EQ(t2t_vit_plan(Method::kHyperAttention).describe(),
            "blocks=exact, t2t_layer1=hyperattention(b=32,s=98,r=7,min_seq_len=0,masked), "
            "t2t_layer2=hyperattention(b=32,s=24,r=7,min_seq_len=0,masked)");
  EXPECT_EQ(t2t_vit_plan(Method::kWildCat).describe(),
            "blocks=exact, t2t_layer1=wildcat(r=224,bins=224,clamped), "
            "t2t_layer2=wildcat(r=196,bins=196,clamped)");
  EXPECT_EQ(t2t_vit_plan(Method::kThinformer).describe(),
            "blocks=exact, t2t_layer1=thinformer(g=2,strided), "
            "t2t_layer2=thinformer(g=4,strided)");
  EXPECT_EQ(t2t_vit_plan(Method::kExact).describe(),
            "blocks=exact, t2t_layer1=exact, t2t_layer2=exact");
}

TEST(ModelPlans, BigGANRunsEachMethodWithThePapersSettings) {
  using attention::Method;
  for (Method m : attention::kAllMethods) {
    const AttentionPlan plan = biggan_plan(m);
    ASSERT_EQ(plan.groups.size(), 1u);
    EXPECT_EQ(plan.at("self_attention").method(), m);
    EXPECT_EQ(plan.at("self_attention").scale(), std::optional<double>(1.0));
  }
  EXPECT_EQ(biggan_default_plan().describe(), biggan_plan(Method::kKdeformer).describe());
  const auto self = [](Method m) { return describe(biggan_plan(m).at("self_attention")); };
  EXPECT_EQ(self(Method::kKdeformer), "kdeformer(b=64,m=0,r=7,cv,clamped)");
  EXPECT_EQ(biggan_plan(Method::kKdeformer).at("self_attention").kdeformer().power_iterations(),
            20);
  EXPECT_EQ(self(Method::kPerformer), "performer(m=128,iid)");
  EXPECT_EQ(self(Method::kReformer), "reformer(bucket=64,hashes=8,keys)");
  EXPECT_EQ(self(Method::kScatterBrain), "scatterbrain(w=32,f=128,band)");
  EXPECT_EQ(self(Method::kHyperAttention), "hyperattention(b=64,s=128,r=7,min_seq_len=0,masked)");
  EXPECT_EQ(self(Method::kWildCat), "wildcat(r=96,bins=8,clamped)");
  EXPECT_EQ(self(Method::kThinformer), "thinformer(g=2,strided)");
  EXPECT_EQ(self(Method::kExact), "exact");
}

// Why `o`'s method would compute exact attention on nq × nk (empty: it approximates).
std::string exact_reason(const attention::AttentionOptions& o, int64_t nq, int64_t nk) {
  using attention::Method;
  switch (o.method()) {
    case Method::kPerformer:
      return attention::performer::exact_reason(o.performer(), nq, nk);
    case Method::kReformer:
      return attention::reformer::exact_reason(o.reformer(), nq, nk);
    case Method::kScatterBrain:
      return attention::scatterbrain::exact_reason(o.scatterbrain(), nq, nk);
    case Method::kHyperAttention:
      return attention::hyperattention::exact_reason(o.hyperattention(), nq, nk);
    case Method::kWildCat:
      return attention::wildcat::exact_reason(o.wildcat(), nq, nk);
    case Method::kThinformer:
      return attention::thinformer::exact_reason(o.thinformer(), nq, nk);
    default:
      return "not a peer";
  }
}

// The response and metrics name the mode's method: at the model's own shapes the peer plans
// must run that method, not its exact fallback (e.g. HyperAttention's min_seq_len 4096 would
// make both T2T layers exact). Checks the method ports' limits once they are merged.
TEST(ModelPlans, PeerPlansApproximateAtTheModelShapes) {
  using attention::Method;
  for (Method m : {Method::kPerformer, Method::kReformer, Method::kScatterBrain,
                   Method::kHyperAttention, Method::kWildCat, Method::kThinformer}) {
    const AttentionPlan t2t = t2t_vit_plan(m);
    EXPECT_EQ(exact_reason(t2t.at("t2t_layer1"), 3136, 3136), "") << attention::to_string(m);
    EXPECT_EQ(exact_reason(t2t.at("t2t_layer2"), 784, 784), "") << attention::to_string(m);
    EXPECT_EQ(exact_reason(biggan_plan(m).at("self_attention"), 4096, 1024), "")
        << attention::to_string(m);
  }
}

// Models built from the registry carry one plan per method: the model's own.
TEST(ModelPlans, RegistryModelsHoldThePlanOfEveryMethod) {
  const auto model = create_model("t2t_vit_7", LoadOptions{});
  for (attention::Method m : attention::kAllMethods) {
    EXPECT_EQ(model->plan_for(m).describe(), t2t_vit_plan(m).describe());
  }
  EXPECT_EQ(model->default_plan().describe(), t2t_vit_default_plan().describe());
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
