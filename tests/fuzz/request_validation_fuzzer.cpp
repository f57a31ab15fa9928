// Fuzzes the validation of Classify and Generate requests (server/request_validation.h), the
// only code that reads a client's request before it is admitted. Input: one selector byte (even:
// ClassifyRequest, odd: GenerateRequest) and the serialized message. A message may be refused
// with a RequestError (INVALID_ARGUMENT); nothing may crash, leak, hit undefined behaviour or
// throw anything else, and what is accepted must keep every promise the checks make.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "server/config.h"
#include "server/engine/engine.h"
#include "server/errors.h"
#include "server/request_validation.h"
#include "tests/fuzz/fuzz_support.h"

namespace ks = kdeserve::server;
namespace v1 = kdeserve::v1;

namespace {

struct Model {
  ks::ModelConfig config;
  ks::ModelSpec spec;
};

const Model& classifier() {
  static const Model m = [] {
    Model c;
    c.config.name = "t2t_vit_t_14";
    c.config.batching.max_items_per_request = 4;
    c.config.max_image_pixels = 1 << 20;
    c.spec = ks::registered_model_spec(c.config.name);
    return c;
  }();
  return m;
}

const Model& generator() {
  static const Model m = [] {
    Model g;
    g.config.name = "biggan-deep-128";
    g.config.batching.max_items_per_request = 4;
    g.spec = ks::registered_model_spec(g.config.name);
    return g;
  }();
  return m;
}

std::string with_selector(char selector, const google::protobuf::Message& message) {
  return std::string(1, selector) + message.SerializeAsString();
}

void check_classify(const v1::ClassifyRequest& request, const Model& m) {
  ks::ClassifyRequestCheck check;
  try {
    check = ks::check_classify_request(request, m.config, m.spec);
  } catch (const ks::RequestError& e) {
    KDESERVE_FUZZ_CHECK(e.kind() == ks::ErrorKind::kInvalidArgument, e.what());
    return;
  }
  KDESERVE_FUZZ_CHECK(check.top_k >= 1 && check.top_k <= m.spec.num_classes, "top_k");
  KDESERVE_FUZZ_CHECK(request.images_size() >= 1 &&
                          request.images_size() <= m.config.batching.max_items_per_request,
                      "image count");
  int64_t bytes = 0;
  for (const auto& img : request.images()) {
    if (img.has_raw()) {
      const auto& raw = img.raw();
      KDESERVE_FUZZ_CHECK(uint64_t{raw.height()} * raw.width() <=
                              static_cast<uint64_t>(m.config.max_image_pixels),
                          "raw pixels");
      KDESERVE_FUZZ_CHECK(raw.data().size() == uint64_t{raw.height()} * raw.width() *
                                                   raw.channels(),
                          "raw size");
      bytes += static_cast<int64_t>(raw.data().size());
    } else {
      KDESERVE_FUZZ_CHECK(!img.encoded().empty(), "empty encoded image accepted");
      bytes += static_cast<int64_t>(img.encoded().size());
    }
  }
  KDESERVE_FUZZ_CHECK(bytes == check.image_bytes, "image_bytes");
}

void check_generate(const v1::GenerateRequest& request, const Model& m) {
  ks::GenerateRequestCheck check;
  try {
    check = ks::check_generate_request(request, m.config, m.spec);
  } catch (const ks::RequestError& e) {
    KDESERVE_FUZZ_CHECK(e.kind() == ks::ErrorKind::kInvalidArgument, e.what());
    return;
  }
  const size_t n = static_cast<size_t>(request.items_size());
  KDESERVE_FUZZ_CHECK(n >= 1 && static_cast<int64_t>(n) <= m.config.batching.max_items_per_request,
                      "item count");
  KDESERVE_FUZZ_CHECK(check.truncations.size() == n && check.classes.size() == n &&
                          check.seeds.size() == n && check.z.size() == n,
                      "one entry per item");
  KDESERVE_FUZZ_CHECK(check.format != v1::IMAGE_FORMAT_UNSPECIFIED, "format");
  for (size_t i = 0; i < n; ++i) {
    KDESERVE_FUZZ_CHECK(check.truncations[i] > 0 && check.truncations[i] <= 1, "truncation");
    double sum = 0;
    for (const auto& [c, w] : check.classes[i]) {
      KDESERVE_FUZZ_CHECK(c >= 0 && c < m.spec.num_classes && std::isfinite(w) && w >= 0,
                          "class weight");
      sum += w;
    }
    KDESERVE_FUZZ_CHECK(sum > 0 && sum <= ks::kMaxClassWeightSum, "weight sum");
    if (check.z[i]) {
      KDESERVE_FUZZ_CHECK(static_cast<int64_t>(check.z[i]->size()) == m.spec.z_dim, "z_dim");
      for (float v : *check.z[i]) {
        KDESERVE_FUZZ_CHECK(std::isfinite(v) && std::fabs(v) <= ks::kMaxAbsLatent, "z value");
      }
    }
  }
}

}  // namespace

std::vector<kdeserve::fuzz::Seed> kdeserve::fuzz::generated_seeds() {
  v1::ClassifyRequest classify;
  classify.set_model("t2t_vit_t_14");
  classify.set_top_k(3);
  classify.add_images()->set_encoded(std::string("\x89PNG\r\n\x1a\n", 8));
  auto* raw = classify.add_images()->mutable_raw();
  raw->set_height(2);
  raw->set_width(3);
  raw->set_channels(3);
  raw->set_data(std::string(18, '\x7f'));
  v1::GenerateRequest generate;
  generate.set_model("biggan-deep-128");
  generate.set_format(v1::IMAGE_FORMAT_RAW_RGB8);
  auto* a = generate.add_items();
  a->set_class_id(207);
  a->set_seed(1);
  a->set_truncation(0.5);
  auto* b = generate.add_items();
  auto* w = b->mutable_class_weights()->add_weights();
  w->set_class_id(1);
  w->set_weight(0.5F);
  w = b->mutable_class_weights()->add_weights();
  w->set_class_id(2);
  w->set_weight(0.5F);
  for (int k = 0; k < 128; ++k) b->mutable_z()->add_values(0.01F * static_cast<float>(k - 64));
  return {{"classify", with_selector('\0', classify)}, {"generate", with_selector('\1', generate)}};
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto* bytes = reinterpret_cast<const char*>(data) + 1;
  const int length = static_cast<int>(size - 1);
  if (data[0] % 2 == 0) {
    v1::ClassifyRequest request;
    if (!request.ParseFromArray(bytes, length)) return 0;
    check_classify(request, classifier());
    check_classify(request, generator());  // a generator refuses every Classify
  } else {
    v1::GenerateRequest request;
    if (!request.ParseFromArray(bytes, length)) return 0;
    check_generate(request, generator());
    check_generate(request, classifier());
  }
  return 0;
}
