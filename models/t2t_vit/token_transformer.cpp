#include "models/t2t_vit/token_transformer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>

namespace kdeserve::models {
namespace {

// Epsilon added to the performer denominator (upstream `self.epsilon`).
constexpr double kPerformerEpsilon = 1e-8;

// A [rows, cols] matrix with orthonormal rows (or columns, when rows > cols), as
// torch.nn.init.orthogonal_ draws it, but from a seeded generator.
at::Tensor seeded_orthogonal(int64_t rows, int64_t cols, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor a = at::randn({rows, cols}, gen, at::TensorOptions().dtype(at::kDouble));
  const bool wide = rows < cols;
  if (wide) a = a.t();
  auto qr = at::linalg_qr(a);
  at::Tensor q = std::get<0>(qr) * std::get<1>(qr).diagonal().sign();
  return (wide ? q.t() : q).contiguous().to(at::kFloat);
}

}  // namespace

TokenAttentionImpl::TokenAttentionImpl(const TokenTransformerOptions& options_)
    : options(options_) {
  qkv = register_module(
      "qkv",
      torch::nn::Linear(torch::nn::LinearOptions(options.dim(), 3 * options.in_dim()).bias(false)));
  proj = register_module("proj", torch::nn::Linear(options.in_dim(), options.in_dim()));
}

double TokenAttentionImpl::scale() const {
  return 1.0 / std::sqrt(static_cast<double>(options.dim()));
}

at::Tensor TokenAttentionImpl::forward(const at::Tensor& h, const AttentionPlan& plan,
                                       const std::string& group, int64_t layer,
                                       const ForwardContext& ctx) {
  const int64_t batch = h.size(0), n = h.size(1), e = options.in_dim();
  // [B, N, 3e] → [3, B, 1, N, e]
  const at::Tensor parts = qkv->forward(h).reshape({batch, n, 3, 1, e}).permute({2, 0, 3, 1, 4});
  const at::Tensor v = parts[2];  // [B, 1, N, e]
  const at::Tensor out = run_scaled_attention(parts[0], parts[1], v, scale(), plan, group, layer,
                                              ctx);  // [B, 1, N, e]
  // The residual is v, not the (wider) input: models.md D.3.
  return v.squeeze(1) + proj->forward(out.squeeze(1));
}

TokenTransformerImpl::TokenTransformerImpl(const TokenTransformerOptions& options_)
    : options(options_) {
  norm1 = register_module(
      "norm1",
      torch::nn::LayerNorm(torch::nn::LayerNormOptions({options.dim()}).eps(kT2TLayerNormEps)));
  attn = register_module("attn", TokenAttention(options));
  norm2 = register_module(
      "norm2",
      torch::nn::LayerNorm(torch::nn::LayerNormOptions({options.in_dim()}).eps(kT2TLayerNormEps)));
  const auto hidden =
      static_cast<int64_t>(static_cast<double>(options.in_dim()) * options.mlp_ratio());
  mlp = register_module("mlp", Mlp(MlpOptions(options.in_dim(), hidden, options.in_dim())));
}

at::Tensor TokenTransformerImpl::forward(const at::Tensor& x, const AttentionPlan& plan,
                                         const std::string& group, int64_t layer,
                                         const ForwardContext& ctx) {
  const at::Tensor x1 = attn->forward(norm1->forward(x), plan, group, layer, ctx);
  return x1 + mlp->forward(norm2->forward(x1));
}

TokenPerformerImpl::TokenPerformerImpl(const TokenPerformerOptions& options_) : options(options_) {
  const int64_t e = options.in_dim();
  m = static_cast<int64_t>(static_cast<double>(e) * options.kernel_ratio());
  TORCH_CHECK(m >= 1, "Token_performer: in_dim ", e, " × kernel_ratio ", options.kernel_ratio(),
              " gives no random features");
  // Upstream registers w as a Parameter with requires_grad=False: it is in the state_dict and in
  // the parameter count (models.md A.1).
  w = register_parameter("w", seeded_orthogonal(m, e, options.seed()) * std::sqrt(double(m)),
                         /*requires_grad=*/false);
  kqv = register_module("kqv", torch::nn::Linear(options.dim(), 3 * e));
  proj = register_module("proj", torch::nn::Linear(e, e));
  norm1 = register_module(
      "norm1",
      torch::nn::LayerNorm(torch::nn::LayerNormOptions({options.dim()}).eps(kT2TLayerNormEps)));
  norm2 = register_module(
      "norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({e}).eps(kT2TLayerNormEps)));
  mlp = register_module("mlp", torch::nn::Sequential(torch::nn::Linear(e, e), torch::nn::GELU(),
                                                     torch::nn::Linear(e, e)));
}

at::Tensor TokenPerformerImpl::random_features(const at::Tensor& u) const {
  const at::Tensor half_norm = u.mul(u).sum(-1, /*keepdim=*/true).div(2.0);  // [B, N, 1]
  const at::Tensor wtx = at::matmul(u, w.t());                               // [B, N, m]
  return at::exp(wtx - half_norm).div(std::sqrt(static_cast<double>(m)));
}

at::Tensor TokenPerformerImpl::forward(const at::Tensor& x) {
  const int64_t e = options.in_dim();
  const at::Tensor kqv_out = kqv->forward(norm1->forward(x));  // [B, N, 3e]
  // Upstream splits in the order k, q, v (models.md D.4).
  const at::Tensor k = kqv_out.narrow(-1, 0, e);
  const at::Tensor q = kqv_out.narrow(-1, e, e);
  const at::Tensor v = kqv_out.narrow(-1, 2 * e, e);
  const at::Tensor kp = random_features(k);                          // [B, N, m]
  const at::Tensor qp = random_features(q);                          // [B, N, m]
  const at::Tensor denom = at::matmul(qp, kp.sum(1).unsqueeze(-1));  // [B, N, 1]
  const at::Tensor kptv = at::matmul(v.transpose(1, 2), kp);         // [B, e, m]
  const at::Tensor y = at::matmul(qp, kptv.transpose(1, 2)).div(denom + kPerformerEpsilon);
  const at::Tensor x1 = v + proj->forward(y);
  return x1 + mlp->forward(norm2->forward(x1));
}

}  // namespace kdeserve::models
