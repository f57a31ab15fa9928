#pragma once
/// The BigGAN-deep generator (HF pytorch-pretrained-BigGAN `BigGAN`, models.md B), with its
/// self-attention running the plan's exact or KDEformer attention.
///
/// Module and parameter names follow upstream's state_dict, with every spectral-norm triple
/// (weight_orig, weight_u, weight_v) replaced by the folded `weight` and conv_to_rgb reduced to
/// its 3 used output channels. Load weights with load_biggan_weights() (models/biggan/weights.h).
/// Inference only: forward() runs under NoGradGuard and never uses batch statistics.

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

#include "models/attention_plan.h"
#include "models/biggan/layers.h"
#include "models/biggan/options.h"

namespace kdeserve::models {

/// Intermediate activations a forward pass can hand back (for parity tests and debugging).
struct BigGANTrace {
  /// Input of generator.layers.0: gen_z's output viewed [B, 4, 4, 16·ch] (NHWC) and permuted to
  /// NCHW. [B, 16·ch, 4, 4]
  at::Tensor after_gen_z;
  /// Input and output (x + γ·o) of the SelfAttn. [B, C, 64, 64] for the released configs.
  at::Tensor attn_in, attn_out;
};

/// upstream `Generator`: gen_z, the ModuleList `layers` (GenBlocks with the SelfAttn at
/// attention_layer_position), the final plain BN `bn` and `conv_to_rgb`.
class BigGANGeneratorImpl : public torch::nn::Module {
 public:
  explicit BigGANGeneratorImpl(const BigGANOptions& options);

  /// condition [B, 2·z_dim] → image [B, 3, R, R] in (−1, 1).
  at::Tensor forward(const at::Tensor& condition, double truncation, const AttentionPlan& plan,
                     const ForwardContext& ctx, BigGANTrace* trace = nullptr);

  BigGANOptions options;
  /// SN-Linear 2·z_dim → 16·16·ch with bias.
  torch::nn::Linear gen_z{nullptr};
  /// Registered as upstream's `layers`: blocks_ and attention_ in forward order.
  torch::nn::ModuleList layers{nullptr};
  BigGANBatchNorm bn{nullptr};
  /// SN-Conv 3×3 ch → 3 (upstream ch → ch, of which only channels 0..2 are ever used).
  torch::nn::Conv2d conv_to_rgb{nullptr};

 private:
  std::vector<GenBlock> blocks_;
  SelfAttn attention_{nullptr};
};
TORCH_MODULE(BigGANGenerator);

/// upstream `BigGAN`: class embedding (Linear num_classes → z_dim, no bias, no spectral norm)
/// and the generator conditioned on concat(z, embedding).
class BigGANImpl : public torch::nn::Module {
 public:
  explicit BigGANImpl(const BigGANOptions& options);

  /// z [B, z_dim] (e.g. truncated_noise_sample(), already scaled by the truncation),
  /// class_vector [B, num_classes] (one-hot or class weights), truncation t ∈ (0, 1] — a double
  /// end to end, since it selects the BN statistics rows (models.md D.9) →
  /// image [B, 3, R, R] in (−1, 1), in the module's dtype (float32 or float64; inputs are cast).
  /// `plan` must have the "self_attention" group; ctx seeds its random draws (layer index 0).
  /// When `trace` is set, the intermediates are stored in it.
  at::Tensor forward(const at::Tensor& z, const at::Tensor& class_vector, double truncation,
                     const AttentionPlan& plan, const ForwardContext& ctx,
                     BigGANTrace* trace = nullptr);

  /// The default attention plan: biggan_plan(kKdeformer), "self_attention" = KDEformer with
  /// bucket_size 64, the control-variate far field and no samples, clamped, 7 projections, 20
  /// power iterations, scale 1.0 (the paper's models.md B.6 sampled m = 128 keys).
  static AttentionPlan default_plan();

  BigGANOptions options;
  torch::nn::Linear embeddings{nullptr};
  BigGANGenerator generator{nullptr};
};
TORCH_MODULE(BigGAN);

/// Same as BigGANImpl::default_plan().
AttentionPlan biggan_default_plan();

/// The KDEformer paper's plan for BigGAN-deep (models.md B.6): "self_attention" = b = 64, m = 128
/// sampled keys (Residual::kSampled), r = 7, 20 power iterations, scale 1.
AttentionPlan biggan_paper_plan();

/// The plan of `method` for BigGAN-deep: "self_attention" (4096 × 1024 keys, Dv = 256,
/// scale 1) runs `method` with the papers' settings (KDEformer's residual: the tuned far field;
/// kExact: exact attention):
///   kdeformer      b = 64, r = 7, far field, no samples, clamped (the paper: m = 128 sampled);
///   performer      m = 128 iid features, stabilised (peers.md §6);
///   reformer       bucket 64, 8 hashes, real keys (§7.4);
///   scatterbrain   band w = 32, 128 features (§5.5);
///   hyperattention b = 64, s = 128, r = 7, min_seq_len 0, masked padding: never run on this
///                  protocol (§3.7), so KDEformer's b and m;
///   wildcat        r = 96 in 8 bins, clamped (§2.4);
///   thinformer     g = 2, strided pre-thinning (a no-op at 1024 keys) (§4.5).
AttentionPlan biggan_plan(attention::Method method);

}  // namespace kdeserve::models
