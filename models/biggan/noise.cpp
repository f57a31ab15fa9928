#include "models/biggan/noise.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <set>

namespace kdeserve::models {
namespace {

void check_truncation(double truncation) {
  TORCH_CHECK(std::isfinite(truncation) && truncation > 0.0 && truncation <= 1.0,
              "truncated noise: truncation must be in (0, 1], got ", truncation);
}

// N(0, 1) truncated to [−2, 2] by rejection; float64 draws, [n].
at::Tensor truncated_standard_normal(int64_t n, uint64_t seed) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor x = at::normal(0.0, 1.0, {n}, generator, at::TensorOptions().dtype(at::kDouble));
  // P(|x| > 2) ≈ 4.6%, so a few rounds suffice; each round redraws only the rejected entries.
  for (at::Tensor reject = x.abs() > 2.0; reject.any().item<bool>(); reject = x.abs() > 2.0) {
    const int64_t count = reject.sum().item<int64_t>();
    x.masked_scatter_(
        reject, at::normal(0.0, 1.0, {count}, generator, at::TensorOptions().dtype(at::kDouble)));
  }
  return x;
}

}  // namespace

at::Tensor truncated_noise_sample(int64_t batch, double truncation, uint64_t seed, int64_t dim) {
  TORCH_CHECK(batch >= 1 && dim >= 1, "truncated noise: batch and dim must be >= 1, got ", batch,
              ", ", dim);
  check_truncation(truncation);
  return (truncated_standard_normal(batch * dim, seed) * truncation)
      .to(at::kFloat)
      .view({batch, dim});
}

at::Tensor truncated_noise_sample(const std::vector<uint64_t>& seeds, double truncation,
                                  int64_t dim) {
  TORCH_CHECK(!seeds.empty() && dim >= 1, "truncated noise: needs >= 1 seed and dim >= 1, got ",
              seeds.size(), " seeds, dim ", dim);
  check_truncation(truncation);
  std::vector<at::Tensor> rows;
  rows.reserve(seeds.size());
  for (uint64_t seed : seeds) rows.push_back(truncated_standard_normal(dim, seed) * truncation);
  return at::stack(rows).to(at::kFloat);
}

at::Tensor one_hot_class_vector(const std::vector<int64_t>& classes, int64_t num_classes) {
  std::vector<std::vector<std::pair<int64_t, double>>> weights;
  weights.reserve(classes.size());
  for (int64_t c : classes) weights.push_back({{c, 1.0}});
  return class_weight_vector(weights, num_classes);
}

at::Tensor class_weight_vector(const std::vector<std::vector<std::pair<int64_t, double>>>& weights,
                               int64_t num_classes) {
  TORCH_CHECK(num_classes >= 1, "class vector: num_classes must be >= 1, got ", num_classes);
  TORCH_CHECK(!weights.empty(), "class vector: the batch is empty");
  at::Tensor out = at::zeros({static_cast<int64_t>(weights.size()), num_classes}, at::kFloat);
  auto acc = out.accessor<float, 2>();
  for (size_t b = 0; b < weights.size(); ++b) {
    TORCH_CHECK(!weights[b].empty(), "class vector: row ", b, " has no class");
    std::set<int64_t> seen;
    double total = 0.0;
    for (const auto& [c, w] : weights[b]) {
      TORCH_CHECK(c >= 0 && c < num_classes, "class vector: row ", b, ": class ", c,
                  " is outside [0, ", num_classes, ")");
      TORCH_CHECK(seen.insert(c).second, "class vector: row ", b, ": class ", c, " repeated");
      TORCH_CHECK(std::isfinite(w) && w >= 0.0, "class vector: row ", b, ": class ", c,
                  " has weight ", w, " (must be finite and >= 0)");
      acc[static_cast<int64_t>(b)][c] = static_cast<float>(w);
      total += w;
    }
    TORCH_CHECK(total > 0.0, "class vector: row ", b, " has all weights 0");
  }
  return out;
}

at::Tensor to_uint8_rgb(const at::Tensor& image) {
  TORCH_CHECK(
      image.defined() && image.dim() == 4 && image.size(1) == 3 && image.is_floating_point(),
      "to_uint8_rgb: expected a floating [B, 3, H, W] image, got ",
      image.defined() ? c10::str(image.scalar_type(), " ", image.sizes()) : "undefined");
  return ((image.to(at::kDouble) + 1.0) / 2.0 * 255.0)
      .nan_to_num(0.0)
      .round()
      .clamp(0.0, 255.0)
      .to(at::kByte)
      .permute({0, 2, 3, 1})
      .contiguous();
}

}  // namespace kdeserve::models
