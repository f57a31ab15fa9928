#pragma once
/// Options of T2T-ViT (Yuan et al. 2021, upstream yitu-opensource/T2T-ViT @ 0f63dc9) and the
/// factory of the released variants (models.md A.1).

#include <torch/arg.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kdeserve::models {

/// Which layers the tokens-to-token module uses (upstream `tokens_type`).
enum class TokensType {
  kTransformer,  ///< Token_transformer: exact/KDEformer softmax attention (T2T-ViT_t-*).
  kPerformer,    ///< Token_performer: random-feature (Performer) attention (T2T-ViT-*).
};

/// Returns "transformer" / "performer".
std::string to_string(TokensType type);
/// Parses "transformer" / "performer"; throws c10::Error naming the accepted values otherwise.
TokensType tokens_type_from_string(const std::string& name);

/// Constructor arguments of T2T-ViT, with upstream's names and defaults.
struct T2TViTOptions {
  /// Square input side in pixels; the token grids are img/4, img/8 and img/16 per side.
  TORCH_ARG(int64_t, img_size) = 224;
  TORCH_ARG(TokensType, tokens_type) = TokensType::kPerformer;
  TORCH_ARG(int64_t, in_chans) = 3;
  /// Classes of `head`; 0 means no head (forward() then returns the prelogits).
  TORCH_ARG(int64_t, num_classes) = 1000;
  /// D: width of the ViT blocks.
  TORCH_ARG(int64_t, embed_dim) = 768;
  TORCH_ARG(int64_t, depth) = 12;
  TORCH_ARG(int64_t, num_heads) = 12;
  /// MLP hidden width of a block = int(embed_dim · mlp_ratio).
  TORCH_ARG(double, mlp_ratio) = 4.0;
  /// Bias on the blocks' qkv projection (false in every released variant).
  TORCH_ARG(bool, qkv_bias) = false;
  /// Softmax scale of the blocks; unset means head_dim^-0.5 (what every released checkpoint
  /// uses; upstream's `pretrained=True` path sets embed_dim^-0.5, models.md D.2).
  TORCH_ARG(std::optional<double>, qk_scale) = std::nullopt;
  /// Width of the T2T tokens (the token layers' output).
  TORCH_ARG(int64_t, token_dim) = 64;
  /// Performer random features per token layer: m = int(token_dim · kernel_ratio).
  TORCH_ARG(double, kernel_ratio) = 0.5;
  /// Seed of the performer random-feature matrices `w` drawn at construction (they are
  /// checkpoint parameters and are overwritten by load_state_dict; never redrawn).
  TORCH_ARG(uint64_t, init_seed) = 0;
};

/// The released variants: t2t_vit_7, t2t_vit_10, t2t_vit_12, t2t_vit_14, t2t_vit_19, t2t_vit_24
/// (performer tokens), t2t_vit_t_14, t2t_vit_t_19, t2t_vit_t_24 (transformer tokens) and
/// t2t_vit_14_384 (t2t_vit_14 at img_size 384).
std::vector<std::string> t2t_vit_variants();

/// The options of a released variant (1000 classes, token_dim 64); throws c10::Error naming the
/// known variants for any other name.
T2TViTOptions t2t_vit_options(const std::string& variant);

}  // namespace kdeserve::models
