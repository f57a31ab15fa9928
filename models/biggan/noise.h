#pragma once
/// Inputs and outputs of BigGAN around the model: truncated noise, class vectors, uint8 images.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace kdeserve::models {

/// z = truncation · X with X ~ N(0, 1) truncated to [−2, 2], as upstream's
/// `truncated_noise_sample` (scipy truncnorm(−2, 2) · truncation). Method: every element is drawn
/// from N(0, 1) with a CPU at::Generator (mt19937) seeded by `seed`; elements with
/// |x| > 2 are redrawn from the same generator until none is left (rejection sampling: the same
/// distribution as scipy's, not the same numbers, models.md D.18). Deterministic for a seed.
/// → [batch, dim] float32. Throws c10::Error unless batch ≥ 1, dim ≥ 1 and 0 < truncation ≤ 1.
at::Tensor truncated_noise_sample(int64_t batch, double truncation, uint64_t seed,
                                  int64_t dim = 128);

/// As above with row b drawn from its own generator seeded by seeds[b], so a row never depends
/// on the rest of the batch (e.g. one seed per request). → [seeds.size(), dim] float32.
at::Tensor truncated_noise_sample(const std::vector<uint64_t>& seeds, double truncation,
                                  int64_t dim = 128);

/// One-hot class vectors: row b has 1 at classes[b]. → [B, num_classes] float32.
/// Throws c10::Error for an empty list or a class outside [0, num_classes).
at::Tensor one_hot_class_vector(const std::vector<int64_t>& classes, int64_t num_classes = 1000);

/// Soft class mixtures: row b holds weight w at class c for each (c, w) of weights[b]
/// (BigGAN's embedding is linear, so this interpolates class embeddings). → [B, num_classes]
/// float32. Throws c10::Error for an empty batch or row, a class outside [0, num_classes), a
/// class repeated within a row, or a weight that is negative or not finite, or a row summing to 0.
at::Tensor class_weight_vector(const std::vector<std::vector<std::pair<int64_t, double>>>& weights,
                               int64_t num_classes = 1000);

/// Images in [−1, 1] to 8-bit RGB: round((x + 1) / 2 · 255) clamped to [0, 255], computed in
/// float64 (NaN → 0). image [B, 3, H, W] (any floating dtype) → [B, H, W, 3] uint8, contiguous.
/// (The KDEformer demo saves PNGs with ·256 and clipping; this maps −1 → 0 and 1 → 255.)
at::Tensor to_uint8_rgb(const at::Tensor& image);

}  // namespace kdeserve::models
