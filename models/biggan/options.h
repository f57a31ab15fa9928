#pragma once
/// Configuration of the BigGAN-deep generator (HF pytorch-pretrained-BigGAN `BigGANConfig`).

#include <torch/arg.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kdeserve::models {

/// One GenBlock of `layers`: (upsample?, in multiplier, out multiplier); the block's channels are
/// multiplier × channel_width (models.md B.1).
struct BigGANLayerSpec {
  bool up = false;
  int64_t in_mult = 1;
  int64_t out_mult = 1;
};

/// Constructor arguments of BigGAN-deep, named as upstream's config.json. The defaults are those
/// common to the three released models; `layers` has no default (see biggan_options()).
struct BigGANOptions {
  /// GenBlocks in order; the SelfAttn is inserted before block `attention_layer_position`.
  TORCH_ARG(std::vector<BigGANLayerSpec>, layers);
  /// ch: every width is a multiple of it (128 released; 8 in the tiny test fixture).
  TORCH_ARG(int64_t, channel_width) = 128;
  /// Width of z and of the class embedding; the conditioning vector is 2 · z_dim wide.
  TORCH_ARG(int64_t, z_dim) = 128;
  /// Stored by upstream but unused (the embedding width is z_dim); kept for config parity.
  TORCH_ARG(int64_t, class_embed_dim) = 128;
  TORCH_ARG(int64_t, num_classes) = 1000;
  /// Module index of the SelfAttn in generator.layers (GenBlock i ≥ position is layers.(i+1)).
  TORCH_ARG(int64_t, attention_layer_position) = 8;
  /// BatchNorm epsilon of every conditional BN and of the final BN (not the 1e-5 default).
  TORCH_ARG(double, eps) = 1e-4;
  /// Rows of standing statistics per BN, one per truncation step 1/(n_stats − 1).
  TORCH_ARG(int64_t, n_stats) = 51;
  /// Informational only (upstream's config field); the resolution follows from `layers`.
  TORCH_ARG(int64_t, output_dim) = 128;
};

/// Names accepted by biggan_options(): "biggan-deep-128", "biggan-deep-256", "biggan-deep-512".
std::vector<std::string> biggan_model_names();

/// The released configuration `name` (models.md B.1); throws c10::Error naming the accepted
/// names otherwise. Change channel_width afterwards for small synthetic models.
BigGANOptions biggan_options(const std::string& name);

/// Throws c10::Error unless the options describe a buildable generator (positive widths, an
/// attention position inside `layers`, even attention width ≥ 8 with C/8 ≥ 1, n_stats ≥ 2, ...).
void validate(const BigGANOptions& options);

/// Output side length: 4 · 2^(number of upsampling blocks) (128 for biggan-deep-128).
int64_t output_resolution(const BigGANOptions& options);

/// Side length of the feature map the SelfAttn sees (64 for all released models).
int64_t attention_resolution(const BigGANOptions& options);

/// Channels C at the SelfAttn: channel_width × layers[attention_layer_position].in_mult.
int64_t attention_channels(const BigGANOptions& options);

/// The options as upstream's config.json with sorted keys, formatted like Python's
/// json.dumps(config, sort_keys=True) (e.g. the fixtures' `config` metadata).
std::string config_json(const BigGANOptions& options);

}  // namespace kdeserve::models
