// End-to-end check of tools/convert_checkpoint.py: python3-torch saves small checkpoints in the
// zip and the legacy torch.save formats (tests/tools/make_checkpoints.py), the tool converts
// them, and the C++ safetensors reader loads the result with exact keys, shapes, dtypes and
// values.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "models/weights/safetensors.h"

#ifndef KDESERVE_SOURCE_DIR
#error "KDESERVE_SOURCE_DIR must name the repository root"
#endif

namespace kdeserve::models {
namespace {

namespace fs = std::filesystem;

const std::string kPython = "/usr/bin/python3";
const std::string kSourceDir = KDESERVE_SOURCE_DIR;
/// make_checkpoints.py's exit status when torch or numpy cannot be imported.
constexpr int kNoTorch = 77;

/// One tensor written by make_checkpoints.py: start + step * arange(numel), row-major in shape.
struct Expected {
  std::string name;
  std::vector<int64_t> shape;
  at::ScalarType dtype;
  double start;
  double step;
};

// The tables of tests/tools/make_checkpoints.py (T2T: EMA values; the plain dict is negated).
const std::vector<Expected> kT2t = {
    {"cls_token", {1, 1, 8}, at::kFloat, 0.5, 0.25},
    {"pos_embed", {1, 5, 8}, at::kFloat, 1.0, 0.5},
    {"blocks.0.attn.qkv.weight", {24, 8}, at::kFloat, -3.0, 0.125},
    {"head.weight", {10, 8}, at::kHalf, -2.0, 0.125},
    {"head.bias", {10}, at::kFloat, 0.0, 1.0},
};

const std::vector<Expected> kBigGan = {
    {"embeddings.weight", {4, 10}, at::kFloat, 0.0, 0.5},
    {"generator.gen_z.bias", {16}, at::kFloat, 1.0, 0.25},
    {"generator.gen_z.weight_orig", {16, 4}, at::kFloat, -8.0, 0.25},
    {"generator.gen_z.weight_u", {16}, at::kFloat, 0.5, -0.125},
    {"generator.gen_z.weight_v", {4}, at::kFloat, 2.0, 1.0},
    {"generator.layers.0.bn_0.running_means", {3, 4}, at::kFloat, -1.0, 0.5},
    {"generator.layers.0.bn_0.running_vars", {3, 4}, at::kFloat, 1.0, 0.25},
    {"generator.layers.8.gamma", {1}, at::kFloat, 0.75, 0.0},
    {"generator.conv_to_rgb.bias", {3}, at::kFloat, 3.0, -1.0},
    {"generator.conv_to_rgb.weight_orig", {3, 4, 3, 3}, at::kFloat, -27.0, 0.5},
    {"generator.conv_to_rgb.weight_u", {3}, at::kFloat, 0.0, 2.0},
    {"generator.conv_to_rgb.weight_v", {36}, at::kFloat, 5.0, -0.25},
};

at::Tensor expected_values(const Expected& e, double sign, at::ScalarType dtype) {
  int64_t numel = 1;
  for (int64_t s : e.shape) numel *= s;
  return (at::arange(numel, at::kDouble) * (sign * e.step) + sign * e.start)
      .reshape(e.shape)
      .to(dtype);
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

/// Runs `command` with sh; the exit status, or 128 + signal, or -1 when it could not start.
int run_shell(const std::string& command) {
  const int status = std::system(command.c_str());
  if (status == -1) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class ConvertLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "kdeserve_convert_load.XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr) << "mkdtemp " << pattern;
    dir_ = pattern;
    std::string log;
    const int status = python(kSourceDir + "/tests/tools/make_checkpoints.py", {dir_}, &log);
    // 77: make_checkpoints.py could not import torch/numpy; 126/127: no runnable python3.
    if (status == kNoTorch || status == 126 || status == 127) {
      GTEST_SKIP() << kPython << " cannot import torch and numpy; install Debian's "
                   << "python3-torch (apt-get install python3-torch) to run this test\n"
                   << log;
    }
    ASSERT_EQ(status, 0) << log;
  }

  void TearDown() override {
    if (dir_.empty()) return;
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  /// Runs `/usr/bin/python3 script args...`; returns the exit status, stdout+stderr in `log`.
  int python(const std::string& script, const std::vector<std::string>& args, std::string* log) {
    const std::string log_path = dir_ + "/command.log";
    std::string command = kPython + " " + shell_quote(script);
    for (const auto& a : args) command += " " + shell_quote(a);
    command += " >" + shell_quote(log_path) + " 2>&1";
    const int status = run_shell(command);
    *log = command + "\n" + read_text(log_path);
    return status;
  }

  /// Converts `input` (in dir_) to `output` (in dir_) with `options`; the tool's exit status.
  int convert(const std::string& input, const std::string& output, std::vector<std::string> options,
              std::string* log) {
    options.push_back(path(input));
    options.push_back(path(output));
    return python(kSourceDir + "/tools/convert_checkpoint.py", options, log);
  }

  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  /// Checks that `file` holds exactly `expected` (values times `sign`, stored as `dtype` or,
  /// when `dtype` is undefined, as each entry's own dtype).
  static void expect_tensors(const SafetensorsFile& file, const std::vector<Expected>& expected,
                             double sign, std::optional<at::ScalarType> dtype = std::nullopt) {
    std::vector<std::string> names;
    for (const auto& e : expected) names.push_back(e.name);
    std::sort(names.begin(), names.end());
    EXPECT_EQ(file.names(), names);
    for (const auto& e : expected) {
      SCOPED_TRACE(e.name);
      ASSERT_TRUE(file.contains(e.name));
      const at::ScalarType stored = dtype.value_or(e.dtype);
      EXPECT_EQ(file.info(e.name).dtype, stored);
      EXPECT_EQ(file.info(e.name).shape, e.shape);
      const at::Tensor got = file.get(e.name);
      const at::Tensor want = expected_values(e, sign, stored);
      EXPECT_EQ(got.scalar_type(), stored);
      EXPECT_TRUE(got.equal(want)) << "got " << got << "\nwant " << want;
    }
  }

  std::string dir_;
};

TEST_F(ConvertLoadTest, ZipT2tAutoTakesTheEmaWeights) {
  std::string log;
  ASSERT_EQ(convert("t2t_like.pth.tar", "t2t.safetensors", {}, &log), 0) << log;
  const SafetensorsFile file = SafetensorsFile::open(path("t2t.safetensors"));
  expect_tensors(file, kT2t, 1.0);

  const auto& meta = file.metadata();
  EXPECT_EQ(meta.at("state_dict"), "state_dict_ema");
  EXPECT_EQ(meta.at("source_file"), "t2t_like.pth.tar");
  EXPECT_EQ(meta.at("source_format"), "zip");
  EXPECT_EQ(meta.at("source_sha256").size(), 64u);
  EXPECT_EQ(meta.at("dtype"), "keep");
  EXPECT_EQ(meta.at("stripped_prefix"), "");
  EXPECT_FALSE(meta.at("converter_version").empty());

  // A second run must not overwrite the output without --force.
  EXPECT_EQ(convert("t2t_like.pth.tar", "t2t.safetensors", {}, &log), 2) << log;
  EXPECT_NE(log.find("--force"), std::string::npos) << log;
}

TEST_F(ConvertLoadTest, ZipT2tPlainTakesTheOtherDict) {
  std::string log;
  ASSERT_EQ(convert("t2t_like.pth.tar", "plain.safetensors", {"--state-dict", "plain"}, &log), 0)
      << log;
  const SafetensorsFile file = SafetensorsFile::open(path("plain.safetensors"));
  expect_tensors(file, kT2t, -1.0);
  EXPECT_EQ(file.metadata().at("state_dict"), "state_dict");
}

TEST_F(ConvertLoadTest, ZipT2tDtypeF32WidensTheHalfTensor) {
  std::string log;
  ASSERT_EQ(convert("t2t_like.pth.tar", "f32.safetensors", {"--dtype", "f32"}, &log), 0) << log;
  const SafetensorsFile file = SafetensorsFile::open(path("f32.safetensors"));
  expect_tensors(file, kT2t, 1.0, at::kFloat);
  EXPECT_EQ(file.metadata().at("dtype"), "f32");
}

TEST_F(ConvertLoadTest, LegacyBigGanKeepsSpectralNormAndStatistics) {
  std::string log;
  ASSERT_EQ(convert("biggan_like.bin", "biggan.safetensors",
                    {"--metadata", "model=biggan-deep-test"}, &log),
            0)
      << log;
  const SafetensorsFile file = SafetensorsFile::open(path("biggan.safetensors"));
  expect_tensors(file, kBigGan, 1.0);

  const auto& meta = file.metadata();
  EXPECT_EQ(meta.at("source_format"), "legacy");
  EXPECT_EQ(meta.at("state_dict"), "(top level)");
  EXPECT_EQ(meta.at("source_file"), "biggan_like.bin");
  EXPECT_EQ(meta.at("model"), "biggan-deep-test");

  // The strict loader the models use accepts the file as it stands.
  std::vector<ExpectedTensor> wanted;
  for (const auto& e : kBigGan) wanted.push_back({e.name, e.shape});
  const auto loaded = load_strict(file, wanted, at::kFloat);
  ASSERT_EQ(loaded.size(), kBigGan.size());
  for (const auto& e : kBigGan) {
    EXPECT_TRUE(loaded.at(e.name).equal(expected_values(e, 1.0, at::kFloat))) << e.name;
  }
}

}  // namespace
}  // namespace kdeserve::models
