#include "server/request_validation.h"

#include <cfloat>
#include <cmath>
#include <set>
#include <string>

#include "server/errors.h"

namespace kdeserve::server {

namespace v1 = kdeserve::v1;

namespace {

void check_raw_image(const v1::RawImage& raw, const std::string& where, int64_t max_pixels) {
  if (raw.height() == 0 || raw.width() == 0) throw_invalid(where + ": zero height or width");
  if (raw.channels() != 1 && raw.channels() != 3 && raw.channels() != 4) {
    throw_invalid(where + ": channels must be 1, 3 or 4, got " + std::to_string(raw.channels()));
  }
  const uint64_t pixels = uint64_t{raw.height()} * raw.width();
  if (pixels > static_cast<uint64_t>(max_pixels)) {
    throw_invalid(where + ": " + std::to_string(pixels) + " pixels, more than the " +
                  std::to_string(max_pixels) + " allowed");
  }
  if (raw.data().size() != pixels * raw.channels()) {
    throw_invalid(where + ": data has " + std::to_string(raw.data().size()) +
                  " bytes, expected height*width*channels = " +
                  std::to_string(pixels * raw.channels()));
  }
}

ClassWeights check_class_weights(const v1::ClassWeights& weights, const std::string& where,
                                 int64_t num_classes) {
  if (weights.weights_size() == 0) throw_invalid(where + ".class_weights: empty");
  ClassWeights row;
  std::set<uint32_t> seen;
  double sum = 0;
  for (const auto& w : weights.weights()) {
    if (w.class_id() >= num_classes) {
      throw_invalid(where + ".class_weights: class " + std::to_string(w.class_id()) +
                    " outside [0, " + std::to_string(num_classes) + ")");
    }
    if (!seen.insert(w.class_id()).second) {
      throw_invalid(where + ".class_weights: class " + std::to_string(w.class_id()) +
                    " repeated");
    }
    if (!std::isfinite(w.weight()) || w.weight() < 0) {
      throw_invalid(where + ".class_weights: weights must be finite and >= 0");
    }
    sum += w.weight();  // in double: float weights cannot overflow it
    row.emplace_back(w.class_id(), w.weight());
  }
  if (!(sum > 0)) throw_invalid(where + ".class_weights: the weights sum to 0");
  if (sum > kMaxClassWeightSum) {
    throw_invalid(where + ".class_weights: the weights sum to " + std::to_string(sum) +
                  ", more than " + std::to_string(static_cast<int>(kMaxClassWeightSum)));
  }
  return row;
}

}  // namespace

ClassifyRequestCheck check_classify_request(const v1::ClassifyRequest& request,
                                            const ModelConfig& config, const ModelSpec& spec) {
  if (spec.kind != ModelKind::kClassifier) {
    throw_invalid("model " + config.name + " is a generator: call Generate");
  }
  const int64_t max_items = config.batching.max_items_per_request;
  if (request.images_size() == 0) throw_invalid("images: at least one image is required");
  if (request.images_size() > max_items) {
    throw_invalid("images: " + std::to_string(request.images_size()) + " images, at most " +
                  std::to_string(max_items) + " per request for model " + config.name);
  }
  ClassifyRequestCheck check;
  check.top_k = request.top_k() == 0 ? kDefaultTopK : request.top_k();
  if (check.top_k > spec.num_classes) {
    throw_invalid("top_k: " + std::to_string(check.top_k) + " exceeds the " +
                  std::to_string(spec.num_classes) + " classes");
  }
  for (int i = 0; i < request.images_size(); ++i) {
    const auto& img = request.images(i);
    const std::string where = "images[" + std::to_string(i) + "]";
    if (img.source_case() == v1::ImageInput::kEncoded) {
      if (img.encoded().empty()) throw_invalid(where + ": empty encoded image");
      check.image_bytes += static_cast<int64_t>(img.encoded().size());
    } else if (img.source_case() == v1::ImageInput::kRaw) {
      check_raw_image(img.raw(), where, config.max_image_pixels);
      check.image_bytes += static_cast<int64_t>(img.raw().data().size());
    } else {
      throw_invalid(where + ": neither encoded nor raw is set");
    }
  }
  return check;
}

GenerateRequestCheck check_generate_request(const v1::GenerateRequest& request,
                                            const ModelConfig& config, const ModelSpec& spec) {
  if (spec.kind != ModelKind::kGenerator) {
    throw_invalid("model " + config.name + " is a classifier: call Classify");
  }
  const int64_t max_items = config.batching.max_items_per_request;
  if (request.items_size() == 0) throw_invalid("items: at least one item is required");
  if (request.items_size() > max_items) {
    throw_invalid("items: " + std::to_string(request.items_size()) + " items, at most " +
                  std::to_string(max_items) + " per request for model " + config.name);
  }
  GenerateRequestCheck check;
  switch (request.format()) {
    case v1::IMAGE_FORMAT_UNSPECIFIED:
    case v1::IMAGE_FORMAT_PNG:
      check.format = v1::IMAGE_FORMAT_PNG;
      break;
    case v1::IMAGE_FORMAT_RAW_RGB8:
      check.format = v1::IMAGE_FORMAT_RAW_RGB8;
      break;
    default:
      throw_invalid("format: unknown image format " + std::to_string(request.format()));
  }
  for (int i = 0; i < request.items_size(); ++i) {
    const auto& item = request.items(i);
    const std::string where = "items[" + std::to_string(i) + "]";
    const double t = item.truncation() == 0 ? kDefaultTruncation : item.truncation();
    if (!std::isfinite(t) || t <= 0 || t > 1) {
      throw_invalid(where + ".truncation: must be in (0, 1], got " + std::to_string(t));
    }
    check.truncations.push_back(t);
    if (item.class_spec_case() == v1::GenerateItem::kClassId) {
      if (item.class_id() >= spec.num_classes) {
        throw_invalid(where + ".class_id: " + std::to_string(item.class_id()) + " outside [0, " +
                      std::to_string(spec.num_classes) + ")");
      }
      check.classes.push_back({{item.class_id(), 1.0}});
    } else if (item.class_spec_case() == v1::GenerateItem::kClassWeights) {
      check.classes.push_back(check_class_weights(item.class_weights(), where, spec.num_classes));
    } else {
      throw_invalid(where + ": set class_id or class_weights");
    }
    check.seeds.push_back(item.noise_case() == v1::GenerateItem::kSeed
                              ? std::optional<uint64_t>(item.seed())
                              : std::nullopt);
    if (item.noise_case() == v1::GenerateItem::kZ) {
      if (item.z().values_size() != spec.z_dim) {
        throw_invalid(where + ".z: " + std::to_string(item.z().values_size()) +
                      " values, the model's z_dim is " + std::to_string(spec.z_dim));
      }
      for (float v : item.z().values()) {
        if (!std::isfinite(v)) throw_invalid(where + ".z: values must be finite");
        if (std::fabs(v) > kMaxAbsLatent) {
          throw_invalid(where + ".z: |z| must be at most " +
                        std::to_string(static_cast<int>(kMaxAbsLatent)) + ", got " +
                        std::to_string(v));
        }
      }
      check.z.emplace_back(std::vector<float>(item.z().values().begin(), item.z().values().end()));
    } else {
      check.z.emplace_back(std::nullopt);
    }
  }
  return check;
}

}  // namespace kdeserve::server
