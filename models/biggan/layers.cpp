#include "models/biggan/layers.h"

#include <torch/torch.h>

#include <cmath>

#include "attention/attention.h"

namespace kdeserve::models {
namespace {

namespace F = torch::nn::functional;

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, bool bias) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, kernel).padding(kernel / 2).bias(bias));
}

at::Tensor upsample2(const at::Tensor& x) {
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .scale_factor(std::vector<double>{2.0, 2.0})
                               .mode(torch::kNearest));
}

}  // namespace

TruncationRows truncation_rows(double truncation, int64_t n_stats) {
  TORCH_CHECK(std::isfinite(truncation) && truncation > 0.0 && truncation <= 1.0,
              "BigGAN: truncation must be in (0, 1], got ", truncation);
  TORCH_CHECK(n_stats >= 2, "BigGAN: n_stats must be >= 2, got ", n_stats);
  // Upstream: step_size = 1.0 / (n_stats - 1); coef, idx = math.modf(truncation / step_size).
  // Both in double; a float32 truncation picks other rows (models.md D.9).
  const double step = 1.0 / static_cast<double>(n_stats - 1);
  double whole = 0.0;
  const double coef = std::modf(truncation / step, &whole);
  TruncationRows rows;
  rows.index = static_cast<int64_t>(whole);
  rows.coef = coef;
  TORCH_CHECK(rows.index >= 0 && rows.index < n_stats && (coef == 0.0 || rows.index + 1 < n_stats),
              "BigGAN: truncation ", truncation, " selects statistics row ", rows.index,
              " outside [0, ", n_stats, ")");
  return rows;
}

at::Tensor standing_statistic(const at::Tensor& rows, double truncation) {
  TORCH_CHECK(rows.dim() == 2, "BigGAN: standing statistics must be [n_stats, C], got ",
              rows.sizes());
  const TruncationRows r = truncation_rows(truncation, rows.size(0));
  if (r.coef == 0.0) return rows[r.index];
  // Reversed weights, reproduced as written upstream (models.md B.3, D.9).
  return rows[r.index] * r.coef + rows[r.index + 1] * (1.0 - r.coef);
}

BigGANBatchNormImpl::BigGANBatchNormImpl(const BigGANBatchNormOptions& options_)
    : options(options_) {
  TORCH_CHECK(options.channels() > 0 && options.n_stats() >= 2,
              "BigGANBatchNorm: bad channels/n_stats ", options.channels(), "/", options.n_stats());
  running_means =
      register_buffer("running_means", torch::zeros({options.n_stats(), options.channels()}));
  running_vars =
      register_buffer("running_vars", torch::ones({options.n_stats(), options.channels()}));
  if (options.conditional()) {
    scale = register_module(
        "scale",
        torch::nn::Linear(
            torch::nn::LinearOptions(options.condition_dim(), options.channels()).bias(false)));
    offset = register_module(
        "offset",
        torch::nn::Linear(
            torch::nn::LinearOptions(options.condition_dim(), options.channels()).bias(false)));
  } else {
    weight = register_parameter("weight", torch::ones({options.channels()}));
    bias = register_parameter("bias", torch::zeros({options.channels()}));
  }
}

at::Tensor BigGANBatchNormImpl::forward(const at::Tensor& x, double truncation,
                                        const at::Tensor& condition) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options.channels(), "BigGANBatchNorm: expected [B, ",
              options.channels(), ", H, W], got ", x.sizes());
  const at::Tensor mean = standing_statistic(running_means, truncation);
  const at::Tensor var = standing_statistic(running_vars, truncation);
  if (!options.conditional()) {
    return at::batch_norm(x, weight, bias, mean, var, /*training=*/false, /*momentum=*/0.0,
                          options.eps(), /*cudnn_enabled=*/false);
  }
  TORCH_CHECK(condition.defined() && condition.dim() == 2 && condition.size(0) == x.size(0) &&
                  condition.size(1) == options.condition_dim(),
              "BigGANBatchNorm: condition must be [", x.size(0), ", ", options.condition_dim(),
              "], got ", condition.defined() ? c10::str(condition.sizes()) : "undefined");
  const at::Tensor gain = (scale->forward(condition) + 1.0).unsqueeze(-1).unsqueeze(-1);
  const at::Tensor shift = offset->forward(condition).unsqueeze(-1).unsqueeze(-1);
  const at::Tensor m = mean.view({1, -1, 1, 1});
  const at::Tensor v = var.view({1, -1, 1, 1});
  // Upstream's (x − mean) / sqrt(var + eps) · gain + shift folded per (entry, channel) into
  // x · a + b: one pass over the activations instead of four (they reach 512² × 128 channels
  // in BigGAN-deep-512), in x's memory format; the goldens hold to rounding.
  const at::Tensor a = gain / at::sqrt(v + options.eps());  // [B, C, 1, 1]
  const at::Tensor b = shift - m * a;
  at::Tensor out = at::empty_like(x);
  return at::addcmul_out(out, b, x, a);
}

GenBlockImpl::GenBlockImpl(const GenBlockOptions& options_) : options(options_) {
  const int64_t in = options.in_channels(), out = options.out_channels();
  TORCH_CHECK(in > 0 && out > 0 && in % 4 == 0,
              "GenBlock: in_channels must be a positive multiple of 4 and out_channels positive, "
              "got ",
              in, " -> ", out);
  TORCH_CHECK(in == out || in / 2 == out,
              "GenBlock: when in != out the skip keeps the first in/2 channels, so out must be "
              "in/2; got ",
              in, " -> ", out);
  const int64_t mid = in / 4;
  auto bn = [&](int64_t c) {
    return BigGANBatchNorm(BigGANBatchNormOptions(c)
                               .condition_dim(options.condition_dim())
                               .n_stats(options.n_stats())
                               .eps(options.eps()));
  };
  // Registration order = upstream state_dict order.
  bn_0 = register_module("bn_0", bn(in));
  conv_0 = register_module("conv_0", conv(in, mid, 1, true));
  bn_1 = register_module("bn_1", bn(mid));
  conv_1 = register_module("conv_1", conv(mid, mid, 3, true));
  bn_2 = register_module("bn_2", bn(mid));
  conv_2 = register_module("conv_2", conv(mid, mid, 3, true));
  bn_3 = register_module("bn_3", bn(mid));
  conv_3 = register_module("conv_3", conv(mid, out, 1, true));
}

at::Tensor GenBlockImpl::forward(const at::Tensor& x, const at::Tensor& condition,
                                 double truncation) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options.in_channels(), "GenBlock: expected [B, ",
              options.in_channels(), ", H, W], got ", x.sizes());
  // bn_* return fresh tensors: ReLU in place saves a pass over each.
  at::Tensor h = conv_0(bn_0(x, truncation, condition).relu_());
  h = bn_1(h, truncation, condition).relu_();
  if (options.up()) h = upsample2(h);
  h = conv_1(h);
  h = conv_2(bn_2(h, truncation, condition).relu_());
  h = conv_3(bn_3(h, truncation, condition).relu_());
  // Skip: drop channels first, then upsample (models.md D.12).
  at::Tensor skip = x;
  if (options.in_channels() != options.out_channels()) {
    skip = skip.narrow(1, 0, options.in_channels() / 2);
  }
  if (options.up()) skip = upsample2(skip);
  return h + skip;
}

SelfAttnImpl::SelfAttnImpl(int64_t channels_) : channels(channels_) {
  TORCH_CHECK(channels >= 8 && channels % 8 == 0,
              "SelfAttn: channels must be a positive multiple of 8, got ", channels);
  snconv1x1_theta = register_module("snconv1x1_theta", conv(channels, channels / 8, 1, false));
  snconv1x1_phi = register_module("snconv1x1_phi", conv(channels, channels / 8, 1, false));
  snconv1x1_g = register_module("snconv1x1_g", conv(channels, channels / 2, 1, false));
  snconv1x1_o_conv = register_module("snconv1x1_o_conv", conv(channels / 2, channels, 1, false));
  gamma = register_parameter("gamma", torch::zeros({1}));
}

at::Tensor SelfAttnImpl::forward(const at::Tensor& x, const AttentionPlan& plan,
                                 const ForwardContext& ctx) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == channels && x.size(2) % 2 == 0 && x.size(3) % 2 == 0,
              "SelfAttn: expected [B, ", channels, ", H, W] with even H and W, got ", x.sizes());
  const int64_t b = x.size(0), h = x.size(2), w = x.size(3);
  // q [B, 1, h·w, C/8] (row-major positions), k [B, 1, h·w/4, C/8], v [B, 1, h·w/4, C/2].
  // Positions row-major, channels last: a free view when x is channels-last (BigGANGenerator).
  const auto positions = [b](const at::Tensor& t) {
    return t.permute({0, 2, 3, 1}).reshape({b, 1, t.size(2) * t.size(3), t.size(1)});
  };
  at::Tensor q = positions(snconv1x1_theta(x));
  at::Tensor k = positions(at::max_pool2d(snconv1x1_phi(x), {2, 2}, {2, 2}));
  at::Tensor v = positions(at::max_pool2d(snconv1x1_g(x), {2, 2}, {2, 2}));

  // SAGAN softmax(θᵀφ) has no temperature: scale 1.0 whatever the plan says (models.md D.11).
  AttentionPlan local;
  attention::AttentionOptions options = plan.at(kBigGANAttentionGroup);
  options.scale(1.0);
  local.groups.emplace(kBigGANAttentionGroup, options);
  // The reference casts KDEformer to float64 because its exp has no max-shift; the library's
  // shares one shift per query between both parts, so the module dtype is safe (and faster).
  at::Tensor o = run_attention(q, k, v, local, kBigGANAttentionGroup, /*layer=*/0, ctx);
  // [B, 1, h·w, C/2] → [B, C/2, h, w] (channels-last memory)
  o = o.reshape({b, h, w, channels / 2}).permute({0, 3, 1, 2});
  return x + gamma * snconv1x1_o_conv(o);
}

}  // namespace kdeserve::models
