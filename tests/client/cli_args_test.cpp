// kdeserve-cli argument parsing (no server needed).
#include <gtest/gtest.h>

#include "client/cli_args.h"
#include "client/client.h"

namespace kdeserve::client {
namespace {

ParseResult parse(std::vector<std::string> words) { return parse_cli_args(words); }

TEST(CliArgs, ClassifyWithEveryOption) {
  auto r = parse({"--address", "10.0.0.2:9000", "classify", "--model", "t2t_vit_t_24",
                  "--top-k=3", "--batch", "4", "--attention", "kdeformer", "a.jpg", "dir",
                  "--deadline", "2.5"});
  ASSERT_TRUE(r.args) << r.error;
  const CliArgs& a = *r.args;
  EXPECT_EQ(a.command, Command::kClassify);
  EXPECT_EQ(a.address, "10.0.0.2:9000");
  EXPECT_DOUBLE_EQ(a.deadline_seconds, 2.5);
  EXPECT_EQ(a.model, "t2t_vit_t_24");
  EXPECT_EQ(a.top_k, 3u);
  EXPECT_EQ(a.batch, 4u);
  EXPECT_EQ(a.attention, kdeserve::v1::ATTENTION_MODE_KDEFORMER);
  EXPECT_EQ(a.paths, (std::vector<std::string>{"a.jpg", "dir"}));
}

TEST(CliArgs, Defaults) {
  auto r = parse({"classify", "x.png"});
  ASSERT_TRUE(r.args) << r.error;
  EXPECT_EQ(r.args->address, "localhost:8500");
  EXPECT_EQ(r.args->top_k, 0u);
  EXPECT_EQ(r.args->batch, 8u);
  EXPECT_EQ(r.args->model, "");
  EXPECT_EQ(r.args->attention, kdeserve::v1::ATTENTION_MODE_UNSPECIFIED);
  EXPECT_EQ(r.args->max_receive_mib, 64);
  EXPECT_FALSE(r.args->tls);
}

TEST(CliArgs, Generate) {
  auto r = parse({"generate", "--model", "biggan-deep-128", "--classes", "207,980", "--count",
                  "2", "--seed", "18446744073709551615", "--truncation", "0.5", "--out", "o",
                  "--attention", "exact"});
  ASSERT_TRUE(r.args) << r.error;
  EXPECT_EQ(r.args->command, Command::kGenerate);
  EXPECT_EQ(r.args->classes, (std::vector<uint32_t>{207, 980}));
  EXPECT_EQ(r.args->count, 2u);
  ASSERT_TRUE(r.args->seed.has_value());
  EXPECT_EQ(*r.args->seed, 18446744073709551615ull);
  EXPECT_DOUBLE_EQ(r.args->truncation, 0.5);
  EXPECT_EQ(r.args->out_dir, "o");
  EXPECT_EQ(r.args->attention, kdeserve::v1::ATTENTION_MODE_EXACT);
  auto no_seed = parse({"generate", "--classes", "1"});
  ASSERT_TRUE(no_seed.args) << no_seed.error;
  EXPECT_FALSE(no_seed.args->seed.has_value());
  EXPECT_EQ(no_seed.args->out_dir, ".");
}

// Every proto mode has a CLI name (case-insensitive), and the names round-trip.
TEST(CliArgs, AttentionAcceptsEveryMode) {
  using kdeserve::v1::AttentionMode;
  const std::vector<std::pair<std::string, AttentionMode>> modes = {
      {"exact", kdeserve::v1::ATTENTION_MODE_EXACT},
      {"kdeformer", kdeserve::v1::ATTENTION_MODE_KDEFORMER},
      {"performer", kdeserve::v1::ATTENTION_MODE_PERFORMER},
      {"reformer", kdeserve::v1::ATTENTION_MODE_REFORMER},
      {"scatterbrain", kdeserve::v1::ATTENTION_MODE_SCATTERBRAIN},
      {"hyperattention", kdeserve::v1::ATTENTION_MODE_HYPERATTENTION},
      {"wildcat", kdeserve::v1::ATTENTION_MODE_WILDCAT},
      {"thinformer", kdeserve::v1::ATTENTION_MODE_THINFORMER}};
  std::vector<std::string> names;
  for (const auto& [name, mode] : modes) {
    auto r = parse({"classify", "--attention", name, "x.png"});
    ASSERT_TRUE(r.args) << r.error;
    EXPECT_EQ(r.args->attention, mode) << name;
    EXPECT_EQ(attention_mode_name(mode), name);
    names.push_back(name);
  }
  EXPECT_EQ(attention_mode_names(), names);
  EXPECT_EQ(parse_attention_mode("WildCat"), kdeserve::v1::ATTENTION_MODE_WILDCAT);
  EXPECT_EQ(parse_attention_mode("default"), kdeserve::v1::ATTENTION_MODE_UNSPECIFIED);
  EXPECT_FALSE(parse_attention_mode("unspecified").has_value());
  EXPECT_FALSE(parse_attention_mode("ATTENTION_MODE_EXACT").has_value());
  EXPECT_EQ(attention_mode_name(static_cast<AttentionMode>(42)), "mode 42");
  auto bad = parse({"generate", "--classes", "1", "--attention", "linformer"});
  ASSERT_FALSE(bad.args.has_value());
  EXPECT_NE(bad.error.find("scatterbrain, hyperattention, wildcat, thinformer, or default, got "
                           "'linformer'"),
            std::string::npos)
      << bad.error;
}

TEST(CliArgs, HealthAndModels) {
  auto h = parse({"health", "--service", "readiness", "--deadline", "1"});
  ASSERT_TRUE(h.args) << h.error;
  EXPECT_EQ(h.args->command, Command::kHealth);
  EXPECT_EQ(h.args->service, "readiness");
  auto live = parse({"health"});
  ASSERT_TRUE(live.args);
  EXPECT_EQ(live.args->service, "");
  auto m = parse({"models", "biggan-deep-128"});
  ASSERT_TRUE(m.args) << m.error;
  EXPECT_EQ(m.args->command, Command::kModels);
  EXPECT_EQ(m.args->model, "biggan-deep-128");
}

TEST(CliArgs, HelpAndDoubleDash) {
  auto help = parse({"--help"});
  ASSERT_TRUE(help.args);
  EXPECT_EQ(help.args->command, Command::kHelp);
  auto dash = parse({"classify", "--", "--weird-name.png"});
  ASSERT_TRUE(dash.args) << dash.error;
  EXPECT_EQ(dash.args->paths, (std::vector<std::string>{"--weird-name.png"}));
  EXPECT_NE(cli_usage().find("classify"), std::string::npos);
}

struct BadCase {
  std::vector<std::string> words;
  std::string expected;  // part of the error message
};

TEST(CliArgs, RejectsBadInputWithAClearMessage) {
  const std::vector<BadCase> cases = {
      {{}, "no command"},
      {{"predict", "x"}, "unknown command 'predict'"},
      {{"classify"}, "at least one FILE"},
      {{"classify", "--top-k", "-1", "x"}, "--top-k needs a non-negative integer"},
      {{"classify", "--top-k", "three", "x"}, "--top-k needs an integer"},
      {{"classify", "--batch", "0", "x"}, "--batch must be >= 1"},
      {{"classify", "--attention", "linear", "x"}, "--attention must be exact, kdeformer"},
      {{"classify", "--classes", "1", "x"}, "--classes does not apply"},
      {{"classify", "--bogus", "1", "x"}, "unknown option --bogus"},
      {{"classify", "x", "--model"}, "--model needs a value"},
      {{"generate"}, "generate needs --classes"},
      {{"generate", "--classes", "1000"}, "--classes needs an integer in [0, 999]"},
      {{"generate", "--classes", "1,,2"}, "empty entry"},
      {{"generate", "--classes", "1", "--truncation", "1.5"}, "--truncation must be in (0, 1]"},
      {{"generate", "--classes", "1", "--count", "0"}, "--count must be >= 1"},
      {{"generate", "--classes", "1", "extra"}, "no positional"},
      {{"health", "--deadline", "-2"}, "--deadline must be >= 0"},
      {{"health", "--deadline", "soon"}, "--deadline needs a number"},
      {{"health", "--top-k", "3"}, "does not apply"},
      {{"models", "a", "b"}, "at most one model"},
  };
  for (const auto& c : cases) {
    auto r = parse(c.words);
    std::string joined;
    for (const auto& w : c.words) joined += w + " ";
    EXPECT_FALSE(r.args.has_value()) << joined;
    EXPECT_NE(r.error.find(c.expected), std::string::npos)
        << joined << "→ '" << r.error << "' lacks '" << c.expected << "'";
  }
}

}  // namespace
}  // namespace kdeserve::client
