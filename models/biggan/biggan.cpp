#include "models/biggan/biggan.h"

#include <torch/torch.h>

#include <charconv>
#include <cmath>
#include <sstream>

namespace kdeserve::models {
namespace {

std::vector<BigGANLayerSpec> layers_128() {
  return {{false, 16, 16}, {true, 16, 16}, {false, 16, 16}, {true, 16, 8}, {false, 8, 8},
          {true, 8, 4},    {false, 4, 4},  {true, 4, 2},    {false, 2, 2}, {true, 2, 1}};
}

std::vector<BigGANLayerSpec> layers_256() {
  return {{false, 16, 16}, {true, 16, 16}, {false, 16, 16}, {true, 16, 8},
          {false, 8, 8},   {true, 8, 8},   {false, 8, 8},   {true, 8, 4},
          {false, 4, 4},   {true, 4, 2},   {false, 2, 2},   {true, 2, 1}};
}

// Python's repr() of a float (shortest round trip; scientific below 1e-4 or from 1e16).
std::string python_float(double value) {
  char buffer[64];
  const double magnitude = std::fabs(value);
  const bool fixed = magnitude == 0.0 || (magnitude >= 1e-4 && magnitude < 1e16);
  const auto result =
      std::to_chars(buffer, buffer + sizeof(buffer), value,
                    fixed ? std::chars_format::fixed : std::chars_format::scientific);
  std::string text(buffer, result.ptr);
  if (fixed && text.find('.') == std::string::npos) text += ".0";
  return text;
}

}  // namespace

std::vector<std::string> biggan_model_names() {
  return {"biggan-deep-128", "biggan-deep-256", "biggan-deep-512"};
}

BigGANOptions biggan_options(const std::string& name) {
  BigGANOptions options;
  if (name == "biggan-deep-128") {
    options.layers(layers_128()).output_dim(128);
  } else if (name == "biggan-deep-256") {
    options.layers(layers_256()).output_dim(256);
  } else if (name == "biggan-deep-512") {
    std::vector<BigGANLayerSpec> layers = layers_256();
    layers.push_back({false, 1, 1});
    layers.push_back({true, 1, 1});
    options.layers(layers).output_dim(512);
  } else {
    TORCH_CHECK(false, "unknown BigGAN model '", name,
                "' (known: ", c10::Join(", ", biggan_model_names()), ")");
  }
  return options;
}

void validate(const BigGANOptions& o) {
  TORCH_CHECK(!o.layers().empty(), "BigGAN options: `layers` is empty");
  TORCH_CHECK(o.channel_width() > 0 && o.z_dim() > 0 && o.num_classes() > 0,
              "BigGAN options: channel_width, z_dim and num_classes must be positive, got ",
              o.channel_width(), ", ", o.z_dim(), ", ", o.num_classes());
  TORCH_CHECK(o.n_stats() >= 2, "BigGAN options: n_stats must be >= 2, got ", o.n_stats());
  TORCH_CHECK(std::isfinite(o.eps()) && o.eps() > 0, "BigGAN options: eps must be positive, got ",
              o.eps());
  const auto n = static_cast<int64_t>(o.layers().size());
  TORCH_CHECK(o.attention_layer_position() >= 0 && o.attention_layer_position() < n,
              "BigGAN options: attention_layer_position ", o.attention_layer_position(),
              " must index `layers` (size ", n, ")");
  for (int64_t i = 0; i < n; ++i) {
    const BigGANLayerSpec& l = o.layers()[static_cast<size_t>(i)];
    const int64_t in = l.in_mult * o.channel_width(), out = l.out_mult * o.channel_width();
    TORCH_CHECK(l.in_mult > 0 && l.out_mult > 0 && in % 4 == 0 && (in == out || in / 2 == out),
                "BigGAN options: layer ", i, " (", in, " -> ", out,
                " channels) needs in a multiple of 4 and out = in or in/2");
    if (i > 0) {
      TORCH_CHECK(o.layers()[static_cast<size_t>(i - 1)].out_mult == l.in_mult,
                  "BigGAN options: layer ", i, " input multiplier ", l.in_mult,
                  " differs from the previous output ",
                  o.layers()[static_cast<size_t>(i - 1)].out_mult);
    }
  }
  TORCH_CHECK(o.layers().front().in_mult == 16,
              "BigGAN options: gen_z produces 16·ch channels, "
              "so layers[0] must have in multiplier 16, got ",
              o.layers().front().in_mult);
  TORCH_CHECK(attention_channels(o) % 8 == 0, "BigGAN options: attention width ",
              attention_channels(o), " must be a multiple of 8");
}

int64_t output_resolution(const BigGANOptions& options) {
  int64_t r = 4;
  for (const auto& l : options.layers()) r *= l.up ? 2 : 1;
  return r;
}

int64_t attention_resolution(const BigGANOptions& options) {
  int64_t r = 4;
  for (int64_t i = 0; i < options.attention_layer_position(); ++i) {
    r *= options.layers().at(static_cast<size_t>(i)).up ? 2 : 1;
  }
  return r;
}

int64_t attention_channels(const BigGANOptions& options) {
  return options.channel_width() *
         options.layers().at(static_cast<size_t>(options.attention_layer_position())).in_mult;
}

std::string config_json(const BigGANOptions& o) {
  std::ostringstream out;
  out << "{\"attention_layer_position\": " << o.attention_layer_position()
      << ", \"channel_width\": " << o.channel_width()
      << ", \"class_embed_dim\": " << o.class_embed_dim() << ", \"eps\": " << python_float(o.eps())
      << ", \"layers\": [";
  for (size_t i = 0; i < o.layers().size(); ++i) {
    const auto& l = o.layers()[i];
    out << (i == 0 ? "" : ", ") << "[" << (l.up ? "true" : "false") << ", " << l.in_mult << ", "
        << l.out_mult << "]";
  }
  out << "], \"n_stats\": " << o.n_stats() << ", \"num_classes\": " << o.num_classes()
      << ", \"output_dim\": " << o.output_dim() << ", \"z_dim\": " << o.z_dim() << "}";
  return out.str();
}

BigGANGeneratorImpl::BigGANGeneratorImpl(const BigGANOptions& options_) : options(options_) {
  validate(options);
  const int64_t ch = options.channel_width();
  const int64_t cond = 2 * options.z_dim();
  gen_z = register_module("gen_z", torch::nn::Linear(cond, 4 * 4 * 16 * ch));
  layers = register_module("layers", torch::nn::ModuleList());
  for (size_t i = 0; i < options.layers().size(); ++i) {
    const BigGANLayerSpec& l = options.layers()[i];
    if (static_cast<int64_t>(i) == options.attention_layer_position()) {
      attention_ = SelfAttn(ch * l.in_mult);
      layers->push_back(attention_);
    }
    blocks_.emplace_back(GenBlockOptions(ch * l.in_mult, ch * l.out_mult)
                             .up(l.up)
                             .condition_dim(cond)
                             .n_stats(options.n_stats())
                             .eps(options.eps()));
    layers->push_back(blocks_.back());
  }
  bn = register_module("bn", BigGANBatchNorm(BigGANBatchNormOptions(ch)
                                                 .conditional(false)
                                                 .n_stats(options.n_stats())
                                                 .eps(options.eps())));
  conv_to_rgb = register_module("conv_to_rgb",
                                torch::nn::Conv2d(torch::nn::Conv2dOptions(ch, 3, 3).padding(1)));
}

at::Tensor BigGANGeneratorImpl::forward(const at::Tensor& condition, double truncation,
                                        const AttentionPlan& plan, const ForwardContext& ctx,
                                        BigGANTrace* trace) {
  TORCH_CHECK(condition.dim() == 2 && condition.size(1) == 2 * options.z_dim(),
              "BigGAN generator: condition must be [B, ", 2 * options.z_dim(), "], got ",
              condition.sizes());
  const int64_t b = condition.size(0), ch = options.channel_width();
  // TF layout: view the gen_z output as NHWC, then permute to NCHW (models.md D.7). Kept in
  // channels-last memory: oneDNN's convolutions run faster on it, and every later op (batch
  // norm, ReLU, nearest upsampling, the skip's channel slice) keeps the layout.
  at::Tensor x = gen_z(condition)
                     .view({b, 4, 4, 16 * ch})
                     .permute({0, 3, 1, 2})
                     .contiguous(at::MemoryFormat::ChannelsLast);
  if (trace != nullptr) trace->after_gen_z = x;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    if (static_cast<int64_t>(i) == options.attention_layer_position()) {
      if (trace != nullptr) trace->attn_in = x;
      x = attention_(x, plan, ctx);
      if (trace != nullptr) trace->attn_out = x;
    }
    x = blocks_[i](x, condition, truncation);
  }
  x = at::relu(bn(x, truncation));
  return at::tanh(conv_to_rgb(x)).contiguous();
}

BigGANImpl::BigGANImpl(const BigGANOptions& options_) : options(options_) {
  validate(options);
  embeddings = register_module(
      "embeddings",
      torch::nn::Linear(
          torch::nn::LinearOptions(options.num_classes(), options.z_dim()).bias(false)));
  generator = register_module("generator", BigGANGenerator(options));
}

at::Tensor BigGANImpl::forward(const at::Tensor& z, const at::Tensor& class_vector,
                               double truncation, const AttentionPlan& plan,
                               const ForwardContext& ctx, BigGANTrace* trace) {
  TORCH_CHECK(z.defined() && z.dim() == 2 && z.size(1) == options.z_dim() && z.size(0) >= 1,
              "BigGAN: z must be [B, ", options.z_dim(), "] with B >= 1, got ",
              z.defined() ? c10::str(z.sizes()) : "undefined");
  TORCH_CHECK(class_vector.defined() && class_vector.dim() == 2 &&
                  class_vector.size(0) == z.size(0) &&
                  class_vector.size(1) == options.num_classes(),
              "BigGAN: class_vector must be [", z.size(0), ", ", options.num_classes(), "], got ",
              class_vector.defined() ? c10::str(class_vector.sizes()) : "undefined");
  TORCH_CHECK(z.is_floating_point() && class_vector.is_floating_point(),
              "BigGAN: z and class_vector must be floating point, got ", z.scalar_type(), " and ",
              class_vector.scalar_type());
  TORCH_CHECK(ctx.entry_seeds.empty() || static_cast<int64_t>(ctx.entry_seeds.size()) == z.size(0),
              "BigGAN: ctx.entry_seeds has ", ctx.entry_seeds.size(), " seeds for a batch of ",
              z.size(0));
  truncation_rows(truncation, options.n_stats());  // validates t ∈ (0, 1] before any work
  torch::NoGradGuard no_grad;
  const at::Tensor& w = embeddings->weight;
  const at::Tensor zc = z.to(w.device(), w.scalar_type());
  const at::Tensor cc = class_vector.to(w.device(), w.scalar_type());
  const at::Tensor condition = at::cat({zc, embeddings(cc)}, 1);
  return generator(condition, truncation, plan, ctx, trace);
}

AttentionPlan biggan_plan(attention::Method method) {
  using attention::Method;
  // 4096 queries × 1024 pooled keys, D = 64, Dv = 256, scale 1 (SelfAttn forces it too).
  // KDEformer: biggan_models/model_kdeformer.py (kdeformer.md §1.7); the peers: peers.md
  // §2.4, §4.5, §5.5, §6, §7.4.
  attention::AttentionOptions o(method);
  o.scale(1.0);
  switch (method) {
    case Method::kExact:
      break;
    case Method::kKdeformer:
      // The budget chooser's pick (bench/plan_budget): the paper's b = 64 with the far field
      // and no samples; its m = 128 sampled keys gave 0.053 error against 0.0004.
      o.kdeformer()
          .bucket_size(64)
          .sample_size(0)
          .residual(attention::Residual::kControlVariate)
          .clamp_output(true)
          .num_projections(7)
          .power_iterations(20);
      break;
    case Method::kPerformer:
      // m = 128 iid features as Performer.py, with the port's default stabiliser (a shift that
      // cancels in the ratio): the reference's unshifted exp ran in float64, this runs float32.
      o.performer().num_features(128).orthogonal(false);
      break;
    case Method::kReformer:
      // bucket 64, 8 hashes; the real keys (the reference's chunks serve as their own keys).
      o.reformer().bucket_size(64).num_hashes(8).shared_qk(false);
      break;
    case Method::kScatterBrain:
      o.scatterbrain().local_window(32).num_features(128).support(attention::SparseSupport::kBand);
      break;
    case Method::kHyperAttention:
      // Never run on this protocol: KDEformer's b = 64, m = 128; no fallback (4096 queries
      // reach the reference's min_seq_len anyway).
      o.hyperattention()
          .block_size(64)
          .sample_size(128)
          .num_projections(7)
          .min_seq_len(0)
          .mask_padding(true)
          .bucket_order(attention::BucketOrder::kGray);
      break;
    case Method::kWildCat:
      o.wildcat().rank(96).num_bins(8).clamp_output(true);
      break;
    case Method::kThinformer:
      o.thinformer().g(2).strided_prethinning(true);
      break;
  }
  AttentionPlan plan;
  plan.groups.emplace(kBigGANAttentionGroup, o);
  return plan;
}

AttentionPlan BigGANImpl::default_plan() { return biggan_plan(attention::Method::kKdeformer); }

AttentionPlan biggan_default_plan() { return BigGANImpl::default_plan(); }

AttentionPlan biggan_paper_plan() {
  AttentionPlan plan = biggan_default_plan();
  attention::AttentionOptions o = plan.at(kBigGANAttentionGroup);
  o.kdeformer().sample_size(128).residual(attention::Residual::kSampled).clamp_output(false);
  return plan.with_group(kBigGANAttentionGroup, o);
}

}  // namespace kdeserve::models
