#pragma once
/// Validation of Classify and Generate requests before admission: everything that can be
/// checked without decoding an image or touching a model (field presence, counts, sizes,
/// ranges, magnitudes). Torch-free and gRPC-free (protobuf messages only), so it is fuzzed on
/// its own (tests/fuzz). Every failure throws RequestError(kInvalidArgument) naming the field.

#include <cstdint>
#include <optional>
#include <vector>

#include "kdeserve/v1/inference.pb.h"
#include "models/model_spec.h"
#include "server/config.h"
#include "server/engine/model_engine.h"

namespace kdeserve::server {

/// Truncation of a Generate item that gives none (0).
constexpr double kDefaultTruncation = 0.4;
/// Classes per image of a Classify request that gives no top_k (0).
constexpr uint32_t kDefaultTopK = 5;

/// Largest |z_i| a Generate item may carry. z is a latent drawn from N(0, I) (truncated to
/// [−2, 2] by the server's own noise): |z_i| > 100 is never a meaningful input, and bounding it
/// keeps BigGAN's activations (linear in z between ReLUs, attention logits quadratic) finite in
/// float32, so one client's row cannot turn a shared batch non-finite.
constexpr float kMaxAbsLatent = 100.0F;
/// Largest sum of one item's class weights: a row is a weighted mix of class embeddings
/// (one-hot or convex in practice); the bound keeps the embedding finite for the same reason.
constexpr double kMaxClassWeightSum = 100.0;

/// A valid Classify request, as admission needs it.
struct ClassifyRequestCheck {
  int64_t top_k = 5;        ///< 1 ≤ top_k ≤ classes
  int64_t image_bytes = 0;  ///< encoded plus raw bytes of every image (held until decoded)
};

/// Checks a Classify request against its model (`config`, `spec`: a classifier). Images are
/// not decoded here; raw images are checked for shape and size, encoded ones for presence.
ClassifyRequestCheck check_classify_request(const kdeserve::v1::ClassifyRequest& request,
                                            const ModelConfig& config, const ModelSpec& spec);

/// A valid Generate request: one entry per item.
struct GenerateRequestCheck {
  kdeserve::v1::ImageFormat format = kdeserve::v1::IMAGE_FORMAT_PNG;  ///< never UNSPECIFIED
  std::vector<double> truncations;                 ///< in (0, 1]
  std::vector<ClassWeights> classes;               ///< ids < classes, weights ≥ 0, sum in (0, max]
  std::vector<std::optional<uint64_t>> seeds;      ///< the item's seed, if it gave one
  std::vector<std::optional<std::vector<float>>> z;  ///< the item's z, if it gave one (z_dim)
};

/// Checks a Generate request against its model (`config`, `spec`: a generator).
GenerateRequestCheck check_generate_request(const kdeserve::v1::GenerateRequest& request,
                                            const ModelConfig& config, const ModelSpec& spec);

}  // namespace kdeserve::server
