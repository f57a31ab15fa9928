// ServerConfig: YAML parsing, unknown keys, ranges, overrides, the embedded default.
#include "server/config.h"

#include <gtest/gtest.h>

#include <fstream>

#include "server/engine/engine.h"
#include "server/engine/model_engine.h"

namespace ks = kdeserve::server;

namespace {

const char* kMinimal = R"(
models:
  - name: t2t_vit_t_14
)";

std::string error_of(const std::string& yaml) {
  try {
    ks::validate(ks::parse_config_yaml(yaml, "test.yaml"));
  } catch (const ks::ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ServerConfig, EmbeddedDefaultIsTheDeployFileAndValid) {
  std::ifstream in(std::string(KDESERVE_SOURCE_DIR) + "/deploy/config/server.yaml");
  ASSERT_TRUE(in);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(ks::embedded_default_config(), file);
  const ks::ServerConfig c = ks::load_config({});
  EXPECT_EQ(c.listen, "0.0.0.0:8500");
  EXPECT_EQ(c.metrics_listen, "0.0.0.0:8502");
  EXPECT_EQ(c.max_message_bytes, 64 * 1024 * 1024);
  ASSERT_EQ(c.models.size(), 2u);
  EXPECT_EQ(c.models[0].name, "t2t_vit_t_24");
  EXPECT_EQ(c.models[1].name, "biggan-deep-128");
  EXPECT_FALSE(c.models[0].weights.has_value());
  EXPECT_EQ(c.models[0].max_image_pixels, 40'000'000);
  EXPECT_EQ(c.models[0].max_image_decoded_bytes, 364'000'000);
  EXPECT_EQ(c.models[0].kdeformer_settings, ks::KdeformerSettings::kTuned);
}

TEST(ServerConfig, KdeformerSettings) {
  const ks::ServerConfig c = ks::parse_config_yaml(R"(
models:
  - name: t2t_vit_t_14
    kdeformer_settings: paper
)",
                                                   "t");
  EXPECT_EQ(c.models[0].kdeformer_settings, ks::KdeformerSettings::kPaper);
  EXPECT_NE(ks::to_yaml(c).find("kdeformer_settings: paper"), std::string::npos);
  EXPECT_NE(error_of("models:\n  - name: t2t_vit_t_14\n    kdeformer_settings: fast\n")
                .find("models[0].kdeformer_settings: 'fast' is not one of tuned, paper"),
            std::string::npos);
}

TEST(ServerConfig, DefaultsForOmittedKeys) {
  const ks::ServerConfig c = ks::parse_config_yaml(kMinimal, "t");
  ks::validate(c);
  EXPECT_EQ(c.threads, 0);
  EXPECT_EQ(c.log_format, "text");
  EXPECT_EQ(c.models[0].device, "cpu");
  EXPECT_EQ(c.models[0].default_attention, ks::AttentionMode::kKdeformer);
  EXPECT_EQ(c.models[0].batching.max_batch_size, 8);
  EXPECT_EQ(c.models[0].max_image_pixels, 40'000'000);
  EXPECT_EQ(c.models[0].max_image_decoded_bytes, 364'000'000);
}

TEST(ServerConfig, ImageLimits) {
  const ks::ServerConfig c = ks::parse_config_yaml(
      "models: [{name: t2t_vit_t_14, max_image_pixels: 1000000, "
      "max_image_decoded_bytes: 12000000}]",
      "t");
  ks::validate(c);
  EXPECT_EQ(c.models[0].max_image_pixels, 1'000'000);
  EXPECT_EQ(c.models[0].max_image_decoded_bytes, 12'000'000);
  EXPECT_NE(ks::to_yaml(c).find("max_image_decoded_bytes: 12000000"), std::string::npos);
  for (const char* bad : {"0", "-5", "4400000001"}) {
    EXPECT_NE(error_of(std::string("models: [{name: t2t_vit_t_14, max_image_decoded_bytes: ") +
                       bad + "}]")
                  .find("(t2t_vit_t_14).max_image_decoded_bytes: must be in [1, 4400000000]"),
              std::string::npos)
        << bad;
  }
  EXPECT_NE(error_of("models: [{name: t2t_vit_t_14, max_image_decoded_bytes: lots}]")
                .find("models[0].max_image_decoded_bytes: invalid value"),
            std::string::npos);
  EXPECT_EQ(error_of("models: [{name: t2t_vit_t_14, max_image_decoded_bytes: 4400000000}]"), "");
}

TEST(ServerConfig, RejectsUnknownKeysWithTheirPath) {
  EXPECT_NE(error_of("server: {listen: 1.2.3.4:5, lisen: x}\nmodels: [{name: t2t_vit_t_14}]")
                .find("unknown key 'lisen'"),
            std::string::npos);
  EXPECT_NE(error_of("models: [{name: t2t_vit_t_14, batching: {max_batch: 3}}]")
                .find("models[0].batching: unknown key 'max_batch'"),
            std::string::npos);
  EXPECT_NE(error_of("modles: []").find("unknown key 'modles'"), std::string::npos);
}

// Found by fuzz_config_yaml: a complex key (a list or a mapping) threw YAML::BadConversion
// instead of a ConfigError.
TEST(ServerConfig, RejectsKeysThatAreNotStrings) {
  EXPECT_NE(error_of("models: [{name: t2t_vit_t_14, ? [a, b]: 1}]")
                .find("models[0]: a key must be a string, got a list"),
            std::string::npos);
  EXPECT_NE(error_of("server:\n  ? {listen: 1}\n  : 2\nmodels: [{name: t2t_vit_t_14}]")
                .find("server: a key must be a string, got a mapping"),
            std::string::npos);
}

// Found by fuzz_config_yaml: a path the OS refuses to look up (too long) threw
// std::filesystem::filesystem_error out of validate() instead of being a file that is not there.
TEST(ServerConfig, PathsTooLongToLookUpAreMissingFiles) {
  const std::string path = "/" + std::string(5000, 'w');
  EXPECT_NE(error_of("models: [{name: t2t_vit_t_14, weights: " + path + "}]")
                .find("models[0] (t2t_vit_t_14).weights: no such file /www"),
            std::string::npos);
  EXPECT_NE(error_of("server: {tls: {cert_file: " + path + ", key_file: " + path +
                     "}}\nmodels: [{name: t2t_vit_t_14}]")
                .find("server.tls: no such file /www"),
            std::string::npos);
}

TEST(ServerConfig, ChecksRangesAndNames) {
  EXPECT_NE(error_of("models: [{name: resnet50}]").find("not a registered model"),
            std::string::npos);
  EXPECT_NE(error_of("server: {threads: -1}\nmodels: [{name: t2t_vit_t_14}]").find("threads"),
            std::string::npos);
  EXPECT_NE(error_of("server: {listen: nohost}\nmodels: [{name: t2t_vit_t_14}]")
                .find("server.listen"),
            std::string::npos);
  EXPECT_NE(error_of("models: [{name: t2t_vit_t_14, batching: {max_batch_size: 2, "
                     "max_items_per_request: 4}}]")
                .find("max_items_per_request"),
            std::string::npos);
  EXPECT_NE(error_of("models: [{name: t2t_vit_t_14, default_attention: exact, "
                     "allowed_attention: [kdeformer]}]")
                .find("must contain default_attention"),
            std::string::npos);
  EXPECT_NE(error_of("models: [{name: t2t_vit_t_14, default_attention: fast}]")
                .find("unknown attention mode 'fast'"),
            std::string::npos);
  EXPECT_NE(error_of("logging: {format: xml}\nmodels: [{name: t2t_vit_t_14}]").find("xml"),
            std::string::npos);
  EXPECT_NE(error_of("models: []").find("at least one model"), std::string::npos);
  EXPECT_NE(error_of("models: [{name: t2t_vit_t_14}, {name: t2t_vit_t_14}]").find("twice"),
            std::string::npos);
  EXPECT_NE(error_of("models: [{name: t2t_vit_t_14, weights: /nonexistent.safetensors}]")
                .find("no such file"),
            std::string::npos);
  EXPECT_NE(error_of("server: {threads: many}\nmodels: [{name: t2t_vit_t_14}]")
                .find("invalid value"),
            std::string::npos);
}

TEST(ServerConfig, RejectsCudaWithoutCuda) {
  const std::string e = error_of("models: [{name: t2t_vit_t_14, device: 'cuda:0'}]");
  if (ks::cuda_available()) GTEST_SKIP() << "this LibTorch has CUDA";
  // The reason names what is missing: CUDA in this build, or a visible device.
  EXPECT_NE(e.find("'cuda:0' requested, but "), std::string::npos) << e;
  EXPECT_NE(e.find(ks::cuda_unavailable_reason()), std::string::npos) << e;
  EXPECT_TRUE(e.find("built without CUDA") != std::string::npos ||
              e.find("no CUDA device is visible") != std::string::npos)
      << e;
  EXPECT_NE(error_of("models: [{name: t2t_vit_t_14, device: tpu}]").find("not cpu, cuda"),
            std::string::npos);
}

TEST(ServerConfig, CommandLineOverrides) {
  const char* argv[] = {"kdeserve-server", "--listen", "127.0.0.1:1234",
                        "--metrics-listen=127.0.0.1:1235", "--threads", "2",
                        "--log-format", "json", "--log-level", "debug"};
  const ks::CommandLine cl = ks::parse_command_line(10, argv);
  const ks::ServerConfig c = ks::load_config(cl);
  EXPECT_EQ(c.listen, "127.0.0.1:1234");
  EXPECT_EQ(c.metrics_listen, "127.0.0.1:1235");
  EXPECT_EQ(c.threads, 2);
  EXPECT_EQ(c.log_format, "json");
  EXPECT_EQ(c.log_level, "debug");

  const char* bad[] = {"kdeserve-server", "--bogus"};
  EXPECT_THROW(ks::parse_command_line(2, bad), ks::ConfigError);
  const char* missing[] = {"kdeserve-server", "--threads"};
  EXPECT_THROW(ks::parse_command_line(2, missing), ks::ConfigError);
  const char* weights[] = {"kdeserve-server", "--model-weights", "nosuch=/x"};
  EXPECT_THROW(ks::load_config(ks::parse_command_line(3, weights)), ks::ConfigError);
  const char* weights2[] = {"kdeserve-server", "--model-weights", "t2t_vit_t_24=/nonexistent"};
  try {
    ks::load_config(ks::parse_command_line(3, weights2));
    FAIL() << "expected a ConfigError";
  } catch (const ks::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("no such file /nonexistent"), std::string::npos);
  }
}

TEST(ServerConfig, PrintedYamlRoundTrips) {
  const ks::ServerConfig c = ks::load_config({});
  const ks::ServerConfig back = ks::parse_config_yaml(ks::to_yaml(c), "printed");
  ks::validate(back);
  EXPECT_EQ(ks::to_yaml(back), ks::to_yaml(c));
}

// The /metrics HTTP server's block: defaults, values, ranges, unknown keys, printing.
TEST(ServerConfig, MetricsBlock) {
  const ks::ServerConfig defaults = ks::parse_config_yaml(kMinimal, "t");
  EXPECT_EQ(defaults.metrics.http_threads, 16);
  EXPECT_EQ(defaults.metrics.request_timeout_ms, 2000);
  const ks::ServerConfig c = ks::parse_config_yaml(
      "metrics: {http_threads: 4, request_timeout_ms: 750}\nmodels: [{name: t2t_vit_t_14}]", "t");
  ks::validate(c);
  EXPECT_EQ(c.metrics.http_threads, 4);
  EXPECT_EQ(c.metrics.request_timeout_ms, 750);
  EXPECT_NE(ks::to_yaml(c).find("metrics:\n  http_threads: 4\n  request_timeout_ms: 750"),
            std::string::npos)
      << ks::to_yaml(c);
  EXPECT_NE(error_of("metrics: {http_threads: 0}\nmodels: [{name: t2t_vit_t_14}]")
                .find("metrics.http_threads: must be in [1, 256]"),
            std::string::npos);
  EXPECT_NE(error_of("metrics: {http_threads: 257}\nmodels: [{name: t2t_vit_t_14}]")
                .find("metrics.http_threads"),
            std::string::npos);
  EXPECT_NE(error_of("metrics: {request_timeout_ms: 99}\nmodels: [{name: t2t_vit_t_14}]")
                .find("metrics.request_timeout_ms: must be in [100, 60000]"),
            std::string::npos);
  EXPECT_NE(error_of("metrics: {request_timeout_ms: 60001}\nmodels: [{name: t2t_vit_t_14}]")
                .find("metrics.request_timeout_ms"),
            std::string::npos);
  EXPECT_THROW(ks::parse_config_yaml("metrics: {keep_alive: yes}\nmodels: [{name: t2t_vit_t_14}]",
                                     "t"),
               ks::ConfigError);
  EXPECT_THROW(ks::parse_config_yaml("metrics: {http_threads: many}\nmodels: [{name: x}]", "t"),
               ks::ConfigError);
}

// Every attention method has a config name (the library's, attention::to_string), parses back,
// and can be a model's default or allowed mode; the error for an unknown name lists them all.
TEST(ServerConfig, AttentionModesAreTheLibrarysMethods) {
  const std::vector<std::string> names = {"exact",    "kdeformer",    "performer",
                                          "reformer", "scatterbrain", "hyperattention",
                                          "wildcat",  "thinformer"};
  ASSERT_EQ(std::size(ks::kAllAttentionModes), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    const ks::AttentionMode mode = ks::kAllAttentionModes[i];
    EXPECT_EQ(ks::to_string(mode), names[i]);
    EXPECT_EQ(ks::attention_mode_from_string(names[i]), mode);
    EXPECT_EQ(ks::attention_method_name(mode), names[i]) << "the engine runs another method";
  }
  const ks::ServerConfig c = ks::parse_config_yaml(R"(
models:
  - name: t2t_vit_t_14
    default_attention: wildcat
    allowed_attention: [exact, kdeformer, performer, reformer, scatterbrain, hyperattention,
                        wildcat, thinformer]
)",
                                                   "t");
  ks::validate(c);
  EXPECT_EQ(c.models[0].default_attention, ks::AttentionMode::kWildCat);
  ASSERT_EQ(c.models[0].allowed_attention.size(), names.size());
  EXPECT_EQ(c.models[0].allowed_attention[5], ks::AttentionMode::kHyperAttention);
  const ks::ServerConfig back = ks::parse_config_yaml(ks::to_yaml(c), "printed");
  EXPECT_EQ(ks::to_yaml(back), ks::to_yaml(c));
  EXPECT_NE(ks::to_yaml(c).find("[exact, kdeformer, performer, reformer, scatterbrain, "
                                "hyperattention, wildcat, thinformer]"),
            std::string::npos)
      << ks::to_yaml(c);

  const std::string unknown = error_of("models: [{name: t2t_vit_t_14, default_attention: FAVOR}]");
  EXPECT_NE(unknown.find("unknown attention mode 'FAVOR' (expected one of exact, kdeformer, "
                         "performer, reformer, scatterbrain, hyperattention, wildcat, "
                         "thinformer)"),
            std::string::npos)
      << unknown;
  EXPECT_NE(error_of("models: [{name: t2t_vit_t_14, default_attention: performer}]")
                .find("must contain default_attention (performer)"),
            std::string::npos);
  EXPECT_NE(error_of("models: [{name: t2t_vit_t_14, allowed_attention: [kdeformer, reformer, "
                     "reformer]}]")
                .find("allowed_attention: reformer listed twice"),
            std::string::npos);
}
