// The Open Inference Protocol's tensors (server/oip_tensors.h): what each model kind accepts,
// raw and typed contents read alike, every malformed input refused naming the tensor, and the
// outputs encoded as tritonclient decodes them.
#include "server/oip_tensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "server/errors.h"

namespace ks = kdeserve::server;
namespace oip = kdeserve::server::oip;
using inference::ModelInferRequest;

namespace {

ks::ModelSpec classifier_spec() {
  ks::ModelSpec s;
  s.name = "t2t_vit_t_24";
  s.kind = ks::ModelKind::kClassifier;
  s.image_size = 224;
  s.num_classes = 1000;
  return s;
}

ks::ModelSpec generator_spec() {
  ks::ModelSpec s;
  s.name = "biggan-deep-128";
  s.kind = ks::ModelKind::kGenerator;
  s.image_size = 128;
  s.num_classes = 1000;
  s.z_dim = 128;
  return s;
}

ks::ModelConfig config_of(const std::string& name, int64_t max_items) {
  ks::ModelConfig c;
  c.name = name;
  c.batching.max_batch_size = 8;
  c.batching.max_items_per_request = max_items;
  return c;
}

template <typename T>
std::string raw_of(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

// Adds an input with raw contents.
void add_raw(ModelInferRequest* r, const std::string& name, const std::string& datatype,
             const std::vector<int64_t>& shape, const std::string& raw) {
  auto* in = r->add_inputs();
  in->set_name(name);
  in->set_datatype(datatype);
  for (int64_t d : shape) in->add_shape(d);
  r->add_raw_input_contents(raw);
}

// The message of the INVALID_ARGUMENT `f` throws ("" when it does not).
template <typename F>
std::string invalid(F&& f) {
  try {
    f();
  } catch (const ks::RequestError& e) {
    EXPECT_EQ(e.kind(), ks::ErrorKind::kInvalidArgument);
    return e.what();
  }
  ADD_FAILURE() << "accepted";
  return "";
}

#define EXPECT_MENTIONS(message, text) \
  EXPECT_NE((message).find(text), std::string::npos) << (message)

std::vector<float> image_values(int64_t batch, float base) {
  std::vector<float> v(static_cast<size_t>(batch * 3 * 224 * 224));
  for (size_t i = 0; i < v.size(); ++i) v[i] = base + static_cast<float>(i % 97) * 0.01F;
  return v;
}

}  // namespace

TEST(OipTensors, ModelInputsAndOutputs) {
  const auto in = oip::model_inputs(classifier_spec());
  ASSERT_EQ(in.size(), 3u);
  EXPECT_EQ(in[2].name, "INPUT");
  EXPECT_EQ(in[2].shape, (std::vector<int64_t>{-1, 3, 224, 224}));
  const auto out = oip::model_outputs(generator_spec());
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{-1, 128, 128, 3}));
  EXPECT_EQ(*oip::datatype_size("FP64"), 8);
  EXPECT_EQ(*oip::datatype_size("BYTES"), 0);
  EXPECT_FALSE(oip::datatype_size("FLOAT").has_value());
}

TEST(OipTensors, RawAndTypedInputReadAlike) {
  const std::vector<float> values = image_values(2, -1.0F);
  ModelInferRequest raw;
  raw.set_model_name("t2t_vit_t_24");
  add_raw(&raw, "INPUT", "FP32", {2, 3, 224, 224}, raw_of(values));
  ModelInferRequest typed;
  auto* in = typed.add_inputs();
  in->set_name("INPUT");
  in->set_datatype("FP32");
  for (int64_t d : {2, 3, 224, 224}) in->add_shape(d);
  in->mutable_contents()->mutable_fp32_contents()->Add(values.begin(), values.end());
  const auto cfg = config_of("t2t_vit_t_24", 8);
  const oip::ClassifyInfer a = oip::check_classify_infer(raw, cfg, classifier_spec());
  const oip::ClassifyInfer b = oip::check_classify_infer(typed, cfg, classifier_spec());
  EXPECT_EQ(a.batch, 2);
  EXPECT_EQ(a.tensors, values);
  EXPECT_EQ(b.tensors, values);
  ASSERT_EQ(a.tensor_seeds.size(), 2u);
  EXPECT_EQ(a.tensor_seeds, b.tensor_seeds);
  EXPECT_NE(a.tensor_seeds[0], a.tensor_seeds[1]) << "a row's seed depends on its values";
  ASSERT_EQ(a.outputs.size(), 2u) << "no outputs requested: every output";
  EXPECT_EQ(a.top_k, 0);
}

TEST(OipTensors, BytesImagesAndClassification) {
  ModelInferRequest r;
  const std::string raw = oip::encode_bytes_elements({"first-file", std::string("a\0b", 3)});
  add_raw(&r, "IMAGE", "BYTES", {2}, raw);
  auto* o = r.add_outputs();
  o->set_name("PROBABILITIES");
  (*o->mutable_parameters())["classification"].set_int64_param(3);
  (*r.mutable_parameters())["attention"].set_string_param("exact");
  const oip::ClassifyInfer c =
      oip::check_classify_infer(r, config_of("t2t_vit_t_24", 8), classifier_spec());
  ASSERT_EQ(c.images.images_size(), 2);
  EXPECT_EQ(c.images.images(0).encoded(), "first-file");
  EXPECT_EQ(c.images.images(1).encoded(), std::string("a\0b", 3));
  EXPECT_EQ(c.top_k, 3);
  EXPECT_EQ(c.attention.value_or(""), "exact");
  ASSERT_EQ(c.outputs.size(), 1u);
  EXPECT_EQ(c.outputs[0].classification, 3);
}

TEST(OipTensors, PixelsBecomeRawImages) {
  std::vector<uint8_t> px(2 * 5 * 7 * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i);
  ModelInferRequest r;
  add_raw(&r, "PIXELS", "UINT8", {2, 5, 7, 3}, raw_of(px));
  const oip::ClassifyInfer c =
      oip::check_classify_infer(r, config_of("t2t_vit_t_24", 8), classifier_spec());
  ASSERT_EQ(c.images.images_size(), 2);
  const auto& second = c.images.images(1).raw();
  EXPECT_EQ(second.height(), 5u);
  EXPECT_EQ(second.width(), 7u);
  EXPECT_EQ(second.data(), raw_of(px).substr(105, 105));
}

TEST(OipTensors, GeneratorInputsBecomeItems) {
  ModelInferRequest r;
  add_raw(&r, "CLASS", "INT32", {2}, raw_of(std::vector<int32_t>{207, 980}));
  add_raw(&r, "SEED", "UINT64", {2}, raw_of(std::vector<uint64_t>{5, 1ULL << 63}));
  add_raw(&r, "TRUNCATION", "FP64", {2}, raw_of(std::vector<double>{0.5, 1.0}));
  const oip::GenerateInfer g =
      oip::check_generate_infer(r, config_of("biggan-deep-128", 4), generator_spec());
  ASSERT_EQ(g.request.items_size(), 2);
  EXPECT_EQ(g.request.items(1).class_id(), 980u);
  EXPECT_EQ(g.request.items(1).seed(), 1ULL << 63);
  EXPECT_DOUBLE_EQ(g.request.items(0).truncation(), 0.5);
  EXPECT_EQ(g.outputs.size(), 3u);

  ModelInferRequest w;
  std::vector<float> weights(2 * 1000, 0.0F);
  weights[3] = 1.0F;
  weights[1000 + 7] = 0.25F;
  weights[1000 + 9] = 0.75F;
  add_raw(&w, "CLASS_WEIGHTS", "FP32", {2, 1000}, raw_of(weights));
  std::vector<float> z(2 * 128, 0.1F);
  add_raw(&w, "Z", "FP32", {2, 128}, raw_of(z));
  (*w.mutable_parameters())["truncation"].set_double_param(0.7);
  const oip::GenerateInfer h =
      oip::check_generate_infer(w, config_of("biggan-deep-128", 4), generator_spec());
  ASSERT_EQ(h.request.items(1).class_weights().weights_size(), 2);
  EXPECT_EQ(h.request.items(1).class_weights().weights(1).class_id(), 9u);
  EXPECT_EQ(h.request.items(0).z().values_size(), 128);
  EXPECT_DOUBLE_EQ(h.request.items(1).truncation(), 0.7);
}

TEST(OipTensors, MalformedRequestsNameTheTensor) {
  const auto cls = config_of("t2t_vit_t_24", 8);
  const auto gen = config_of("biggan-deep-128", 4);
  const ks::ModelSpec cs = classifier_spec(), gs = generator_spec();
  auto classify = [&](const ModelInferRequest& r) {
    return invalid([&] { oip::check_classify_infer(r, cls, cs); });
  };
  auto generate = [&](const ModelInferRequest& r) {
    return invalid([&] { oip::check_generate_infer(r, gen, gs); });
  };
  {
    ModelInferRequest r;
    add_raw(&r, "INPUT", "FP64", {1, 3, 224, 224}, std::string(8 * 3 * 224 * 224, '\0'));
    const std::string m = classify(r);
    EXPECT_MENTIONS(m, "'INPUT'");
    EXPECT_MENTIONS(m, "FP32");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "INPUT", "FP32", {1, 3, 224}, std::string(4 * 3 * 224, '\0'));
    EXPECT_MENTIONS(classify(r), "'INPUT': shape [1,3,224]");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "INPUT", "FP32", {1, 3, 224, 224}, std::string(100, '\0'));
    const std::string m = classify(r);
    EXPECT_MENTIONS(m, "'INPUT'");
    EXPECT_MENTIONS(m, "100 bytes");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "PICTURE", "BYTES", {1}, oip::encode_bytes_elements({"x"}));
    const std::string m = classify(r);
    EXPECT_MENTIONS(m, "unknown input 'PICTURE'");
    EXPECT_MENTIONS(m, "IMAGE, PIXELS, INPUT");
  }
  EXPECT_MENTIONS(classify(ModelInferRequest{}), "no inputs");
  {
    ModelInferRequest r;
    add_raw(&r, "IMAGE", "BYTES", {9}, oip::encode_bytes_elements(std::vector<std::string>(9, "f")));
    const std::string m = classify(r);
    EXPECT_MENTIONS(m, "'IMAGE'");
    EXPECT_MENTIONS(m, "limit of 8");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "IMAGE", "BYTES", {2}, oip::encode_bytes_elements({"a"}));
    EXPECT_MENTIONS(classify(r), "'IMAGE': raw content ends inside the length of element 1");
  }
  {
    ModelInferRequest r;
    std::string raw = oip::encode_bytes_elements({"abc"});
    raw[0] = 50;  // declares 50 bytes, 3 follow
    add_raw(&r, "IMAGE", "BYTES", {1}, raw);
    EXPECT_MENTIONS(classify(r), "'IMAGE': element 0 declares 50 bytes");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "IMAGE", "BYTES", {1}, oip::encode_bytes_elements({"a"}));
    add_raw(&r, "INPUT", "FP32", {1, 3, 224, 224}, raw_of(image_values(1, 0)));
    EXPECT_MENTIONS(classify(r), "IMAGE is given too");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "IMAGE", "BYTES", {1}, oip::encode_bytes_elements({"a"}));
    r.add_outputs()->set_name("SCORES");
    EXPECT_MENTIONS(classify(r), "unknown output 'SCORES'");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "IMAGE", "BYTES", {1}, oip::encode_bytes_elements({"a"}));
    auto* o = r.add_outputs();
    o->set_name("LOGITS");
    (*o->mutable_parameters())["classification"].set_int64_param(1001);
    EXPECT_MENTIONS(classify(r), "'LOGITS': classification 1001 outside [1, 1000]");
  }
  {
    ModelInferRequest r;
    auto* in = r.add_inputs();
    in->set_name("INPUT");
    in->set_datatype("FP32");
    for (int64_t d : {1, 3, 224, 224}) in->add_shape(d);
    in->mutable_contents()->add_fp32_contents(1.0F);
    EXPECT_MENTIONS(classify(r), "'INPUT': contents.fp32_contents has 1 elements");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "INPUT", "FP32", {1, 3, 224, 224}, raw_of(image_values(1, 0)));
    r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1.0F);
    EXPECT_MENTIONS(classify(r), "'INPUT': has typed contents and the request has raw");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "INPUT", "FP32", {1, 3, 224, 224}, raw_of(image_values(1, 0)));
    r.add_raw_input_contents("extra");
    EXPECT_MENTIONS(classify(r), "raw_input_contents has 2 entries for 1 inputs");
  }
  {
    ModelInferRequest r;
    std::vector<float> v = image_values(1, 0);
    v[5] = std::numeric_limits<float>::quiet_NaN();
    add_raw(&r, "INPUT", "FP32", {1, 3, 224, 224}, raw_of(v));
    EXPECT_MENTIONS(classify(r), "'INPUT': element 5 is not finite");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "IMAGE", "BYTES", {1}, oip::encode_bytes_elements({"a"}));
    (*r.mutable_parameters())["attention"].set_int64_param(1);
    EXPECT_MENTIONS(classify(r), "parameter attention must be a string");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "CLASS", "INT64", {1}, raw_of(std::vector<int64_t>{1000}));
    EXPECT_MENTIONS(generate(r), "'CLASS': element 0 is class 1000, outside [0, 1000)");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "CLASS", "INT64", {5}, raw_of(std::vector<int64_t>(5, 1)));
    const std::string m = generate(r);
    EXPECT_MENTIONS(m, "'CLASS'");
    EXPECT_MENTIONS(m, "limit of 4");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "CLASS", "INT64", {2}, raw_of(std::vector<int64_t>{1, 2}));
    add_raw(&r, "SEED", "UINT64", {1}, raw_of(std::vector<uint64_t>{1}));
    EXPECT_MENTIONS(generate(r), "'SEED': batch size 1, other inputs have 2");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "SEED", "UINT64", {1}, raw_of(std::vector<uint64_t>{1}));
    EXPECT_MENTIONS(generate(r), "missing input: CLASS or CLASS_WEIGHTS");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "CLASS", "INT64", {1}, raw_of(std::vector<int64_t>{1}));
    add_raw(&r, "TRUNCATION", "FP32", {1}, raw_of(std::vector<float>{0.0F}));
    EXPECT_MENTIONS(generate(r), "'TRUNCATION': element 0 is 0");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "CLASS", "INT64", {1}, raw_of(std::vector<int64_t>{1}));
    (*r.mutable_parameters())["truncation"].set_double_param(2.0);
    EXPECT_MENTIONS(generate(r), "parameter truncation is 2");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "CLASS_WEIGHTS", "FP32", {1, 1000}, raw_of(std::vector<float>(1000, 0.0F)));
    EXPECT_MENTIONS(generate(r), "'CLASS_WEIGHTS': row 0 sums to");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "CLASS", "INT64", {1}, raw_of(std::vector<int64_t>{1}));
    add_raw(&r, "Z", "FP32", {1, 128}, raw_of(std::vector<float>(128, 1000.0F)));
    EXPECT_MENTIONS(generate(r), "'Z': element 0 is not finite or above 100");
  }
  {
    ModelInferRequest r;
    add_raw(&r, "CLASS", "INT64", {1}, raw_of(std::vector<int64_t>{1}));
    auto* o = r.add_outputs();
    o->set_name("IMAGE");
    (*o->mutable_parameters())["classification"].set_int64_param(2);
    EXPECT_MENTIONS(generate(r), "classification extension applies to a classifier");
  }
}

TEST(OipTensors, ClassifyOutputsAreRawAndClassified) {
  // Two rows of four classes; the ranked response as the model gives it (probability order).
  const std::vector<float> logits = {0.0F, 2.0F, 1.0F, -1.0F, 3.0F, 0.0F, 0.0F, 0.0F};
  kdeserve::v1::ClassifyResponse ranked;
  for (const auto& row : {std::vector<int>{1, 2}, std::vector<int>{0, 1}}) {
    auto* res = ranked.add_results();
    for (int index : row) {
      auto* p = res->add_top_k();
      p->set_index(static_cast<uint32_t>(index));
      p->set_label("c" + std::to_string(index));
    }
  }
  inference::ModelInferResponse out;
  oip::add_classify_outputs(&out, {{"LOGITS", 0}, {"PROBABILITIES", 2}}, logits, 4, ranked);
  ASSERT_EQ(out.outputs_size(), 2);
  ASSERT_EQ(out.raw_output_contents_size(), 2);
  EXPECT_EQ(out.outputs(0).datatype(), "FP32");
  EXPECT_EQ(out.raw_output_contents(0), raw_of(logits));
  EXPECT_EQ(out.outputs(1).datatype(), "BYTES");
  EXPECT_EQ(out.outputs(1).shape(1), 2);
  // Row 0 probabilities: softmax(0, 2, 1, -1).
  const double z = 1 + std::exp(2.0) + std::exp(1.0) + std::exp(-1.0);
  char first[64];
  // The probabilities are float32 outputs: the score is that float, printed in full.
  std::snprintf(first, sizeof first, "%.9g:1:c1",
                static_cast<double>(static_cast<float>(std::exp(2.0) / z)));
  const std::string raw = out.raw_output_contents(1);
  uint32_t n = 0;
  std::memcpy(&n, raw.data(), 4);
  EXPECT_EQ(raw.substr(4, n), std::string(first));
}

TEST(OipTensors, GenerateOutputs) {
  kdeserve::v1::GenerateResponse g;
  for (uint64_t seed : {7u, 9u}) {
    auto* img = g.add_images();
    img->set_data(std::string(2 * 2 * 3, static_cast<char>(seed)));
    img->set_height(2);
    img->set_width(2);
    img->set_seed(seed);
  }
  inference::ModelInferResponse out;
  oip::add_generate_outputs(&out, {{"SEED", 0}, {"IMAGE", 0}, {"PNG", 0}}, g, 2);
  ASSERT_EQ(out.outputs_size(), 3);
  EXPECT_EQ(out.raw_output_contents(0), raw_of(std::vector<uint64_t>{7, 9}));
  EXPECT_EQ(out.raw_output_contents(1), std::string(12, '\x07') + std::string(12, '\x09'));
  EXPECT_EQ(out.outputs(1).shape_size(), 4);
  const std::string& png = out.raw_output_contents(2);
  uint32_t n = 0;
  std::memcpy(&n, png.data(), 4);
  EXPECT_EQ(png.substr(4, 8), "\x89PNG\r\n\x1a\n");
  EXPECT_GT(png.size(), 4 + n) << "two PNG files";
}
