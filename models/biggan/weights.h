#pragma once
/// Loading upstream BigGAN-deep checkpoints (safetensors with upstream state_dict keys) into
/// BigGAN, folding spectral norm at load time (models.md B.4, B.5).
///
/// Upstream stores every spectral-norm module as `*.weight_orig` (parameter, un-normalised),
/// `*.weight_u` [out] and `*.weight_v` [in·kh·kw] (buffers). PyTorch's eval forward runs no
/// power iteration and uses W = weight_orig / σ with σ = u · (weight_orig.reshape(out, −1) @ v);
/// the loader computes exactly that, in float64, once. It is neither |W v| nor the true σ_max.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "models/biggan/biggan.h"
#include "models/biggan/options.h"
#include "models/weights/safetensors.h"

namespace kdeserve::models {

/// One tensor of an upstream BigGAN state_dict.
struct BigGANCheckpointKey {
  std::string name;
  /// [] never occurs; gamma is [1].
  std::vector<int64_t> shape;
  /// true for an nn.Parameter (counted by PyTorch's parameter count), false for a buffer
  /// (weight_u, weight_v, running_means, running_vars).
  bool parameter = false;
};

/// Every key of upstream's state_dict for `options`, in upstream order (506 for
/// biggan-deep-128, 602 for -256, 698 for -512; models_keys/*.keys.tsv).
std::vector<BigGANCheckpointKey> biggan_checkpoint_keys(const BigGANOptions& options);

/// Parameter elements of the upstream model (weight_orig, biases, embeddings, gamma, final BN
/// weight/bias; buffers excluded), as PyTorch counts them: 50,388,609 for biggan-deep-128.
int64_t biggan_checkpoint_parameter_count(const BigGANOptions& options);

/// The eval-mode spectral-norm weight: weight_orig / (u · (weight_orig.reshape(out, −1) @ v)),
/// computed in float64. weight_orig [out, ...], u [out], v [numel / out] → float64, shape of
/// weight_orig. Throws c10::Error on mismatched shapes or a non-finite or zero σ.
at::Tensor fold_spectral_norm(const at::Tensor& weight_orig, const at::Tensor& weight_u,
                              const at::Tensor& weight_v);

/// Loads `file` into `model` (any floating dtype; values are converted to it). Strict: the file
/// must hold exactly biggan_checkpoint_keys(model.options) with those shapes, apart from names
/// in `ignore` (e.g. a fixture's io_tensors); otherwise one c10::Error names the file and every
/// missing, unexpected and misshapen key. Spectral-norm triples are folded into `*.weight`;
/// conv_to_rgb is divided by its σ (over all ch rows) first and then sliced to 3 rows.
/// Convert the model to its final dtype *before* loading: σ is folded in float64 and rounded once
/// to the module's dtype (folding into float32 and then converting to float64 loses ~1e-8).
void load_biggan_weights(BigGANImpl& model, const SafetensorsFile& file,
                         const std::vector<std::string>& ignore = {});

/// Builds biggan(options), loads `path` (load_biggan_weights) and converts it to `dtype`.
BigGAN load_biggan(const std::string& path, const BigGANOptions& options,
                   at::ScalarType dtype = at::kFloat);

}  // namespace kdeserve::models
