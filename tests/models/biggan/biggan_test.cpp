#include "models/biggan/biggan.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <sstream>

#include "models/biggan/layers.h"
#include "models/biggan/noise.h"
#include "models/biggan/weights.h"
#include "models/weights/safetensors.h"
#include "models/weights/state_dict.h"
#include "tests/support/shared_data.h"

namespace kdeserve::models {
namespace {

constexpr char kFixture[] = "fixtures/biggan_deep_tiny.safetensors";

// The quoted strings of a JSON list of strings, e.g. the fixture's `io_tensors`.
std::vector<std::string> json_strings(const std::string& text) {
  std::vector<std::string> out;
  const std::regex quoted("\"([^\"]*)\"");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), quoted);
       it != std::sregex_iterator(); ++it) {
    out.push_back((*it)[1].str());
  }
  return out;
}

std::optional<SafetensorsFile> open_fixture() {
  const std::string path = kdeserve::testing::shared_file(kFixture);
  if (path.empty()) return std::nullopt;
  return SafetensorsFile::open(path);
}

#define OPEN_FIXTURE_OR_SKIP(var)                                                          \
  std::optional<SafetensorsFile> var = open_fixture();                                     \
  if (!var) {                                                                              \
    GTEST_SKIP() << "shared/" << kFixture << " not found (set KDESERVE_SHARED_DIR to the " \
                 << "shared/ folder)";                                                     \
  }

BigGANOptions tiny_options() { return biggan_options("biggan-deep-128").channel_width(8); }

std::vector<std::string> io_tensors(const SafetensorsFile& file) {
  return json_strings(file.metadata().at("io_tensors"));
}

BigGAN load_tiny(const SafetensorsFile& file, at::ScalarType dtype) {
  BigGAN model(tiny_options());
  model->to(dtype);
  load_biggan_weights(*model, file, io_tensors(file));
  model->eval();
  return model;
}

double max_abs(const at::Tensor& x) { return x.to(at::kDouble).abs().max().item<double>(); }
double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return max_abs(a.to(at::kDouble) - b.to(at::kDouble));
}

// Runs the golden comparisons for one dtype; `image_tol` absolute on images, `rel_tol` × max
// |golden| on intermediates (and images when image_tol < 0).
void check_goldens(at::ScalarType dtype, double image_tol, double rel_tol) {
  OPEN_FIXTURE_OR_SKIP(file);
  BigGAN model = load_tiny(*file, dtype);
  const AttentionPlan exact = BigGANImpl::default_plan().with_method(attention::Method::kExact);
  const double t = file->get("truncation", at::kDouble).item<double>();
  const double t_interp = file->get("truncation_interp", at::kDouble).item<double>();
  ASSERT_EQ(t, 0.4);
  ASSERT_EQ(t_interp, 0.444);
  const at::Tensor classes = file->get("class_vector");
  std::vector<attention::AttentionReport> reports;
  ForwardContext ctx;
  ctx.reports = &reports;
  BigGANTrace trace;
  const at::Tensor image = model->forward(file->get("z"), classes, t, exact, ctx, &trace);
  const at::Tensor image_interp =
      model->forward(file->get("z_interp"), classes, t_interp, exact, ctx);
  EXPECT_EQ(image.scalar_type(), dtype);
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].ran, attention::Method::kExact);
  EXPECT_EQ(reports[0].num_queries, 4096);
  EXPECT_EQ(reports[0].num_keys, 1024);

  const std::string label = c10::toString(dtype);
  for (const auto& [name, actual] :
       std::map<std::string, at::Tensor>{{"image", image}, {"image_interp", image_interp}}) {
    const at::Tensor golden = file->get(name, at::kDouble);
    ASSERT_EQ(actual.sizes(), golden.sizes()) << name;
    const double diff = max_abs_diff(actual, golden);
    const double bound = image_tol > 0 ? image_tol : rel_tol * max_abs(golden);
    std::cout << "[biggan " << label << "] " << name << ": max|diff| = " << diff << " (relative "
              << diff / max_abs(golden) << ", bound " << bound << ")\n";
    EXPECT_LE(diff, bound) << name;
  }
  for (const auto& [name, actual] :
       std::map<std::string, at::Tensor>{{"after_gen_z", trace.after_gen_z},
                                         {"attn_in", trace.attn_in},
                                         {"attn_out", trace.attn_out}}) {
    const at::Tensor golden = file->get(name, at::kDouble);
    ASSERT_TRUE(actual.defined()) << name;
    ASSERT_EQ(actual.sizes(), golden.sizes()) << name;
    const double diff = max_abs_diff(actual, golden);
    std::cout << "[biggan " << label << "] " << name << ": max|diff| = " << diff << " (relative "
              << diff / max_abs(golden) << ")\n";
    EXPECT_LE(diff, rel_tol * max_abs(golden)) << name;
  }
  if (dtype == at::kFloat) {
    std::cout << "[biggan] for scale: upstream float32 vs golden max|diff| = "
              << max_abs_diff(file->get("image_f32_upstream"), file->get("image", at::kDouble))
              << ", ours vs upstream float32 = "
              << max_abs_diff(image, file->get("image_f32_upstream")) << "\n";
  }
}

TEST(BigGANGolden, Float32MatchesUpstream) { check_goldens(at::kFloat, 5e-4, 5e-4); }

TEST(BigGANGolden, Float64MatchesUpstream) { check_goldens(at::kDouble, -1.0, 1e-9); }

TEST(BigGANGolden, FixtureConfigIsTheTinyOptions) {
  OPEN_FIXTURE_OR_SKIP(file);
  EXPECT_EQ(config_json(tiny_options()), file->metadata().at("config"));
  EXPECT_EQ(output_resolution(tiny_options()), 128);
  EXPECT_EQ(attention_resolution(tiny_options()), 64);
  EXPECT_EQ(attention_channels(tiny_options()), 16);
}

TEST(BigGANTruncation, RowsInDoubleWithReversedWeights) {
  EXPECT_EQ(truncation_rows(0.4, 51).index, 20);
  EXPECT_EQ(truncation_rows(0.4, 51).coef, 0.0);
  EXPECT_EQ(truncation_rows(1.0, 51).index, 50);
  EXPECT_EQ(truncation_rows(0.1, 51).index, 5);
  const TruncationRows interp = truncation_rows(0.444, 51);
  EXPECT_EQ(interp.index, 22);
  EXPECT_NEAR(interp.coef, 0.2, 1e-12);
  // A float32 truncation selects other rows (models.md D.9): the API takes a double.
  const TruncationRows f32 = truncation_rows(static_cast<double>(0.4f), 51);
  EXPECT_TRUE(f32.index != 20 || f32.coef != 0.0);

  const at::Tensor rows = at::arange(51 * 2, at::kDouble).view({51, 2});
  // coef on row idx, 1 − coef on row idx + 1.
  const at::Tensor mixed = standing_statistic(rows, 0.444);
  EXPECT_TRUE(at::allclose(mixed, rows[22] * interp.coef + rows[23] * (1 - interp.coef)));
  EXPECT_TRUE(standing_statistic(rows, 0.4).equal(rows[20]));
  for (double bad : {0.0, -0.1, 1.0000001, std::nan("")}) {
    EXPECT_THROW(truncation_rows(bad, 51), c10::Error) << bad;
  }
}

TEST(BigGANWeights, SpectralNormFoldIsTheEvalFormula) {
  const at::Tensor w = at::randn({4, 3, 3, 3}, at::kDouble);
  const at::Tensor u = at::randn({4}, at::kDouble);
  const at::Tensor v = at::randn({27}, at::kDouble);
  const double sigma = at::dot(u, at::mv(w.reshape({4, -1}), v)).item<double>();
  EXPECT_TRUE(at::allclose(fold_spectral_norm(w, u, v), w / sigma, 1e-15, 0));
  EXPECT_THROW(fold_spectral_norm(w, u, at::randn({26}, at::kDouble)), c10::Error);
}

std::vector<BigGANCheckpointKey> read_keys_tsv(const std::string& path) {
  std::ifstream in(path);
  std::vector<BigGANCheckpointKey> keys;
  std::string line;
  const std::regex number("\\d+");
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string name, shape, kind;
    std::getline(fields, name, '\t');
    std::getline(fields, shape, '\t');
    std::getline(fields, kind, '\t');
    BigGANCheckpointKey key{name, {}, kind == "param"};
    for (auto it = std::sregex_iterator(shape.begin(), shape.end(), number);
         it != std::sregex_iterator(); ++it) {
      key.shape.push_back(std::stoll(it->str()));
    }
    keys.push_back(key);
  }
  return keys;
}

TEST(BigGANWeights, CheckpointKeysMatchTheSpecLists) {
  const std::map<std::string, size_t> counts{
      {"biggan-deep-128", 506}, {"biggan-deep-256", 602}, {"biggan-deep-512", 698}};
  for (const auto& [name, count] : counts) {
    const std::string path =
        kdeserve::testing::shared_file("specs/models_keys/" + name + ".keys.tsv");
    if (path.empty()) GTEST_SKIP() << "shared/specs/models_keys/" << name << ".keys.tsv not found";
    const auto expected = read_keys_tsv(path);
    const auto actual = biggan_checkpoint_keys(biggan_options(name));
    ASSERT_EQ(expected.size(), count) << name;
    ASSERT_EQ(actual.size(), expected.size()) << name;
    for (size_t i = 0; i < actual.size(); ++i) {  // same order as upstream's state_dict
      EXPECT_EQ(actual[i].name, expected[i].name) << name << " #" << i;
      EXPECT_EQ(actual[i].shape, expected[i].shape) << name << " " << expected[i].name;
      EXPECT_EQ(actual[i].parameter, expected[i].parameter) << name << " " << expected[i].name;
    }
  }
}

// models.md B.5 counts the upstream module's parameters: weight_orig (not u/v, which are
// buffers), biases, embeddings, gamma and the final BN's weight/bias. The C++ module holds the
// folded weights instead, with conv_to_rgb sliced from ch to 3 output rows.
TEST(BigGANWeights, ParameterCountsMatchTheSpec) {
  const std::map<std::string, int64_t> spec{
      {"biggan-deep-128", 50388609}, {"biggan-deep-256", 55880833}, {"biggan-deep-512", 56163905}};
  for (const auto& [name, count] : spec) {
    const BigGANOptions options = biggan_options(name);
    EXPECT_EQ(biggan_checkpoint_parameter_count(options), count) << name;
    const int64_t ch = options.channel_width();
    const int64_t dropped_rgb_rows = (ch - 3) * (ch * 3 * 3 + 1);
    BigGAN model(options);
    const int64_t ours = parameter_count(*model);
    std::cout << "[biggan] " << name << ": upstream parameters " << count
              << ", C++ module (folded, conv_to_rgb 3 rows) " << ours << "\n";
    EXPECT_EQ(ours, count - dropped_rgb_rows) << name;
    EXPECT_EQ(output_resolution(options), options.output_dim()) << name;
    EXPECT_EQ(attention_resolution(options), 64) << name;
  }
  EXPECT_THROW(biggan_options("biggan-deep-1024"), c10::Error);
}

// All weights of the fixture, for writing corrupted copies.
std::map<std::string, at::Tensor> fixture_weights(const SafetensorsFile& file) {
  std::map<std::string, at::Tensor> weights;
  const auto io = io_tensors(file);
  for (const std::string& name : file.names()) {
    if (std::find(io.begin(), io.end(), name) == io.end()) weights[name] = file.get(name);
  }
  return weights;
}

std::string load_error(const std::map<std::string, at::Tensor>& weights, const std::string& file) {
  const std::string path = ::testing::TempDir() + "/" + file;
  save_safetensors(path, weights);
  BigGAN model(tiny_options());
  try {
    load_biggan_weights(*model, SafetensorsFile::open(path));
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

TEST(BigGANWeights, LoaderNamesMissingMisshapenAndExtraKeys) {
  OPEN_FIXTURE_OR_SKIP(file);
  const auto weights = fixture_weights(*file);
  ASSERT_EQ(weights.size(), 506u);

  auto missing = weights;
  missing.erase("generator.layers.3.conv_1.weight_u");
  std::string message = load_error(missing, "biggan_missing.safetensors");
  EXPECT_NE(message.find("missing keys: generator.layers.3.conv_1.weight_u"), std::string::npos)
      << message;

  auto misshapen = weights;
  misshapen["generator.layers.8.gamma"] = at::ones({2});
  message = load_error(misshapen, "biggan_misshapen.safetensors");
  EXPECT_NE(message.find("'generator.layers.8.gamma': expected [1], got [2]"), std::string::npos)
      << message;

  auto extra = weights;
  extra["generator.layers.8.weight"] = at::ones({1});
  message = load_error(extra, "biggan_extra.safetensors");
  EXPECT_NE(message.find("unexpected keys: generator.layers.8.weight"), std::string::npos)
      << message;

  // Without the io_tensors ignore list, the fixture's inputs and outputs are unexpected keys.
  BigGAN model(tiny_options());
  EXPECT_THROW(load_biggan_weights(*model, *file), c10::Error);
}

TEST(BigGANKdeformer, DeterministicForASeedAndIndependentOfBatchNeighbours) {
  OPEN_FIXTURE_OR_SKIP(file);
  BigGAN model = load_tiny(*file, at::kFloat);
  const AttentionPlan plan = BigGANImpl::default_plan();
  EXPECT_EQ(plan.describe(), "self_attention=kdeformer(b=64,m=0,r=7,cv,clamped)");
  const at::Tensor z = file->get("z");
  const at::Tensor classes = file->get("class_vector");
  std::vector<attention::AttentionReport> reports;
  ForwardContext ctx;
  ctx.seed = 42;
  ctx.reports = &reports;
  const at::Tensor a = model->forward(z, classes, 0.4, plan, ctx);
  const at::Tensor b = model->forward(z, classes, 0.4, plan, ctx);
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].ran, attention::Method::kKdeformer);
  EXPECT_FALSE(reports[0].fell_back) << reports[0].reason;
  EXPECT_EQ(reports[0].num_blocks, 16);
  EXPECT_TRUE(a.equal(b));
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{2, 3, 128, 128}));
  EXPECT_LT(max_abs(a), 1.0);

  ForwardContext other = ctx;
  other.seed = 43;
  other.reports = nullptr;
  const double seed_effect = max_abs_diff(a, model->forward(z, classes, 0.4, plan, other));
  const double vs_exact = max_abs_diff(a, file->get("image", at::kDouble));
  std::cout << "[biggan] KDEformer vs exact golden max|diff| = " << vs_exact
            << "; seed 42 vs 43 = " << seed_effect << "\n";
  EXPECT_GT(seed_effect, 0.0);

  // Image 0 with entry seed 11 next to two different neighbours.
  ForwardContext per_entry;
  per_entry.seed = 42;
  per_entry.entry_seeds = {11, 22};
  const at::Tensor pair = model->forward(z, classes, 0.4, plan, per_entry);
  const at::Tensor z2 = at::stack({z[0], truncated_noise_sample(1, 0.4, 9)[0]});
  const at::Tensor c2 = at::stack({classes[0], one_hot_class_vector({1})[0]});
  per_entry.entry_seeds = {11, 33};
  const at::Tensor other_pair = model->forward(z2, c2, 0.4, plan, per_entry);
  const double neighbour_effect = max_abs_diff(pair[0], other_pair[0]);
  per_entry.entry_seeds = {12, 22};
  const double entry_seed_effect =
      max_abs_diff(pair[0], model->forward(z, classes, 0.4, plan, per_entry)[0]);
  std::cout << "[biggan] image 0 with another neighbour: max|diff| = " << neighbour_effect
            << "; with another entry seed: " << entry_seed_effect << "\n";
  EXPECT_LE(neighbour_effect, 1e-6);
  EXPECT_GT(entry_seed_effect, 1e-3);
  EXPECT_THROW(model->forward(z, classes, 0.4, plan,
                              [] {
                                ForwardContext c;
                                c.entry_seeds = {1, 2, 3};
                                return c;
                              }()),
               c10::Error);
}

TEST(BigGANForward, ValidatesInputs) {
  BigGAN model(tiny_options());
  const AttentionPlan plan = BigGANImpl::default_plan().with_method(attention::Method::kExact);
  const at::Tensor z = truncated_noise_sample(1, 0.5, 1);
  const at::Tensor c = one_hot_class_vector({3});
  EXPECT_THROW(model->forward(z, c, 0.0, plan, {}), c10::Error);
  EXPECT_THROW(model->forward(z, c, 1.5, plan, {}), c10::Error);
  EXPECT_THROW(model->forward(z.narrow(1, 0, 100), c, 0.5, plan, {}), c10::Error);
  EXPECT_THROW(model->forward(z, one_hot_class_vector({3}, 10), 0.5, plan, {}), c10::Error);
  EXPECT_THROW(model->forward(z, c, 0.5, AttentionPlan{}, {}), c10::Error);
  model->to(at::kDouble);
  EXPECT_EQ(model->forward(z, c, 0.5, plan, {}).scalar_type(), at::kDouble);
}

TEST(BigGANNoise, TruncatedNormalIsSeededAndBounded) {
  const at::Tensor a = truncated_noise_sample(64, 0.5, 7);
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{64, 128}));
  EXPECT_EQ(a.scalar_type(), at::kFloat);
  EXPECT_TRUE(a.equal(truncated_noise_sample(64, 0.5, 7)));
  EXPECT_FALSE(a.equal(truncated_noise_sample(64, 0.5, 8)));
  EXPECT_LE(max_abs(a), 1.0);
  // Standard deviation of N(0,1) truncated to [−2, 2] is 0.8796; times 0.5.
  const double std_dev = truncated_noise_sample(1000, 1.0, 3).std().item<double>();
  EXPECT_NEAR(std_dev, 0.8796, 0.01);
  const at::Tensor rows = truncated_noise_sample(std::vector<uint64_t>{5, 6}, 0.4);
  EXPECT_TRUE(rows[0].equal(truncated_noise_sample(std::vector<uint64_t>{5}, 0.4)[0]));
  EXPECT_THROW(truncated_noise_sample(1, 0.0, 1), c10::Error);
  EXPECT_THROW(truncated_noise_sample(0, 0.5, 1), c10::Error);
}

TEST(BigGANNoise, ClassVectorsAndUint8Images) {
  const at::Tensor one_hot = one_hot_class_vector({207, 980});
  EXPECT_EQ(one_hot.sizes(), (std::vector<int64_t>{2, 1000}));
  EXPECT_EQ(one_hot[0][207].item<float>(), 1.0f);
  EXPECT_EQ(one_hot.sum().item<float>(), 2.0f);
  EXPECT_THROW(one_hot_class_vector({1000}), c10::Error);
  EXPECT_THROW(one_hot_class_vector({-1}), c10::Error);
  EXPECT_THROW(one_hot_class_vector({}), c10::Error);
  const at::Tensor mix = class_weight_vector({{{1, 0.25}, {2, 0.75}}});
  EXPECT_EQ(mix[0][2].item<float>(), 0.75f);
  EXPECT_THROW(class_weight_vector({{{1, -0.5}}}), c10::Error);
  EXPECT_THROW(class_weight_vector({{{1, 0.5}, {1, 0.5}}}), c10::Error);
  EXPECT_THROW(class_weight_vector({{{1, 0.0}}}), c10::Error);

  const at::Tensor image = at::tensor({-1.0, 1.0, 0.0, 2.0}, at::kFloat).view({1, 1, 1, 4});
  const at::Tensor rgb = to_uint8_rgb(at::cat({image, image * 0.5, -image}, 1));
  EXPECT_EQ(rgb.sizes(), (std::vector<int64_t>{1, 1, 4, 3}));
  EXPECT_EQ(rgb.scalar_type(), at::kByte);
  EXPECT_EQ(rgb[0][0][0][0].item<uint8_t>(), 0);
  EXPECT_EQ(rgb[0][0][1][0].item<uint8_t>(), 255);
  EXPECT_EQ(rgb[0][0][3][0].item<uint8_t>(), 255);  // clamped
  EXPECT_EQ(rgb[0][0][1][2].item<uint8_t>(), 0);    // channel 2 = −image
  EXPECT_EQ(rgb[0][0][1][1].item<uint8_t>(), 191);  // (0.5 + 1) / 2 · 255 = 191.25
  EXPECT_THROW(to_uint8_rgb(at::zeros({1, 4, 2, 2})), c10::Error);
}

}  // namespace
}  // namespace kdeserve::models
