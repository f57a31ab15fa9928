// Fuzzes the Open Inference Protocol's tensor checks (server/oip_tensors.h): the code that reads
// a ModelInferRequest's raw bytes and typed contents before anything is admitted. Input: one
// selector byte (even: the classifier, odd: the generator) and the serialized request. A request
// may be refused with a RequestError (INVALID_ARGUMENT); nothing may crash, leak, hit undefined
// behaviour or throw anything else, and what is accepted must be what the models take: a batch
// within the limit, finite bounded tensors of whole images, and kdeserve.v1 requests that pass
// kdeserve.v1's own validation.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "server/config.h"
#include "server/engine/engine.h"
#include "server/errors.h"
#include "server/oip_tensors.h"
#include "server/request_validation.h"
#include "tests/fuzz/fuzz_support.h"

namespace ks = kdeserve::server;
namespace oip = kdeserve::server::oip;

namespace {

struct Model {
  ks::ModelConfig config;
  ks::ModelSpec spec;
};

Model model(const char* name) {
  Model m;
  m.config.name = name;
  m.config.batching.max_items_per_request = 4;
  m.config.max_image_pixels = 1 << 16;
  m.spec = ks::registered_model_spec(name);
  return m;
}

const Model& classifier() {
  static const Model m = model("t2t_vit_t_14");
  return m;
}

const Model& generator() {
  static const Model m = model("biggan-deep-128");
  return m;
}

template <typename F>
bool refused(F&& f) {
  try {
    f();
  } catch (const ks::RequestError& e) {
    KDESERVE_FUZZ_CHECK(e.kind() == ks::ErrorKind::kInvalidArgument, e.what());
    return true;
  }
  return false;
}

void check_outputs(const std::vector<oip::RequestedOutput>& outputs, const ks::ModelSpec& spec) {
  KDESERVE_FUZZ_CHECK(!outputs.empty(), "no outputs");
  for (const auto& o : outputs) {
    KDESERVE_FUZZ_CHECK(o.classification >= 0 && o.classification <= spec.num_classes, o.name);
  }
}

void check_classifier(const inference::ModelInferRequest& request, const Model& m) {
  oip::ClassifyInfer c;
  if (refused([&] { c = oip::check_classify_infer(request, m.config, m.spec); })) return;
  KDESERVE_FUZZ_CHECK(c.batch >= 1 && c.batch <= m.config.batching.max_items_per_request,
                      "batch");
  check_outputs(c.outputs, m.spec);
  if (c.tensors.empty()) {
    KDESERVE_FUZZ_CHECK(c.images.images_size() == c.batch, "one image per row");
    const bool valid =
        !refused([&] { ks::check_classify_request(c.images, m.config, m.spec); });
    KDESERVE_FUZZ_CHECK(valid, "the kdeserve.v1 request of accepted images is refused");
    return;
  }
  const int64_t per_image = 3 * m.spec.image_size * m.spec.image_size;
  KDESERVE_FUZZ_CHECK(static_cast<int64_t>(c.tensors.size()) == c.batch * per_image, "INPUT size");
  KDESERVE_FUZZ_CHECK(static_cast<int64_t>(c.tensor_seeds.size()) == c.batch, "seeds");
  for (float v : c.tensors) {
    KDESERVE_FUZZ_CHECK(std::isfinite(v) && std::fabs(v) <= ks::kMaxAbsLatent, "INPUT value");
  }
}

void check_generator(const inference::ModelInferRequest& request, const Model& m) {
  oip::GenerateInfer g;
  if (refused([&] { g = oip::check_generate_infer(request, m.config, m.spec); })) return;
  check_outputs(g.outputs, m.spec);
  KDESERVE_FUZZ_CHECK(g.request.items_size() >= 1 &&
                          g.request.items_size() <= m.config.batching.max_items_per_request,
                      "items");
  const bool valid = !refused([&] { ks::check_generate_request(g.request, m.config, m.spec); });
  KDESERVE_FUZZ_CHECK(valid, "the kdeserve.v1 request of an accepted ModelInfer is refused");
}

void add_raw(inference::ModelInferRequest* r, const std::string& name, const std::string& type,
             const std::vector<int64_t>& shape, const std::string& raw) {
  auto* in = r->add_inputs();
  in->set_name(name);
  in->set_datatype(type);
  for (int64_t d : shape) in->add_shape(d);
  r->add_raw_input_contents(raw);
}

}  // namespace

std::vector<kdeserve::fuzz::Seed> kdeserve::fuzz::generated_seeds() {
  inference::ModelInferRequest image;
  image.set_model_name("t2t_vit_t_14");
  add_raw(&image, "IMAGE", "BYTES", {1}, oip::encode_bytes_elements({"\x89PNG\r\n\x1a\n"}));
  auto* o = image.add_outputs();
  o->set_name("PROBABILITIES");
  (*o->mutable_parameters())["classification"].set_int64_param(3);
  inference::ModelInferRequest pixels;
  add_raw(&pixels, "PIXELS", "UINT8", {2, 2, 3, 3}, std::string(36, '\x40'));
  (*pixels.mutable_parameters())["attention"].set_string_param("exact");
  inference::ModelInferRequest typed;
  auto* in = typed.add_inputs();
  in->set_name("INPUT");
  in->set_datatype("FP32");
  for (int64_t d : {1, 3, 224, 224}) in->add_shape(d);
  for (int i = 0; i < 3 * 224 * 224; ++i) in->mutable_contents()->add_fp32_contents(0.5F);
  inference::ModelInferRequest generate;
  add_raw(&generate, "CLASS", "INT32", {2}, std::string("\x01\0\0\0\xcf\0\0\0", 8));
  add_raw(&generate, "SEED", "UINT64", {2}, std::string(16, '\x02'));
  add_raw(&generate, "TRUNCATION", "FP32", {2}, std::string("\0\0\0\x3f\0\0\x80\x3f", 8));
  (*generate.mutable_parameters())["truncation"].set_double_param(0.5);
  inference::ModelInferRequest weights;
  auto* w = weights.add_inputs();
  w->set_name("CLASS_WEIGHTS");
  w->set_datatype("FP32");
  for (int64_t d : {1, 1000}) w->add_shape(d);
  for (int i = 0; i < 1000; ++i) w->mutable_contents()->add_fp32_contents(i == 7 ? 1.0F : 0.0F);
  auto* z = weights.add_inputs();
  z->set_name("Z");
  z->set_datatype("FP32");
  for (int64_t d : {1, 128}) z->add_shape(d);
  for (int i = 0; i < 128; ++i) z->mutable_contents()->add_fp32_contents(0.01F * (i - 64));
  auto seed = [](char selector, const inference::ModelInferRequest& r) {
    return std::string(1, selector) + r.SerializeAsString();
  };
  return {{"image", seed('\0', image)},
          {"pixels", seed('\0', pixels)},
          {"input_typed", seed('\0', typed)},
          {"generate", seed('\1', generate)},
          {"weights_z", seed('\1', weights)}};
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  inference::ModelInferRequest request;
  if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  if (data[0] % 2 == 0) {
    check_classifier(request, classifier());
  } else {
    check_generator(request, generator());
  }
  return 0;
}
