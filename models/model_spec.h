#pragma once
/// What a registered model is, without building it: plain C++, no LibTorch, so that code which
/// must not see LibTorch's headers (the server's gRPC side) can use it too.

#include <cstdint>
#include <string>

namespace kdeserve::models {

enum class ModelKind {
  kClassifier,  ///< images → ImageNet logits (T2T-ViT)
  kGenerator,   ///< (z, class vector, truncation) → images (BigGAN-deep)
};

/// "classifier" / "generator".
std::string to_string(ModelKind kind);

/// What a registered model is, without building it.
struct ModelSpec {
  std::string name;
  ModelKind kind = ModelKind::kClassifier;
  /// Classifier: square input side (224 or 384). Generator: output side (128, 256, 512).
  int64_t image_size = 0;
  /// Classes of the classifier head / the generator's class space.
  int64_t num_classes = 1000;
  /// Generator only: width of z.
  int64_t z_dim = 0;
  /// Human-readable input and output descriptions (shapes, dtypes, ranges).
  std::string input, output;
};

}  // namespace kdeserve::models
