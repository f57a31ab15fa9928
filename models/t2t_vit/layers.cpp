#include "models/t2t_vit/layers.h"

#include <torch/torch.h>

#include <cmath>
#include <utility>

#include "attention/attention.h"

namespace kdeserve::models {

at::Tensor run_scaled_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                double scale, const AttentionPlan& plan, const std::string& group,
                                int64_t layer, const ForwardContext& ctx) {
  attention::AttentionOptions options = plan.at(group);
  options.scale(scale);
  ctx.record(group, layer, q, k, v, options);
  attention::AttentionReport report;
  at::Tensor out = attention::attention(q, k, v, options, ctx.call_for_layer(layer, &report));
  if (ctx.reports != nullptr) ctx.reports->push_back(std::move(report));
  return out;
}

MlpImpl::MlpImpl(const MlpOptions& options_) : options(options_) {
  fc1 = register_module("fc1", torch::nn::Linear(options.in_features(), options.hidden_features()));
  fc2 =
      register_module("fc2", torch::nn::Linear(options.hidden_features(), options.out_features()));
}

at::Tensor MlpImpl::forward(const at::Tensor& x) {
  // Exact (erf) GELU, as nn.GELU() (models.md D.6).
  return fc2->forward(torch::gelu(fc1->forward(x)));
}

BlockAttentionImpl::BlockAttentionImpl(const BlockOptions& options_) : options(options_) {
  TORCH_CHECK(options.num_heads() >= 1 && options.dim() % options.num_heads() == 0,
              "T2T-ViT block: dim ", options.dim(), " is not a multiple of num_heads ",
              options.num_heads());
  qkv = register_module(
      "qkv",
      torch::nn::Linear(
          torch::nn::LinearOptions(options.dim(), 3 * options.dim()).bias(options.qkv_bias())));
  proj = register_module("proj", torch::nn::Linear(options.dim(), options.dim()));
}

double BlockAttentionImpl::scale() const {
  if (options.qk_scale()) return *options.qk_scale();
  return 1.0 / std::sqrt(static_cast<double>(options.dim() / options.num_heads()));
}

at::Tensor BlockAttentionImpl::forward(const at::Tensor& x, const AttentionPlan& plan,
                                       const std::string& group, int64_t layer,
                                       const ForwardContext& ctx) {
  const int64_t batch = x.size(0), n = x.size(1), dim = x.size(2);
  const int64_t heads = options.num_heads(), head_dim = dim / heads;
  // [B, N, 3D] → [3, B, H, N, head_dim]
  const at::Tensor parts =
      qkv->forward(x).reshape({batch, n, 3, heads, head_dim}).permute({2, 0, 3, 1, 4});
  const at::Tensor out =
      run_scaled_attention(parts[0], parts[1], parts[2], scale(), plan, group, layer, ctx);
  return proj->forward(out.transpose(1, 2).reshape({batch, n, dim}));
}

BlockImpl::BlockImpl(const BlockOptions& options_) : options(options_) {
  const auto ln = torch::nn::LayerNormOptions({options.dim()}).eps(kT2TLayerNormEps);
  norm1 = register_module("norm1", torch::nn::LayerNorm(ln));
  attn = register_module("attn", BlockAttention(options));
  norm2 = register_module("norm2", torch::nn::LayerNorm(ln));
  const auto hidden =
      static_cast<int64_t>(static_cast<double>(options.dim()) * options.mlp_ratio());
  mlp = register_module("mlp", Mlp(MlpOptions(options.dim(), hidden, options.dim())));
}

at::Tensor BlockImpl::forward(const at::Tensor& x, const AttentionPlan& plan,
                              const std::string& group, int64_t layer, const ForwardContext& ctx) {
  at::Tensor y = x + attn->forward(norm1->forward(x), plan, group, layer, ctx);
  return y + mlp->forward(norm2->forward(y));
}

}  // namespace kdeserve::models
