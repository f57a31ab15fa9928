// The server's engine at its torch-free boundary: LibTorch errors arrive as LibTorchError, images
// come back as the model's uint8 crop, noise is seeded, specs mirror the registry.
#include "server/engine/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "server/engine/images.h"
#include "server/engine/model_engine.h"
#include "server/errors.h"

namespace ks = kdeserve::server;

namespace {
const ks::ImageLimits kLimits{1'000'000, 1'000'000'000};
}  // namespace

TEST(ServerEngine, LibTorchErrorsAreTranslated) {
  try {
    ks::prepare_encoded_image("GIF89a not supported", 224, kLimits);
    FAIL() << "a GIF was decoded";
  } catch (const ks::LibTorchError& e) {
    EXPECT_FALSE(e.brief().empty());
    EXPECT_NE(std::string(e.what()).find(e.brief()), std::string::npos)
        << "what() keeps the whole c10::Error message";
  }
  EXPECT_THROW(ks::registered_model_spec("no-such-model"), ks::LibTorchError);
  EXPECT_THROW(ks::truncated_noise(1, 0.0, 128), ks::LibTorchError);
  EXPECT_THROW(ks::prepare_raw_image(std::string(10, '\0'), 4, 4, 3, 224, kLimits),
               ks::LibTorchError);
}

TEST(ServerEngine, RawImagesBecomeTheModelCrop) {
  const std::string gray(40 * 30, '\x7f');
  const ks::RgbImage crop = ks::prepare_raw_image(gray, 40, 30, 1, 224, kLimits);
  EXPECT_EQ(crop.height, 224);
  EXPECT_EQ(crop.width, 224);
  ASSERT_EQ(crop.pixels.size(), 224u * 224 * 3);
  EXPECT_TRUE(
      std::all_of(crop.pixels.begin(), crop.pixels.end(), [](uint8_t v) { return v == 0x7f; }));
  // PNG out, and back in through the decoder.
  const std::string png = ks::encode_png(crop);
  ASSERT_GT(png.size(), 8u);
  EXPECT_EQ(png.substr(1, 3), "PNG");
  EXPECT_EQ(ks::prepare_encoded_image(png, 224, kLimits).pixels, crop.pixels);
  EXPECT_THROW(ks::prepare_raw_image(gray, 40, 30, 1, 224, {1000, 1'000'000'000}),
               ks::LibTorchError)
      << "max_pixels is enforced";
  // max_decoded_bytes: the raw copy and its RGB form, 40 · 30 · (1 + 3) bytes; the PNG's
  // decoded image and RGB result, 224 · 224 · (3 + 3).
  EXPECT_NO_THROW(ks::prepare_raw_image(gray, 40, 30, 1, 224, {1'000'000, 40 * 30 * 4}));
  EXPECT_THROW(ks::prepare_raw_image(gray, 40, 30, 1, 224, {1'000'000, 40 * 30 * 4 - 1}),
               ks::LibTorchError);
  EXPECT_NO_THROW(ks::prepare_encoded_image(png, 224, {1'000'000, 224 * 224 * 6}));
  EXPECT_THROW(ks::prepare_encoded_image(png, 224, {1'000'000, 224 * 224 * 6 - 1}),
               ks::LibTorchError);
}

// kdeformer_settings: paper swaps the kdeformer mode's plan for the paper's settings only.
TEST(ServerEngine, PaperKdeformerSettingsReplaceOnlyTheKdeformerPlan) {
  ks::EngineLoadOptions options;
  const ks::ModelEngine tuned("t2t_vit_t_14", options);
  options.paper_kdeformer = true;
  const ks::ModelEngine paper("t2t_vit_t_14", options);
  EXPECT_EQ(tuned.describe_plan(ks::AttentionMode::kKdeformer),
            "blocks=exact, t2t_layer1=kdeformer(b=32,m=0,r=7,cv,clamped), "
            "t2t_layer2=kdeformer(b=32,m=0,r=7,cv,clamped)");
  EXPECT_EQ(paper.describe_plan(ks::AttentionMode::kKdeformer),
            "blocks=exact, t2t_layer1=kdeformer(b=32,m=98,r=7), "
            "t2t_layer2=kdeformer(b=32,m=24,r=7)");
  EXPECT_EQ(paper.describe_plan(ks::AttentionMode::kWildCat),
            tuned.describe_plan(ks::AttentionMode::kWildCat));
}

TEST(ServerEngine, NoiseIsSeededAndSpecsMirrorTheRegistry) {
  const std::vector<float> a = ks::truncated_noise(7, 0.5, 128);
  ASSERT_EQ(a.size(), 128u);
  EXPECT_EQ(a, ks::truncated_noise(7, 0.5, 128));
  EXPECT_NE(a, ks::truncated_noise(8, 0.5, 128));
  EXPECT_TRUE(std::all_of(a.begin(), a.end(), [](float v) { return v >= -1 && v <= 1; }));

  const auto names = ks::registered_model_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "t2t_vit_t_24"), names.end());
  const ks::ModelSpec vit = ks::registered_model_spec("t2t_vit_t_24");
  EXPECT_EQ(vit.kind, ks::ModelKind::kClassifier);
  EXPECT_EQ(vit.image_size, 224);
  EXPECT_EQ(vit.num_classes, 1000);
  const ks::ModelSpec gan = ks::registered_model_spec("biggan-deep-128");
  EXPECT_EQ(gan.kind, ks::ModelKind::kGenerator);
  EXPECT_EQ(gan.z_dim, 128);
  EXPECT_GE(ks::set_compute_threads(1), 1);
  EXPECT_FALSE(ks::torch_version().empty());
}
