#pragma once
/// Building blocks shared by the T2T-ViT token layers and ViT blocks: the MLP, the ViT block and
/// the one helper through which every softmax attention of the model runs.

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <string>

#include "models/attention_plan.h"

namespace kdeserve::models {

/// LayerNorm epsilon of every T2T-ViT LayerNorm (PyTorch's default, models.md A.2 / D.6).
inline constexpr double kT2TLayerNormEps = 1e-5;

/// Attention of one layer with the plan's options for `group`, but with the model's softmax
/// `scale` (upstream's, which overrides any scale in the plan). Appends the call's report to
/// ctx.reports when set; the call's randomness is ctx.call_for_layer(layer).
/// q [B, H, N, D], k [B, H, N, D], v [B, H, N, Dv] → [B, H, N, Dv].
at::Tensor run_scaled_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                double scale, const AttentionPlan& plan, const std::string& group,
                                int64_t layer, const ForwardContext& ctx);

/// Options of the two-layer MLP fc2(GELU(fc1(x))) (upstream `Mlp`).
struct MlpOptions {
  MlpOptions(int64_t in_features, int64_t hidden_features, int64_t out_features)
      : in_features_(in_features), hidden_features_(hidden_features), out_features_(out_features) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, hidden_features);
  TORCH_ARG(int64_t, out_features);
};

/// fc2(GELU_erf(fc1(x))), both Linear with bias; keys `fc1.*`, `fc2.*`.
class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const MlpOptions& options);
  /// x [..., in_features] → [..., out_features].
  at::Tensor forward(const at::Tensor& x);

  MlpOptions options;
  torch::nn::Linear fc1{nullptr};
  torch::nn::Linear fc2{nullptr};
};
TORCH_MODULE(Mlp);

/// Options of one pre-norm ViT block (upstream `transformer_block.Block`).
struct BlockOptions {
  BlockOptions(int64_t dim, int64_t num_heads) : dim_(dim), num_heads_(num_heads) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, num_heads);
  TORCH_ARG(double, mlp_ratio) = 4.0;
  TORCH_ARG(bool, qkv_bias) = false;
  /// Unset: head_dim^-0.5.
  TORCH_ARG(std::optional<double>, qk_scale) = std::nullopt;
};

/// Multi-head self-attention of a ViT block: keys `qkv.weight` [3D, D] (bias only with
/// qkv_bias), `proj.{weight,bias}` [D, D]/[D].
class BlockAttentionImpl : public torch::nn::Module {
 public:
  explicit BlockAttentionImpl(const BlockOptions& options);
  /// x [B, N, D] → [B, N, D]. The qkv output feature index is s·D + head·head_dim + d with
  /// s = 0, 1, 2 for q, k, v; softmax(scale · q kᵀ) v runs through run_scaled_attention with
  /// group `group` and layer index `layer`.
  at::Tensor forward(const at::Tensor& x, const AttentionPlan& plan, const std::string& group,
                     int64_t layer, const ForwardContext& ctx);
  /// The softmax scale: qk_scale or head_dim^-0.5.
  double scale() const;

  BlockOptions options;
  torch::nn::Linear qkv{nullptr};
  torch::nn::Linear proj{nullptr};
};
TORCH_MODULE(BlockAttention);

/// Pre-norm block: x += attn(norm1(x)); x += mlp(norm2(x)). Keys `norm1.*`, `attn.*`, `norm2.*`,
/// `mlp.fc1.*`, `mlp.fc2.*`.
class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const BlockOptions& options);
  /// x [B, N, D] → [B, N, D].
  at::Tensor forward(const at::Tensor& x, const AttentionPlan& plan, const std::string& group,
                     int64_t layer, const ForwardContext& ctx);

  BlockOptions options;
  torch::nn::LayerNorm norm1{nullptr};
  BlockAttention attn{nullptr};
  torch::nn::LayerNorm norm2{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(Block);

}  // namespace kdeserve::models
