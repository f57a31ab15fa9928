#include "models/t2t_vit/t2t_vit.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "models/weights/safetensors.h"
#include "models/weights/state_dict.h"
#include "tests/support/shared_data.h"

namespace kdeserve::models {
namespace {

using attention::Method;

// The value text of "key": value in a flat JSON object (numbers, strings, null, booleans).
std::string json_value(const std::string& json, const std::string& key) {
  std::smatch match;
  const std::regex pattern("\"" + key + "\"\\s*:\\s*(\"[^\"]*\"|[^,}\\s]+)");
  if (!std::regex_search(json, match, pattern)) return {};
  std::string value = match[1].str();
  if (value.size() >= 2 && value.front() == '"') value = value.substr(1, value.size() - 2);
  return value;
}

// Every quoted string of a flat JSON list.
std::vector<std::string> json_strings(const std::string& json) {
  std::vector<std::string> out;
  const std::regex quoted("\"([^\"]*)\"");
  for (auto it = std::sregex_iterator(json.begin(), json.end(), quoted);
       it != std::sregex_iterator(); ++it) {
    out.push_back((*it)[1].str());
  }
  return out;
}

// T2TViTOptions from a fixture's __metadata__ "config" (upstream constructor arguments).
T2TViTOptions options_from_config(const std::string& config) {
  auto integer = [&](const std::string& key) {
    const std::string value = json_value(config, key);
    TORCH_CHECK(!value.empty(), "config lacks ", key, ": ", config);
    return static_cast<int64_t>(std::stoll(value));
  };
  T2TViTOptions options;
  options.img_size(integer("img_size"))
      .tokens_type(tokens_type_from_string(json_value(config, "tokens_type")))
      .num_classes(integer("num_classes"))
      .embed_dim(integer("embed_dim"))
      .depth(integer("depth"))
      .num_heads(integer("num_heads"))
      .mlp_ratio(std::stod(json_value(config, "mlp_ratio")))
      .qkv_bias(json_value(config, "qkv_bias") == "true")
      .token_dim(integer("token_dim"));
  const std::string qk_scale = json_value(config, "qk_scale");
  if (!qk_scale.empty() && qk_scale != "null") options.qk_scale(std::stod(qk_scale));
  return options;
}

// max|actual − golden| / max|golden|, in float64.
double max_rel_diff(const at::Tensor& actual, const at::Tensor& golden) {
  EXPECT_EQ(actual.sizes(), golden.sizes());
  const at::Tensor g = golden.to(at::kDouble);
  return (actual.to(at::kDouble) - g).abs().max().item<double>() / g.abs().max().item<double>();
}

// A tiny fixture's model with its weights, in `dtype`, in eval mode.
T2TViT load_fixture_model(const SafetensorsFile& file, at::ScalarType dtype) {
  T2TViT model(options_from_config(file.metadata().at("config")));
  load_state_dict(*model, file, json_strings(file.metadata().at("io_tensors")));
  model->to(dtype);
  model->eval();
  return model;
}

#define REQUIRE_SHARED(var, relative)                                        \
  const std::string var = testing::shared_file(relative);                    \
  if (var.empty()) {                                                         \
    GTEST_SKIP() << "missing " << testing::shared_dir() << "/" << (relative) \
                 << " (set KDESERVE_SHARED_DIR to the shared folder)";       \
  }

// Golden parity with the upstream model, exact attention everywhere (fixtures/README.md §1).
void check_golden(const std::string& path, at::ScalarType dtype, double tolerance) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  T2TViT model = load_fixture_model(file, dtype);
  const AttentionPlan plan = t2t_vit_default_plan().with_method(Method::kExact);
  torch::NoGradGuard no_grad;
  T2TIntermediates mid;
  const at::Tensor input = file.get("input").to(dtype);
  const at::Tensor prelogits = model->forward_features(input, plan, ForwardContext{}, &mid);
  const at::Tensor logits = model->head->forward(prelogits);
  EXPECT_TRUE(model->forward(input, plan, ForwardContext{}).equal(logits));
  const std::map<std::string, at::Tensor> outputs = {{"logits", logits},
                                                     {"prelogits", mid.prelogits},
                                                     {"features", mid.features},
                                                     {"after_attention1", mid.after_attention1},
                                                     {"after_attention2", mid.after_attention2}};
  for (const auto& [name, actual] : outputs) {
    ASSERT_EQ(actual.scalar_type(), dtype) << name;
    const double rel = max_rel_diff(actual, file.get(name));
    std::printf("  %s %s %-17s max|diff|/max|golden| = %.3e (tolerance %.0e)\n",
                file.metadata().at("fixture").c_str(), c10::toString(dtype), name.c_str(), rel,
                tolerance);
    EXPECT_LE(rel, tolerance) << name;
  }
}

TEST(T2TViTGolden, TransformerFloat32) {
  REQUIRE_SHARED(path, "fixtures/t2t_vit_transformer_tiny.safetensors");
  check_golden(path, at::kFloat, 1e-5);
}

TEST(T2TViTGolden, TransformerFloat64) {
  REQUIRE_SHARED(path, "fixtures/t2t_vit_transformer_tiny.safetensors");
  check_golden(path, at::kDouble, 1e-10);
}

TEST(T2TViTGolden, PerformerFloat32) {
  REQUIRE_SHARED(path, "fixtures/t2t_vit_performer_tiny.safetensors");
  check_golden(path, at::kFloat, 1e-5);
}

TEST(T2TViTGolden, PerformerFloat64) {
  REQUIRE_SHARED(path, "fixtures/t2t_vit_performer_tiny.safetensors");
  check_golden(path, at::kDouble, 1e-10);
}

TEST(T2TViTVariants, ParameterCountsMatchSpec) {
  // models.md A.1, "params (counted, all)": pos_embed and the performer w included.
  const std::map<std::string, int64_t> expected = {
      {"t2t_vit_7", 4310222},       {"t2t_vit_10", 5889230},    {"t2t_vit_12", 6941902},
      {"t2t_vit_14", 21545550},     {"t2t_vit_19", 39177422},   {"t2t_vit_24", 64105934},
      {"t2t_vit_t_14", 21541070},   {"t2t_vit_t_19", 39172942}, {"t2t_vit_t_24", 64101454},
      {"t2t_vit_14_384", 21691470},
  };
  ASSERT_EQ(t2t_vit_variants().size(), expected.size());
  for (const std::string& name : t2t_vit_variants()) {
    ASSERT_EQ(expected.count(name), 1u) << name;
    const T2TViT model(t2t_vit_options(name));
    const int64_t count = parameter_count(*model);
    std::printf("  %-15s %s tokens, %lld parameters\n", name.c_str(),
                to_string(model->options.tokens_type()).c_str(), static_cast<long long>(count));
    EXPECT_EQ(count, expected.at(name)) << name;
  }
  EXPECT_EQ(t2t_vit_options("t2t_vit_t_24").tokens_type(), TokensType::kTransformer);
  EXPECT_EQ(t2t_vit_options("t2t_vit_7").tokens_type(), TokensType::kPerformer);
  EXPECT_EQ(t2t_vit_options("t2t_vit_14_384").img_size(), 384);
  EXPECT_THROW(t2t_vit_options("t2t_vit_99"), c10::Error);
  EXPECT_THROW(tokens_type_from_string("linformer"), c10::Error);
}

// "[1, 197, 384]" for a tensor shape, the tsv's notation.
std::string shape_text(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < sizes.size(); ++i) out << (i ? ", " : "") << sizes[i];
  out << "]";
  return out.str();
}

TEST(T2TViTVariants, KeysAndShapesMatchUpstream) {
  // models.md C: key counts per variant.
  const std::map<std::string, size_t> key_counts = {{"t2t_vit_7", 111},    {"t2t_vit_14", 188},
                                                    {"t2t_vit_24", 298},   {"t2t_vit_t_14", 184},
                                                    {"t2t_vit_t_19", 239}, {"t2t_vit_t_24", 294}};
  int checked = 0;
  for (const auto& [variant, count] : key_counts) {
    const std::string tsv =
        testing::shared_file("specs/models_keys/" + variant + ".upstream.keys.tsv");
    if (tsv.empty()) {
      std::printf("  %s: no key list in %s/specs/models_keys, not checked\n", variant.c_str(),
                  testing::shared_dir().c_str());
      continue;
    }
    // key → (shape, requires_grad) from the tsv: key \t [shape] \t param|param(requires_grad=False)
    std::map<std::string, std::pair<std::string, bool>> upstream;
    std::ifstream in(tsv);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream fields(line);
      std::string key, shape, kind;
      std::getline(fields, key, '\t');
      std::getline(fields, shape, '\t');
      std::getline(fields, kind, '\t');
      upstream[key] = {shape, kind.find("requires_grad=False") == std::string::npos};
    }
    const T2TViT model(t2t_vit_options(variant));
    std::map<std::string, std::pair<std::string, bool>> ours;
    for (const auto& p : model->named_parameters()) {
      ours[p.key()] = {shape_text(p.value().sizes()), p.value().requires_grad()};
    }
    for (const auto& b : model->named_buffers())
      ours[b.key()] = {shape_text(b.value().sizes()), false};
    EXPECT_EQ(upstream.size(), count) << variant;
    EXPECT_EQ(ours.size(), count) << variant;
    for (const auto& [key, value] : upstream) {
      const auto it = ours.find(key);
      if (it == ours.end()) {
        ADD_FAILURE() << variant << ": missing key " << key;
        continue;
      }
      EXPECT_EQ(it->second.first, value.first) << variant << " " << key;
      EXPECT_EQ(it->second.second, value.second) << variant << " requires_grad of " << key;
    }
    for (const auto& [key, _] : ours) {
      EXPECT_EQ(upstream.count(key), 1u) << variant << ": extra key " << key;
    }
    std::printf("  %s: %zu keys match %s\n", variant.c_str(), ours.size(), tsv.c_str());
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << "no key lists under " << testing::shared_dir();
}

TEST(T2TViT, KdeformerPlanRunsAndImagesIgnoreTheirNeighbours) {
  REQUIRE_SHARED(path, "fixtures/t2t_vit_transformer_tiny.safetensors");
  const SafetensorsFile file = SafetensorsFile::open(path);
  T2TViT model = load_fixture_model(file, at::kFloat);
  torch::NoGradGuard no_grad;
  const at::Tensor input = file.get("input");  // [2, 3, 224, 224]
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const at::Tensor extra = at::randn({3, 3, 224, 224}, gen);
  const at::Tensor batch1 = at::cat({input, extra.narrow(0, 0, 1)});                  // [a, b, c]
  const at::Tensor batch2 = at::cat({input.narrow(0, 0, 1), extra.narrow(0, 1, 2)});  // [a, d, e]

  const AttentionPlan plan = t2t_vit_default_plan();
  EXPECT_EQ(plan.describe(),
            "blocks=exact, t2t_layer1=kdeformer(b=32,m=0,r=7,cv,clamped), "
            "t2t_layer2=kdeformer(b=32,m=0,r=7,cv,clamped)");
  std::vector<attention::AttentionReport> reports;
  ForwardContext ctx;
  ctx.seed = 1234;
  ctx.reports = &reports;
  const at::Tensor logits1 = model->forward(batch1, plan, ctx);
  ASSERT_EQ(reports.size(), 2u + 2u);  // two T2T layers, two blocks
  EXPECT_EQ(reports[0].ran, Method::kKdeformer);
  EXPECT_EQ(reports[0].num_keys, 3136);
  EXPECT_EQ(reports[0].batch, 3);
  EXPECT_EQ(reports[1].ran, Method::kKdeformer);
  EXPECT_EQ(reports[1].num_keys, 784);
  EXPECT_EQ(reports[2].ran, Method::kExact);
  EXPECT_EQ(reports[3].num_keys, 197);
  EXPECT_EQ(reports[3].heads, 2);
  ctx.reports = nullptr;
  const at::Tensor logits2 = model->forward(batch2, plan, ctx);
  ASSERT_EQ(logits1.sizes(), (std::vector<int64_t>{3, 10}));
  EXPECT_TRUE(logits1.isfinite().all().item<bool>());
  const double neighbour_diff = (logits1[0] - logits2[0]).abs().max().item<double>();
  std::printf("  image a with neighbours [b,c] vs [d,e]: max|diff| = %.3e (%s)\n", neighbour_diff,
              logits1[0].equal(logits2[0]) ? "bitwise equal" : "not bitwise");
  EXPECT_LE(neighbour_diff, 1e-6);
  // Same seed, same batch: reproducible.
  EXPECT_TRUE(model->forward(batch1, plan, ctx).equal(logits1));

  const at::Tensor exact = model->forward(batch1, plan.with_method(Method::kExact), ctx);
  const double rel = max_rel_diff(logits1, exact);
  std::printf("  KDEformer plan vs exact logits: max|diff|/max|exact| = %.3e, top-1 agree %lld/3\n",
              rel,
              static_cast<long long>(logits1.argmax(1).eq(exact.argmax(1)).sum().item<int64_t>()));
  EXPECT_LT(rel, 1.0);
}

TEST(T2TViT, PerformerTokensIgnoreT2TGroupsAndReportOnlyBlocks) {
  REQUIRE_SHARED(path, "fixtures/t2t_vit_performer_tiny.safetensors");
  const SafetensorsFile file = SafetensorsFile::open(path);
  T2TViT model = load_fixture_model(file, at::kFloat);
  torch::NoGradGuard no_grad;
  std::vector<attention::AttentionReport> reports;
  ForwardContext ctx;
  ctx.reports = &reports;
  AttentionPlan blocks_only;
  blocks_only.groups[kT2TBlocksGroup] = attention::AttentionOptions(Method::kExact);
  const at::Tensor input = file.get("input");
  const at::Tensor a = model->forward(input, blocks_only, ctx);
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].num_keys, 197);
  EXPECT_TRUE(a.equal(model->forward(input, t2t_vit_default_plan(), ForwardContext{})));
  // The random features are the loaded ones, kept across forward passes.
  EXPECT_TRUE(model->tokens_to_token->attention1_performer->w.equal(
      file.get("tokens_to_token.attention1.w")));
}

TEST(T2TViT, ConfigurableTinyModelsRunInBothDtypes) {
  for (const TokensType type : {TokensType::kTransformer, TokensType::kPerformer}) {
    T2TViT model(T2TViTOptions()
                     .img_size(32)
                     .tokens_type(type)
                     .num_classes(5)
                     .embed_dim(24)
                     .depth(1)
                     .num_heads(3)
                     .mlp_ratio(1.5)
                     .token_dim(8));
    model->eval();
    torch::NoGradGuard no_grad;
    const AttentionPlan plan = t2t_vit_default_plan().with_method(Method::kExact);
    T2TIntermediates mid;
    const at::Tensor x = at::randn({2, 3, 32, 32});
    const at::Tensor prelogits = model->forward_features(x, plan, ForwardContext{}, &mid);
    EXPECT_EQ(mid.after_attention1.sizes(), (std::vector<int64_t>{2, 64, 8}));
    EXPECT_EQ(mid.after_attention2.sizes(), (std::vector<int64_t>{2, 16, 8}));
    EXPECT_EQ(mid.features.sizes(), (std::vector<int64_t>{2, 4, 24}));
    EXPECT_EQ(prelogits.sizes(), (std::vector<int64_t>{2, 24}));
    EXPECT_EQ(model->pos_embed.sizes(), (std::vector<int64_t>{1, 5, 24}));
    const at::Tensor logits = model->forward(x, plan, ForwardContext{});
    model->to(at::kDouble);
    const at::Tensor logits64 = model->forward(x.to(at::kDouble), plan, ForwardContext{});
    EXPECT_EQ(logits64.scalar_type(), at::kDouble);
    EXPECT_TRUE(logits64.to(at::kFloat).allclose(logits, 1e-4, 1e-5)) << to_string(type);
    EXPECT_THROW(model->forward(at::randn({1, 3, 48, 48}, at::kDouble), plan, ForwardContext{}),
                 c10::Error);
  }
}

TEST(T2TViT, SinusoidTableMatchesUpstreamFormula) {
  const at::Tensor table = sinusoid_position_table(197, 64);
  EXPECT_EQ(table.sizes(), (std::vector<int64_t>{1, 197, 64}));
  EXPECT_FLOAT_EQ(table[0][0][0].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(table[0][0][1].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(table[0][3][2].item<float>(),
                  static_cast<float>(std::sin(3.0 / std::pow(10000.0, 2.0 / 64))));
  const std::string path = testing::shared_file("fixtures/t2t_vit_transformer_tiny.safetensors");
  if (!path.empty()) {
    const at::Tensor stored = SafetensorsFile::open(path).get("pos_embed");
    std::printf("  recomputed pos_embed vs stored: max|diff| = %.3e\n",
                (stored - table).abs().max().item<double>());
    EXPECT_TRUE(stored.allclose(table, 0, 1e-6));
  }
}

}  // namespace
}  // namespace kdeserve::models
