#pragma once
/// BigGAN-deep building blocks (models.md B.2): the truncation-indexed BatchNorm (conditional and
/// plain), the bottleneck GenBlock and the SAGAN self-attention.
///
/// Every convolution and linear here holds the *folded* spectral-norm weight
/// W = weight_orig / σ under the name `weight` (see models/biggan/weights.h); no module ever runs
/// a power iteration. Parameters start with LibTorch's default initialisation; load weights
/// (load_biggan_weights) before use.

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

#include "models/attention_plan.h"

namespace kdeserve::models {

/// Which standing-statistics rows a truncation selects (models.md B.3).
struct TruncationRows {
  /// Row idx; when coef ≠ 0 row idx + 1 is mixed in as well.
  int64_t index = 0;
  /// Weight of row idx (upstream's reversed interpolation: row idx + 1 gets 1 − coef).
  double coef = 0.0;
};

/// (coef, idx) = modf(t / (1 / (n_stats − 1))) in double, exactly as upstream. Throws c10::Error
/// unless 0 < t ≤ 1. t = 0.4 → row 20 (coef 0); t = 0.444 → idx 22, coef ≈ 0.2.
TruncationRows truncation_rows(double truncation, int64_t n_stats);

/// The standing statistic for t from `rows` [n_stats, C]: rows[idx] when coef = 0, else
/// rows[idx]·coef + rows[idx+1]·(1 − coef) (reversed weights, as upstream). → [C].
at::Tensor standing_statistic(const at::Tensor& rows, double truncation);

/// Options of BigGANBatchNorm.
struct BigGANBatchNormOptions {
  /* implicit */ BigGANBatchNormOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  /// Width of the conditioning vector (2 · z_dim); used only when conditional.
  TORCH_ARG(int64_t, condition_dim) = 256;
  /// true: gain 1 + scale(c) and bias offset(c) from SN-linears without bias (bn_0..bn_3 of a
  /// GenBlock); false: learned per-channel `weight`/`bias` (the generator's final BN).
  TORCH_ARG(bool, conditional) = true;
  TORCH_ARG(int64_t, n_stats) = 51;
  TORCH_ARG(double, eps) = 1e-4;
};

/// BatchNorm with standing statistics chosen by the truncation; batch statistics are never used,
/// so an image's output is independent of its batch. Buffers `running_means`/`running_vars`
/// [n_stats, C]; conditional: submodules `scale`, `offset` (Linear cond→C, no bias); plain:
/// parameters `weight`, `bias` [C].
class BigGANBatchNormImpl : public torch::nn::Module {
 public:
  explicit BigGANBatchNormImpl(const BigGANBatchNormOptions& options);

  /// x [B, C, H, W], condition [B, condition_dim] (ignored when not conditional) → [B, C, H, W].
  /// y = (x − mean) / sqrt(var + eps) · gain + bias.
  at::Tensor forward(const at::Tensor& x, double truncation, const at::Tensor& condition = {});

  BigGANBatchNormOptions options;
  at::Tensor running_means, running_vars;
  /// Plain BN only.
  at::Tensor weight, bias;
  /// Conditional BN only.
  torch::nn::Linear scale{nullptr}, offset{nullptr};
};
TORCH_MODULE(BigGANBatchNorm);

/// Options of GenBlock; mid = in / 4.
struct GenBlockOptions {
  GenBlockOptions(int64_t in_channels, int64_t out_channels)
      : in_channels_(in_channels), out_channels_(out_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  /// Nearest-neighbour 2× upsampling inside the block and on the skip.
  TORCH_ARG(bool, up) = false;
  TORCH_ARG(int64_t, condition_dim) = 256;
  TORCH_ARG(int64_t, n_stats) = 51;
  TORCH_ARG(double, eps) = 1e-4;
};

/// The BigGAN-deep bottleneck residual block (upstream `GenerativeBlock`):
/// bn_0 → ReLU → conv_0 (1×1 in→mid) → bn_1 → ReLU → [up] → conv_1 (3×3) → bn_2 → ReLU →
/// conv_2 (3×3) → bn_3 → ReLU → conv_3 (1×1 mid→out); skip = first in/2 channels when in ≠ out,
/// then [up]; out = h + skip (no ReLU after the sum).
class GenBlockImpl : public torch::nn::Module {
 public:
  explicit GenBlockImpl(const GenBlockOptions& options);

  /// x [B, in, H, W], condition [B, condition_dim] → [B, out, H·s, W·s] (s = 2 if up else 1).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& condition, double truncation);

  GenBlockOptions options;
  BigGANBatchNorm bn_0{nullptr}, bn_1{nullptr}, bn_2{nullptr}, bn_3{nullptr};
  torch::nn::Conv2d conv_0{nullptr}, conv_1{nullptr}, conv_2{nullptr}, conv_3{nullptr};
};
TORCH_MODULE(GenBlock);

/// Layer group of the BigGAN self-attention in an AttentionPlan.
inline constexpr const char* kBigGANAttentionGroup = "self_attention";

/// The SAGAN non-local block at C channels (upstream `SelfAttn`), with attention through the
/// plan's "self_attention" group (attention layer index 0):
///   θ = conv_θ(x) (C→C/8) on all h·w positions (queries, not pooled);
///   φ = maxpool2(conv_φ(x)) (C→C/8) keys; g = maxpool2(conv_g(x)) (C→C/2) values;
///   o = softmax(θᵀφ) gᵀ with NO 1/√d scale (the call always uses scale 1.0);
///   out = x + γ · conv_o(o) (C/2→C). All four convs 1×1 without bias; γ `gamma` [1].
/// Attention runs in the module dtype with the image batch as the batch dimension (one head);
/// unlike the reference, KDEformer needs no float64 (the library max-shifts its exponentials).
class SelfAttnImpl : public torch::nn::Module {
 public:
  explicit SelfAttnImpl(int64_t channels);

  /// x [B, C, H, W] (H, W even) → [B, C, H, W].
  at::Tensor forward(const at::Tensor& x, const AttentionPlan& plan, const ForwardContext& ctx);

  int64_t channels;
  torch::nn::Conv2d snconv1x1_theta{nullptr}, snconv1x1_phi{nullptr}, snconv1x1_g{nullptr},
      snconv1x1_o_conv{nullptr};
  at::Tensor gamma;
};
TORCH_MODULE(SelfAttn);

}  // namespace kdeserve::models
