#pragma once
/// T2T-ViT (Yuan et al., "Tokens-to-Token ViT", ICCV 2021), a port of upstream
/// yitu-opensource/T2T-ViT @ 0f63dc9 (models.md A) whose softmax attentions run through the
/// attention library, so each layer group can run exact attention or KDEformer.
///
/// Attention layer groups and indices (AttentionPlan / ForwardContext::call_for_layer):
///   "t2t_layer1" (index 0): tokens_to_token.attention1, 3136 tokens at 224 px;
///   "t2t_layer2" (index 1): tokens_to_token.attention2, 784 tokens;
///   "blocks" (index 2 + i): blocks.i, 197 tokens.
/// Performer token layers (tokens_type performer) are random-feature attention, not softmax
/// attention: they ignore "t2t_layer1"/"t2t_layer2" and add no report.

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "models/attention_plan.h"
#include "models/t2t_vit/layers.h"
#include "models/t2t_vit/options.h"
#include "models/t2t_vit/token_transformer.h"

namespace kdeserve::models {

/// Plan group names of T2T-ViT.
inline constexpr const char* kT2TLayer1Group = "t2t_layer1";
inline constexpr const char* kT2TLayer2Group = "t2t_layer2";
inline constexpr const char* kT2TBlocksGroup = "blocks";

/// The plan of `method` for T2T-ViT: `method` in t2t_layer1 (3136 tokens, scale 1/√147) and
/// t2t_layer2 (784 tokens, scale 1/24) with the papers' settings per layer (KDEformer's
/// residual: the tuned far field), blocks exact
/// (kExact: exact everywhere). Settings (layer 1 / layer 2):
///   kdeformer      b = 32, r = 7, the control-variate far field with no samples, clamped (the
///                  budget chooser's pick, bench/RESULTS.md; the paper's demo_imagenet.py ran
///                  m = 98 / 24 sampled keys: Residual::kSampled with those m);
///   performer      m = 49 / 12 orthogonal stabilised features (peers.md §6);
///   reformer       bucket 49 / 12, 2 hashes, real keys (§7.4; shared-QK is a labelled mode);
///   scatterbrain   band w = 49 / 12, features 48 / 6 (§5.5);
///   hyperattention b = 32, s = 98 / 24, r = 7, min_seq_len 0, masked padding: never run on
///                  this protocol (§3.7), so KDEformer's b and m;
///   wildcat        r = 224 / 196 in 224 / 196 bins, clamped (§2.4);
///   thinformer     g = 2 / 4 with the strided pre-thinning (§4.5).
AttentionPlan t2t_vit_plan(attention::Method method);

/// The default plan for T2T-ViT: t2t_vit_plan(kKdeformer).
AttentionPlan t2t_vit_default_plan();

/// The KDEformer paper's plan for T2T-ViT (demo_imagenet.py, models.md A.4): b = 32, m = 98 /
/// 24 sampled keys (Residual::kSampled), r = 7, 32 power iterations; blocks exact.
AttentionPlan t2t_vit_paper_plan();

/// Intermediate activations of one forward pass (for parity tests and diagnostics).
struct T2TIntermediates {
  at::Tensor after_attention1;  ///< [B, (img/4)², token_dim]: attention1 output.
  at::Tensor after_attention2;  ///< [B, (img/8)², token_dim]: attention2 output.
  at::Tensor features;          ///< [B, (img/16)², D]: after `project`, before cls/pos_embed.
  at::Tensor prelogits;         ///< [B, D]: final `norm` at the cls token.
};

/// The sinusoid position table of upstream get_sinusoid_encoding, computed in float64 and
/// rounded to float32: [1, n_position, dim]. The checkpoint's copy is what the model uses.
at::Tensor sinusoid_position_table(int64_t n_position, int64_t dim);

/// Tokens-to-token module: soft_split0 (Unfold 7/4/2), attention1, re-structurisation,
/// soft_split1 (3/2/1), attention2, re-structurisation, soft_split2 (3/2/1), project.
/// Keys `attention1.*`, `attention2.*` (TokenTransformer or TokenPerformer) and `project.*`
/// [D, token_dim·9]/[D].
class T2TModuleImpl : public torch::nn::Module {
 public:
  explicit T2TModuleImpl(const T2TViTOptions& options);
  /// x [B, in_chans, img, img] → tokens [B, (img/16)², D]; fills `out`'s after_attention*
  /// when non-null.
  at::Tensor forward(const at::Tensor& x, const AttentionPlan& plan, const ForwardContext& ctx,
                     T2TIntermediates* out = nullptr);
  /// (img/16)²: tokens after soft_split2 (196 at 224 px, 576 at 384 px).
  int64_t num_patches() const;

  T2TViTOptions options;
  TokenTransformer attention1_transformer{nullptr};  ///< set when tokens_type is transformer
  TokenTransformer attention2_transformer{nullptr};
  TokenPerformer attention1_performer{nullptr};  ///< set when tokens_type is performer
  TokenPerformer attention2_performer{nullptr};
  torch::nn::Linear project{nullptr};
};
TORCH_MODULE(T2TModule);

/// T2T-ViT classifier. Parameter names equal upstream's state_dict keys: `cls_token` [1,1,D],
/// `pos_embed` [1, N+1, D] (a parameter with requires_grad = false, as upstream),
/// `tokens_to_token.*`, `blocks.i.*`, `norm.*`, `head.*` (absent when num_classes is 0).
/// Works in float32 and float64 (`->to(torch::kDouble)`).
class T2TViTImpl : public torch::nn::Module {
 public:
  explicit T2TViTImpl(const T2TViTOptions& options);

  /// x [B, in_chans, img, img] (normalised RGB) → logits [B, num_classes] (the prelogits
  /// [B, D] when num_classes is 0). `plan` must hold every group the model calls
  /// ("blocks", and "t2t_layer1"/"t2t_layer2" for transformer tokens).
  at::Tensor forward(const at::Tensor& x, const AttentionPlan& plan, const ForwardContext& ctx);

  /// x [B, in_chans, img, img] → prelogits [B, D] (final norm at the cls token); fills every
  /// field of `out` when non-null.
  at::Tensor forward_features(const at::Tensor& x, const AttentionPlan& plan,
                              const ForwardContext& ctx, T2TIntermediates* out = nullptr);

  /// t2t_vit_default_plan().
  static AttentionPlan default_plan();

  T2TViTOptions options;
  T2TModule tokens_to_token{nullptr};
  at::Tensor cls_token;                        // [1, 1, D]
  at::Tensor pos_embed;                        // [1, N + 1, D]
  torch::nn::ModuleList blocks_list{nullptr};  ///< registered as "blocks"
  std::vector<Block> blocks;
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear head{nullptr};  ///< null when num_classes is 0
};
TORCH_MODULE(T2TViT);

}  // namespace kdeserve::models
