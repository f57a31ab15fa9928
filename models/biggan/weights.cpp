#include "models/biggan/weights.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

namespace kdeserve::models {
namespace {

using Keys = std::vector<BigGANCheckpointKey>;

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// A torch.nn.utils.spectral_norm module: [bias], weight_orig, weight_u, weight_v.
void add_spectral(Keys& keys, const std::string& prefix, const std::vector<int64_t>& shape,
                  bool bias) {
  const int64_t out = shape.front();
  if (bias) keys.push_back({prefix + ".bias", {out}, true});
  keys.push_back({prefix + ".weight_orig", shape, true});
  keys.push_back({prefix + ".weight_u", {out}, false});
  keys.push_back({prefix + ".weight_v", {numel(shape) / out}, false});
}

void add_stats(Keys& keys, const std::string& prefix, int64_t channels, int64_t n_stats) {
  keys.push_back({prefix + ".running_means", {n_stats, channels}, false});
  keys.push_back({prefix + ".running_vars", {n_stats, channels}, false});
}

void add_conditional_bn(Keys& keys, const std::string& prefix, int64_t channels, int64_t cond,
                        int64_t n_stats) {
  add_stats(keys, prefix, channels, n_stats);
  add_spectral(keys, prefix + ".scale", {channels, cond}, false);
  add_spectral(keys, prefix + ".offset", {channels, cond}, false);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  return c10::str(at::IntArrayRef(shape));
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::vector<BigGANCheckpointKey> biggan_checkpoint_keys(const BigGANOptions& options) {
  validate(options);
  const int64_t ch = options.channel_width(), cond = 2 * options.z_dim(), n = options.n_stats();
  Keys keys;
  keys.push_back({"embeddings.weight", {options.z_dim(), options.num_classes()}, true});
  add_spectral(keys, "generator.gen_z", {4 * 4 * 16 * ch, cond}, true);
  const int64_t position = options.attention_layer_position();
  for (int64_t i = 0; i < static_cast<int64_t>(options.layers().size()); ++i) {
    const BigGANLayerSpec& l = options.layers()[static_cast<size_t>(i)];
    const int64_t in = l.in_mult * ch, out = l.out_mult * ch, mid = in / 4;
    if (i == position) {
      const std::string p = "generator.layers." + std::to_string(position);
      keys.push_back({p + ".gamma", {1}, true});
      add_spectral(keys, p + ".snconv1x1_theta", {in / 8, in, 1, 1}, false);
      add_spectral(keys, p + ".snconv1x1_phi", {in / 8, in, 1, 1}, false);
      add_spectral(keys, p + ".snconv1x1_g", {in / 2, in, 1, 1}, false);
      add_spectral(keys, p + ".snconv1x1_o_conv", {in, in / 2, 1, 1}, false);
    }
    const std::string p = "generator.layers." + std::to_string(i < position ? i : i + 1);
    add_conditional_bn(keys, p + ".bn_0", in, cond, n);
    add_spectral(keys, p + ".conv_0", {mid, in, 1, 1}, true);
    add_conditional_bn(keys, p + ".bn_1", mid, cond, n);
    add_spectral(keys, p + ".conv_1", {mid, mid, 3, 3}, true);
    add_conditional_bn(keys, p + ".bn_2", mid, cond, n);
    add_spectral(keys, p + ".conv_2", {mid, mid, 3, 3}, true);
    add_conditional_bn(keys, p + ".bn_3", mid, cond, n);
    add_spectral(keys, p + ".conv_3", {out, mid, 1, 1}, true);
  }
  keys.push_back({"generator.bn.weight", {ch}, true});
  keys.push_back({"generator.bn.bias", {ch}, true});
  add_stats(keys, "generator.bn", ch, n);
  add_spectral(keys, "generator.conv_to_rgb", {ch, ch, 3, 3}, true);
  return keys;
}

int64_t biggan_checkpoint_parameter_count(const BigGANOptions& options) {
  int64_t count = 0;
  for (const auto& key : biggan_checkpoint_keys(options)) {
    if (key.parameter) count += numel(key.shape);
  }
  return count;
}

at::Tensor fold_spectral_norm(const at::Tensor& weight_orig, const at::Tensor& weight_u,
                              const at::Tensor& weight_v) {
  TORCH_CHECK(weight_orig.dim() >= 2 && weight_orig.size(0) > 0,
              "spectral norm: weight_orig must be at least 2-D, got ", weight_orig.sizes());
  const int64_t out = weight_orig.size(0);
  const at::Tensor w = weight_orig.to(at::kDouble).reshape({out, -1});
  TORCH_CHECK(weight_u.dim() == 1 && weight_u.size(0) == out && weight_v.dim() == 1 &&
                  weight_v.size(0) == w.size(1),
              "spectral norm: u ", weight_u.sizes(), " and v ", weight_v.sizes(),
              " do not fit weight_orig ", weight_orig.sizes());
  // Eval-mode torch.nn.utils.spectral_norm: sigma = dot(u, mv(W_mat, v)); no power iteration.
  const double sigma =
      at::dot(weight_u.to(at::kDouble), at::mv(w, weight_v.to(at::kDouble))).item<double>();
  TORCH_CHECK(std::isfinite(sigma) && sigma != 0.0, "spectral norm: sigma = u·(W v) is ", sigma);
  return weight_orig.to(at::kDouble) / sigma;
}

void load_biggan_weights(BigGANImpl& model, const SafetensorsFile& file,
                         const std::vector<std::string>& ignore) {
  const Keys keys = biggan_checkpoint_keys(model.options);
  std::map<std::string, std::vector<int64_t>> expected;
  for (const auto& key : keys) expected.emplace(key.name, key.shape);

  std::vector<std::string> missing, extra, misshapen;
  for (const auto& key : keys) {
    if (!file.contains(key.name)) {
      missing.push_back(key.name);
    } else if (file.info(key.name).shape != key.shape) {
      misshapen.push_back("'" + key.name + "': expected " + shape_str(key.shape) + ", got " +
                          shape_str(file.info(key.name).shape));
    }
  }
  for (const std::string& name : file.names()) {
    if (expected.count(name) == 0 &&
        std::find(ignore.begin(), ignore.end(), name) == ignore.end()) {
      extra.push_back(name);
    }
  }
  TORCH_CHECK(missing.empty() && extra.empty() && misshapen.empty(), file.path(),
              ": weights do not match BigGAN ", config_json(model.options),
              missing.empty() ? "" : "; missing keys: ", c10::Join(", ", missing),
              extra.empty() ? "" : "; unexpected keys: ", c10::Join(", ", extra),
              misshapen.empty() ? "" : "; shape mismatches: ", c10::Join(", ", misshapen));

  std::map<std::string, at::Tensor> targets;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    targets.emplace(item.key(), item.value());
  }
  for (const auto& item : model.named_buffers(/*recurse=*/true)) {
    targets.emplace(item.key(), item.value());
  }
  std::set<std::string> used;
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    at::Tensor source;
    if (expected.count(name) != 0) {
      source = file.get(name, at::kDouble);
      used.insert(name);
    } else {
      const std::string prefix = name.substr(0, name.size() - std::string("weight").size());
      TORCH_CHECK(ends_with(name, ".weight") && expected.count(prefix + "weight_orig") != 0,
                  "BigGAN loader: module tensor '", name, "' has no checkpoint source");
      source = fold_spectral_norm(file.get(prefix + "weight_orig", at::kDouble),
                                  file.get(prefix + "weight_u", at::kDouble),
                                  file.get(prefix + "weight_v", at::kDouble));
      used.insert({prefix + "weight_orig", prefix + "weight_u", prefix + "weight_v"});
    }
    // conv_to_rgb keeps only output channels 0..2, sliced after dividing by σ (models.md D.8).
    if (name.rfind("generator.conv_to_rgb.", 0) == 0 && source.size(0) > target.size(0)) {
      source = source.narrow(0, 0, target.size(0));
    }
    TORCH_CHECK(source.sizes() == target.sizes(), "BigGAN loader: '", name, "' is ", target.sizes(),
                " in the module but ", source.sizes(), " from the checkpoint");
    target.copy_(source);
  }
  for (const auto& key : keys) {
    TORCH_CHECK(used.count(key.name) != 0, "BigGAN loader: checkpoint key '", key.name,
                "' has no module tensor");
  }
}

BigGAN load_biggan(const std::string& path, const BigGANOptions& options, at::ScalarType dtype) {
  BigGAN model(options);
  model->to(dtype);  // first, so the folded weights are rounded once, to `dtype`
  load_biggan_weights(*model, SafetensorsFile::open(path));
  model->eval();
  return model;
}

}  // namespace kdeserve::models
