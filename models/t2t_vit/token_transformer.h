#pragma once
/// The tokens-to-token layers of T2T-ViT: Token_transformer (softmax attention, exact or
/// KDEformer) and Token_performer (random-feature attention). Both are single-head, map
/// [B, N, dim] → [B, N, in_dim] and use the value projection v as the attention's residual
/// (models.md A.2, D.3).

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>

#include "models/attention_plan.h"
#include "models/t2t_vit/layers.h"

namespace kdeserve::models {

/// Options of a Token_transformer layer (upstream: one head, mlp_ratio 1.0).
struct TokenTransformerOptions {
  TokenTransformerOptions(int64_t dim, int64_t in_dim) : dim_(dim), in_dim_(in_dim) {}
  /// Input width: 3·7·7 = 147 (attention1) or token_dim·3·3 (attention2).
  TORCH_ARG(int64_t, dim);
  /// Output (token) width: token_dim.
  TORCH_ARG(int64_t, in_dim);
  /// MLP hidden = int(in_dim · mlp_ratio).
  TORCH_ARG(double, mlp_ratio) = 1.0;
};

/// Single-head attention of a Token_transformer: keys `qkv.weight` [3·in_dim, dim] (no bias),
/// `proj.{weight,bias}` [in_dim, in_dim]/[in_dim].
class TokenAttentionImpl : public torch::nn::Module {
 public:
  explicit TokenAttentionImpl(const TokenTransformerOptions& options);
  /// h [B, N, dim] (already LayerNorm'd) → v + proj(softmax(scale · q kᵀ) v) [B, N, in_dim],
  /// with q, k, v the column slices [0, in_dim), [in_dim, 2·in_dim), [2·in_dim, 3·in_dim) of
  /// qkv(h). The softmax runs through run_scaled_attention (group, layer) as [B, 1, N, in_dim].
  at::Tensor forward(const at::Tensor& h, const AttentionPlan& plan, const std::string& group,
                     int64_t layer, const ForwardContext& ctx);
  /// dim^-0.5: upstream's head_dim^-0.5 with one head of the *input* width (147^-0.5,
  /// 576^-0.5), not in_dim^-0.5 (models.md D.1).
  double scale() const;

  TokenTransformerOptions options;
  torch::nn::Linear qkv{nullptr};
  torch::nn::Linear proj{nullptr};
};
TORCH_MODULE(TokenAttention);

/// Token_transformer: x1 = attn(norm1(x)) (v-skip inside), out = x1 + mlp(norm2(x1)).
/// Keys `norm1.*` [dim], `attn.qkv.weight`, `attn.proj.*`, `norm2.*` [in_dim], `mlp.fc1.*`,
/// `mlp.fc2.*`.
class TokenTransformerImpl : public torch::nn::Module {
 public:
  explicit TokenTransformerImpl(const TokenTransformerOptions& options);
  /// x [B, N, dim] → [B, N, in_dim]; the attention is plan group `group`, layer index `layer`.
  at::Tensor forward(const at::Tensor& x, const AttentionPlan& plan, const std::string& group,
                     int64_t layer, const ForwardContext& ctx);

  TokenTransformerOptions options;
  torch::nn::LayerNorm norm1{nullptr};
  TokenAttention attn{nullptr};
  torch::nn::LayerNorm norm2{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(TokenTransformer);

/// Options of a Token_performer layer.
struct TokenPerformerOptions {
  TokenPerformerOptions(int64_t dim, int64_t in_dim) : dim_(dim), in_dim_(in_dim) {}
  /// Input width (147 or token_dim·9).
  TORCH_ARG(int64_t, dim);
  /// Output (token) width: token_dim (upstream `emb`, one head).
  TORCH_ARG(int64_t, in_dim);
  /// m = int(in_dim · kernel_ratio) random features.
  TORCH_ARG(double, kernel_ratio) = 0.5;
  /// Seed of the construction-time draw of `w` (orthogonal rows × √m, as upstream). The
  /// checkpoint's `w` replaces it on load; it is never redrawn afterwards.
  TORCH_ARG(uint64_t, seed) = 0;
};

/// Token_performer: Performer (FAVOR+, positive random features) attention with the v-skip.
/// It is not softmax attention, so it never goes through the attention library or a plan group.
/// Keys: `w` [m, in_dim] (fixed random features, a parameter with requires_grad = false),
/// `kqv.{weight,bias}` [3·in_dim, dim]/[3·in_dim], `proj.*` [in_dim, in_dim]/[in_dim],
/// `norm1.*` [dim], `norm2.*` [in_dim], `mlp.0.*` and `mlp.2.*` [in_dim, in_dim]/[in_dim].
class TokenPerformerImpl : public torch::nn::Module {
 public:
  explicit TokenPerformerImpl(const TokenPerformerOptions& options);
  /// x [B, N, dim] → [B, N, in_dim]. With h = norm1(x) and k, q, v the slices of kqv(h) in
  /// that order (k first): y = φ(q)(Σ_j φ(k_j) v_jᵀ)ᵀ / (φ(q)·Σ_j φ(k_j) + 1e-8),
  /// x1 = v + proj(y), out = x1 + mlp(norm2(x1)). Computes in x's dtype (upstream casts to
  /// float32; its float64 goldens were made with that cast disabled).
  at::Tensor forward(const at::Tensor& x);
  /// φ(u) = exp(u wᵀ − ‖u‖²/2) / √m: u [B, N, in_dim] → [B, N, m].
  at::Tensor random_features(const at::Tensor& u) const;

  TokenPerformerOptions options;
  int64_t m = 0;
  at::Tensor w;  // [m, in_dim]
  torch::nn::Linear kqv{nullptr};
  torch::nn::Linear proj{nullptr};
  torch::nn::LayerNorm norm1{nullptr};
  torch::nn::LayerNorm norm2{nullptr};
  /// Linear, GELU, Linear (upstream's Sequential, so the keys are mlp.0.* and mlp.2.*).
  torch::nn::Sequential mlp{nullptr};
};
TORCH_MODULE(TokenPerformer);

}  // namespace kdeserve::models
