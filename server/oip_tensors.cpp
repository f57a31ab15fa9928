#include "server/oip_tensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>

#include "server/engine/images.h"
#include "server/errors.h"
#include "server/fnv1a.h"
#include "server/request_validation.h"

namespace kdeserve::server::oip {

namespace v1 = kdeserve::v1;
using inference::InferParameter;
using inference::InferTensorContents;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

namespace {

// Largest element count one input may declare: far above any valid input (the request is at
// most max_message_bytes), low enough that sizes never overflow.
constexpr int64_t kMaxElements = int64_t{1} << 40;

std::string quoted(const std::string& name) { return quote_client_string(name); }

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? "," : "") + std::to_string(shape[i]);
  return text + "]";
}

// One input of the request, its shape checked; data read through the functions below.
struct Input {
  std::string name, datatype;
  std::vector<int64_t> shape;
  int64_t elements = 1;
  const std::string* raw = nullptr;
  const InferTensorContents* contents = nullptr;
  std::string where() const { return "input " + quoted(name); }
};

// Checks one element count of typed contents.
template <typename Field>
const Field& typed(const Input& in, const Field& field, const char* field_name) {
  if (static_cast<int64_t>(field.size()) != in.elements) {
    throw_invalid(in.where() + ": contents." + field_name + " has " +
                  std::to_string(field.size()) + " elements, its shape " +
                  shape_text(in.shape) + " needs " + std::to_string(in.elements));
  }
  return field;
}

// The elements of a fixed-size numeric input, converted to T. Raw bytes are little-endian
// (as on every platform the server builds for).
template <typename T>
std::vector<T> numbers(const Input& in) {
  std::vector<T> out(static_cast<size_t>(in.elements));
  auto from_raw = [&](auto tag) {
    using W = decltype(tag);
    std::vector<W> wire(out.size());
    if (!wire.empty()) std::memcpy(wire.data(), in.raw->data(), wire.size() * sizeof(W));
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<T>(wire[i]);
  };
  auto from_typed = [&](const auto& field, const char* field_name) {
    const auto& values = typed(in, field, field_name);
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<T>(values[static_cast<int>(i)]);
  };
  const std::string& d = in.datatype;
  if (in.raw != nullptr) {
    if (d == "FP32") from_raw(float{});
    else if (d == "FP64") from_raw(double{});
    else if (d == "INT32") from_raw(int32_t{});
    else if (d == "INT64") from_raw(int64_t{});
    else if (d == "UINT64") from_raw(uint64_t{});
    else if (d == "UINT8") from_raw(uint8_t{});
    else throw_invalid(in.where() + ": datatype " + d + " is not read here");
  } else {
    if (d == "FP32") from_typed(in.contents->fp32_contents(), "fp32_contents");
    else if (d == "FP64") from_typed(in.contents->fp64_contents(), "fp64_contents");
    else if (d == "INT32") from_typed(in.contents->int_contents(), "int_contents");
    else if (d == "INT64") from_typed(in.contents->int64_contents(), "int64_contents");
    else if (d == "UINT64") from_typed(in.contents->uint64_contents(), "uint64_contents");
    else if (d == "UINT8") {
      const auto& values = typed(in, in.contents->uint_contents(), "uint_contents");
      for (int i = 0; i < values.size(); ++i) {
        if (values[i] > 255) {
          throw_invalid(in.where() + ": contents.uint_contents[" + std::to_string(i) + "] = " +
                        std::to_string(values[i]) + " is not a UINT8");
        }
        out[static_cast<size_t>(i)] = static_cast<T>(values[i]);
      }
    } else {
      throw_invalid(in.where() + ": datatype " + d + " is not read here");
    }
  }
  return out;
}

// The elements of a BYTES input.
std::vector<std::string> byte_elements(const Input& in) {
  std::vector<std::string> out;
  if (in.raw == nullptr) {
    for (const std::string& e : typed(in, in.contents->bytes_contents(), "bytes_contents")) {
      out.push_back(e);
    }
    return out;
  }
  const std::string& raw = *in.raw;
  size_t pos = 0;
  for (int64_t i = 0; i < in.elements; ++i) {
    if (raw.size() - pos < 4) {
      throw_invalid(in.where() + ": raw content ends inside the length of element " +
                    std::to_string(i) + " (" + std::to_string(raw.size()) + " bytes)");
    }
    uint32_t length = 0;
    for (int b = 3; b >= 0; --b) {
      length = (length << 8) | static_cast<unsigned char>(raw[pos + static_cast<size_t>(b)]);
    }
    pos += 4;
    if (raw.size() - pos < length) {
      throw_invalid(in.where() + ": element " + std::to_string(i) + " declares " +
                    std::to_string(length) + " bytes, " + std::to_string(raw.size() - pos) +
                    " are left");
    }
    out.push_back(raw.substr(pos, length));
    pos += length;
  }
  if (pos != raw.size()) {
    throw_invalid(in.where() + ": " + std::to_string(raw.size() - pos) +
                  " bytes after its " + std::to_string(in.elements) + " elements");
  }
  return out;
}

// The request's inputs: names unique and known, datatypes and ranks as the model says, element
// counts consistent with raw bytes, one batch size, at most one input per group and every
// required group present. Returns them by name.
std::map<std::string, Input> check_inputs(const ModelInferRequest& request,
                                          const std::vector<TensorSpec>& specs,
                                          const ModelConfig& config, int64_t* batch) {
  std::string names;
  for (const TensorSpec& s : specs) names += (names.empty() ? "" : ", ") + s.name;
  const bool raw = request.raw_input_contents_size() > 0;
  if (raw && request.raw_input_contents_size() != request.inputs_size()) {
    throw_invalid("raw_input_contents has " + std::to_string(request.raw_input_contents_size()) +
                  " entries for " + std::to_string(request.inputs_size()) +
                  " inputs (one per input, in order)");
  }
  if (request.inputs_size() == 0) {
    throw_invalid("no inputs (model " + config.name + " takes " + names + ")");
  }
  std::map<std::string, Input> inputs;
  std::map<std::string, std::string> group_used;
  *batch = -1;
  for (int i = 0; i < request.inputs_size(); ++i) {
    const auto& t = request.inputs(i);
    Input in;
    in.name = t.name();
    in.datatype = t.datatype();
    const auto spec = std::find_if(specs.begin(), specs.end(),
                                   [&](const TensorSpec& s) { return s.name == t.name(); });
    if (spec == specs.end()) {
      throw_invalid("unknown input " + quoted(t.name()) + " (model " + config.name +
                    " takes " + names + ")");
    }
    if (inputs.count(t.name())) throw_invalid(in.where() + ": given twice");
    const auto [used, fresh] = group_used.emplace(spec->group, spec->name);
    if (!fresh) {
      throw_invalid(in.where() + ": " + used->second + " is given too; give one of them");
    }
    const bool alt_int32 = spec->datatype == "INT64" && t.datatype() == "INT32";
    const bool alt_fp64 = spec->datatype == "FP32" && spec->name == "TRUNCATION" &&
                          t.datatype() == "FP64";
    if (t.datatype() != spec->datatype && !alt_int32 && !alt_fp64) {
      throw_invalid(in.where() + ": datatype " + quoted(t.datatype()) + ", expected " +
                    spec->datatype + (spec->datatype == "INT64" ? " or INT32" : "") +
                    (spec->name == "TRUNCATION" ? " or FP64" : ""));
    }
    in.shape.assign(t.shape().begin(), t.shape().end());
    if (in.shape.size() != spec->shape.size()) {
      throw_invalid(in.where() + ": shape " + shape_text(in.shape) + " has rank " +
                    std::to_string(in.shape.size()) + ", expected " +
                    shape_text(spec->shape) + " (-1: any size)");
    }
    for (size_t d = 0; d < in.shape.size(); ++d) {
      if (in.shape[d] < 0 || (spec->shape[d] >= 0 && in.shape[d] != spec->shape[d])) {
        throw_invalid(in.where() + ": shape " + shape_text(in.shape) + ", expected " +
                      shape_text(spec->shape) + " (-1: any size)");
      }
      if (in.shape[d] > 0 && in.elements > kMaxElements / in.shape[d]) {
        throw_invalid(in.where() + ": shape " + shape_text(in.shape) + " is too large");
      }
      in.elements *= in.shape[d];
    }
    const int64_t b = in.shape[0];
    if (*batch >= 0 && b != *batch) {
      throw_invalid(in.where() + ": batch size " + std::to_string(b) + ", other inputs have " +
                    std::to_string(*batch));
    }
    *batch = b;
    if (raw) {
      if (t.has_contents()) {
        throw_invalid(in.where() + ": has typed contents and the request has raw_input_contents "
                      "(use one or the other)");
      }
      in.raw = &request.raw_input_contents(i);
      const int64_t size = *datatype_size(t.datatype());
      if (size > 0 && static_cast<int64_t>(in.raw->size()) != in.elements * size) {
        throw_invalid(in.where() + ": raw_input_contents[" + std::to_string(i) + "] has " +
                      std::to_string(in.raw->size()) + " bytes, shape " +
                      shape_text(in.shape) + " of " + t.datatype() + " needs " +
                      std::to_string(in.elements * size));
      }
    } else {
      in.contents = &t.contents();
    }
    inputs.emplace(in.name, std::move(in));
  }
  for (const TensorSpec& s : specs) {
    if (s.required && !group_used.count(s.group)) {
      std::string options;
      for (const TensorSpec& o : specs) {
        if (o.group == s.group) options += (options.empty() ? "" : " or ") + o.name;
      }
      throw_invalid("missing input: " + options + " (model " + config.name + ")");
    }
  }
  if (*batch < 1) throw_invalid("the batch is empty (batch size 0)");
  if (*batch > config.batching.max_items_per_request) {
    throw_invalid(inputs.begin()->second.where() + ": batch size " + std::to_string(*batch) +
                  " is above model " + config.name +
                  "'s limit of " + std::to_string(config.batching.max_items_per_request) +
                  " items per request");
  }
  return inputs;
}

// The requested outputs (none: every output), each known and once, with its classification k.
std::vector<RequestedOutput> check_outputs(const ModelInferRequest& request,
                                           const std::vector<TensorSpec>& specs,
                                           const ModelConfig& config, int64_t classes) {
  std::vector<RequestedOutput> outputs;
  std::string names;
  for (const TensorSpec& s : specs) names += (names.empty() ? "" : ", ") + s.name;
  if (request.outputs_size() == 0) {
    for (const TensorSpec& s : specs) outputs.push_back({s.name, 0});
    return outputs;
  }
  for (const auto& o : request.outputs()) {
    const bool known = std::any_of(specs.begin(), specs.end(),
                                   [&](const TensorSpec& s) { return s.name == o.name(); });
    if (!known) {
      throw_invalid("unknown output " + quoted(o.name()) + " (model " + config.name +
                    " has " + names + ")");
    }
    for (const RequestedOutput& r : outputs) {
      if (r.name == o.name()) throw_invalid("output " + quoted(o.name()) + ": requested twice");
    }
    RequestedOutput r{o.name(), 0};
    const auto it = o.parameters().find("classification");
    if (it != o.parameters().end()) {
      const InferParameter& p = it->second;
      if (p.parameter_choice_case() != InferParameter::kInt64Param &&
          p.parameter_choice_case() != InferParameter::kUint64Param) {
        throw_invalid("output " + quoted(o.name()) + ": parameter classification must be an "
                      "integer (int64_param)");
      }
      const int64_t k = p.parameter_choice_case() == InferParameter::kInt64Param
                            ? p.int64_param()
                            : static_cast<int64_t>(std::min<uint64_t>(p.uint64_param(), 1 << 30));
      if (classes == 0) {
        throw_invalid("output " + quoted(o.name()) + ": the classification extension applies "
                      "to a classifier's LOGITS or PROBABILITIES");
      }
      if (k < 1 || k > classes) {
        throw_invalid("output " + quoted(o.name()) + ": classification " + std::to_string(k) +
                      " outside [1, " + std::to_string(classes) + "]");
      }
      r.classification = k;
    }
    outputs.push_back(r);
  }
  return outputs;
}

std::optional<std::string> attention_parameter(const ModelInferRequest& request) {
  const auto it = request.parameters().find("attention");
  if (it == request.parameters().end()) return std::nullopt;
  if (it->second.parameter_choice_case() != InferParameter::kStringParam) {
    throw_invalid("parameter attention must be a string (string_param), e.g. \"exact\"");
  }
  return it->second.string_param();
}

}  // namespace

std::optional<int64_t> datatype_size(const std::string& d) {
  static const std::map<std::string, int64_t> sizes = {
      {"BOOL", 1},  {"UINT8", 1}, {"UINT16", 2}, {"UINT32", 4}, {"UINT64", 8},
      {"INT8", 1},  {"INT16", 2}, {"INT32", 4},  {"INT64", 8},  {"FP16", 2},
      {"BF16", 2},  {"FP32", 4},  {"FP64", 8},   {"BYTES", 0}};
  const auto it = sizes.find(d);
  if (it == sizes.end()) return std::nullopt;
  return it->second;
}

std::vector<TensorSpec> model_inputs(const ModelSpec& spec) {
  if (spec.kind == ModelKind::kClassifier) {
    const int64_t s = spec.image_size;
    return {{"IMAGE", "BYTES", {-1}, "image", true},
            {"PIXELS", "UINT8", {-1, -1, -1, 3}, "image", true},
            {"INPUT", "FP32", {-1, 3, s, s}, "image", true}};
  }
  return {{"CLASS", "INT64", {-1}, "class", true},
          {"CLASS_WEIGHTS", "FP32", {-1, spec.num_classes}, "class", true},
          {"SEED", "UINT64", {-1}, "noise", false},
          {"Z", "FP32", {-1, spec.z_dim}, "noise", false},
          {"TRUNCATION", "FP32", {-1}, "truncation", false}};
}

std::vector<TensorSpec> model_outputs(const ModelSpec& spec) {
  if (spec.kind == ModelKind::kClassifier) {
    return {{"LOGITS", "FP32", {-1, spec.num_classes}, "", false},
            {"PROBABILITIES", "FP32", {-1, spec.num_classes}, "", false}};
  }
  const int64_t r = spec.image_size;
  return {{"IMAGE", "UINT8", {-1, r, r, 3}, "", false},
          {"PNG", "BYTES", {-1}, "", false},
          {"SEED", "UINT64", {-1}, "", false}};
}

ClassifyInfer check_classify_infer(const ModelInferRequest& request, const ModelConfig& config,
                                   const ModelSpec& spec) {
  ClassifyInfer out;
  out.attention = attention_parameter(request);
  out.outputs = check_outputs(request, model_outputs(spec), config, spec.num_classes);
  for (const RequestedOutput& o : out.outputs) out.top_k = std::max(out.top_k, o.classification);
  const auto inputs = check_inputs(request, model_inputs(spec), config, &out.batch);
  out.images.set_model(config.name);
  if (const auto it = inputs.find("IMAGE"); it != inputs.end()) {
    std::vector<std::string> files = byte_elements(it->second);
    for (size_t i = 0; i < files.size(); ++i) {
      if (files[i].empty()) {
        throw_invalid(it->second.where() + ": element " + std::to_string(i) + " is empty");
      }
      out.images.add_images()->set_encoded(std::move(files[i]));
    }
  } else if (const auto px = inputs.find("PIXELS"); px != inputs.end()) {
    const Input& in = px->second;
    const int64_t h = in.shape[1], w = in.shape[2];
    if (h == 0 || w == 0) throw_invalid(in.where() + ": zero height or width");
    if (h * w > config.max_image_pixels) {
      throw_invalid(in.where() + ": " + std::to_string(h * w) + " pixels per image, more than " +
                    std::to_string(config.max_image_pixels) + " allowed");
    }
    const size_t per_image = static_cast<size_t>(h * w * 3);
    std::string typed_bytes;
    const std::string* bytes = in.raw;
    if (bytes == nullptr) {
      const std::vector<uint8_t> values = numbers<uint8_t>(in);
      typed_bytes.assign(values.begin(), values.end());
      bytes = &typed_bytes;
    }
    for (int64_t i = 0; i < out.batch; ++i) {
      auto* raw = out.images.add_images()->mutable_raw();
      raw->set_height(static_cast<uint32_t>(h));
      raw->set_width(static_cast<uint32_t>(w));
      raw->set_channels(3);
      raw->set_data(bytes->substr(static_cast<size_t>(i) * per_image, per_image));
    }
  } else {
    const Input& in = inputs.at("INPUT");
    out.tensors = numbers<float>(in);
    for (size_t i = 0; i < out.tensors.size(); ++i) {
      // Finite and bounded: a preprocessed image lies within a few units of 0, and one row's
      // overflow must not turn a shared batch non-finite.
      if (!std::isfinite(out.tensors[i]) || std::fabs(out.tensors[i]) > kMaxAbsLatent) {
        throw_invalid(in.where() + ": element " + std::to_string(i) +
                      " is not finite or above " + std::to_string(int(kMaxAbsLatent)) +
                      " in magnitude");
      }
    }
    const size_t per_row = out.tensors.size() / static_cast<size_t>(out.batch);
    for (int64_t i = 0; i < out.batch; ++i) {
      out.tensor_seeds.push_back(fnv1a(std::string_view(
          reinterpret_cast<const char*>(out.tensors.data() + static_cast<size_t>(i) * per_row),
          per_row * sizeof(float))));
    }
  }
  return out;
}

GenerateInfer check_generate_infer(const ModelInferRequest& request, const ModelConfig& config,
                                   const ModelSpec& spec) {
  GenerateInfer out;
  out.attention = attention_parameter(request);
  out.outputs = check_outputs(request, model_outputs(spec), config, 0);
  int64_t batch = 0;
  const auto inputs = check_inputs(request, model_inputs(spec), config, &batch);
  v1::GenerateRequest& g = out.request;
  g.set_model(config.name);
  g.set_format(v1::IMAGE_FORMAT_RAW_RGB8);
  for (int64_t i = 0; i < batch; ++i) g.add_items();
  auto item = [&](size_t i) { return g.mutable_items(static_cast<int>(i)); };
  if (const auto it = inputs.find("CLASS"); it != inputs.end()) {
    const std::vector<int64_t> ids = numbers<int64_t>(it->second);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= spec.num_classes) {
        throw_invalid(it->second.where() + ": element " + std::to_string(i) + " is class " +
                      std::to_string(ids[i]) + ", outside [0, " +
                      std::to_string(spec.num_classes) + ")");
      }
      item(i)->set_class_id(static_cast<uint32_t>(ids[i]));
    }
  } else {
    const Input& in = inputs.at("CLASS_WEIGHTS");
    const std::vector<float> w = numbers<float>(in);
    const size_t c = static_cast<size_t>(spec.num_classes);
    for (size_t i = 0; i < static_cast<size_t>(batch); ++i) {
      double sum = 0;
      auto* weights = item(i)->mutable_class_weights();
      for (size_t k = 0; k < c; ++k) {
        const float v = w[i * c + k];
        if (!std::isfinite(v) || v < 0) {
          throw_invalid(in.where() + ": row " + std::to_string(i) +
                        ": weights must be finite and >= 0");
        }
        sum += v;
        if (v > 0) {
          auto* cw = weights->add_weights();
          cw->set_class_id(static_cast<uint32_t>(k));
          cw->set_weight(v);
        }
      }
      if (!(sum > 0) || sum > kMaxClassWeightSum) {
        throw_invalid(in.where() + ": row " + std::to_string(i) + " sums to " +
                      std::to_string(sum) + ", must be in (0, " +
                      std::to_string(int(kMaxClassWeightSum)) + "]");
      }
    }
  }
  if (const auto it = inputs.find("SEED"); it != inputs.end()) {
    const std::vector<uint64_t> seeds = numbers<uint64_t>(it->second);
    for (size_t i = 0; i < seeds.size(); ++i) item(i)->set_seed(seeds[i]);
  } else if (const auto z = inputs.find("Z"); z != inputs.end()) {
    const std::vector<float> values = numbers<float>(z->second);
    const size_t d = static_cast<size_t>(spec.z_dim);
    for (size_t i = 0; i < values.size(); ++i) {
      if (!std::isfinite(values[i]) || std::fabs(values[i]) > kMaxAbsLatent) {
        throw_invalid(z->second.where() + ": element " + std::to_string(i) +
                      " is not finite or above " + std::to_string(int(kMaxAbsLatent)) +
                      " in magnitude");
      }
      item(i / d)->mutable_z()->add_values(values[i]);
    }
  }
  double truncation = kDefaultTruncation;
  if (const auto p = request.parameters().find("truncation"); p != request.parameters().end()) {
    if (p->second.parameter_choice_case() != InferParameter::kDoubleParam) {
      throw_invalid("parameter truncation must be a number (double_param)");
    }
    truncation = p->second.double_param();
    if (!(truncation > 0 && truncation <= 1)) {
      throw_invalid("parameter truncation is " + std::to_string(truncation) +
                    ", must be in (0, 1]");
    }
  }
  std::vector<double> truncations(static_cast<size_t>(batch), truncation);
  if (const auto it = inputs.find("TRUNCATION"); it != inputs.end()) {
    truncations = numbers<double>(it->second);
    for (size_t i = 0; i < truncations.size(); ++i) {
      if (!(truncations[i] > 0 && truncations[i] <= 1)) {
        throw_invalid(it->second.where() + ": element " + std::to_string(i) + " is " +
                      std::to_string(truncations[i]) + ", must be in (0, 1]");
      }
    }
  }
  for (size_t i = 0; i < truncations.size(); ++i) item(i)->set_truncation(truncations[i]);
  return out;
}

void add_raw_output(ModelInferResponse* response, const std::string& name,
                    const std::string& datatype, const std::vector<int64_t>& shape,
                    std::string raw) {
  auto* t = response->add_outputs();
  t->set_name(name);
  t->set_datatype(datatype);
  for (int64_t d : shape) t->add_shape(d);
  response->add_raw_output_contents(std::move(raw));
}

std::string encode_bytes_elements(const std::vector<std::string>& elements) {
  std::string raw;
  for (const std::string& e : elements) {
    const uint32_t n = static_cast<uint32_t>(e.size());
    for (int b = 0; b < 4; ++b) raw.push_back(static_cast<char>((n >> (8 * b)) & 0xff));
    raw += e;
  }
  return raw;
}

void add_classify_outputs(ModelInferResponse* response,
                          const std::vector<RequestedOutput>& outputs,
                          const std::vector<float>& logits, int64_t classes,
                          const v1::ClassifyResponse& ranked) {
  const int64_t batch = static_cast<int64_t>(logits.size()) / classes;
  // Softmax per row in float64, max-shifted.
  std::vector<float> probabilities(logits.size());
  for (int64_t r = 0; r < batch; ++r) {
    const float* row = logits.data() + r * classes;
    const float top = *std::max_element(row, row + classes);
    double sum = 0;
    for (int64_t k = 0; k < classes; ++k) sum += std::exp(double(row[k]) - top);
    for (int64_t k = 0; k < classes; ++k) {
      probabilities[static_cast<size_t>(r * classes + k)] =
          static_cast<float>(std::exp(double(row[k]) - top) / sum);
    }
  }
  for (const RequestedOutput& o : outputs) {
    const std::vector<float>& values = o.name == "LOGITS" ? logits : probabilities;
    if (o.classification == 0) {
      add_raw_output(response, o.name, "FP32", {batch, classes},
                     std::string(reinterpret_cast<const char*>(values.data()),
                                 values.size() * sizeof(float)));
      continue;
    }
    // Triton's classification extension: "<value>:<index>:<label>", most probable first.
    std::vector<std::string> elements;
    char score[32];
    for (int64_t r = 0; r < batch; ++r) {
      const auto& top = ranked.results(static_cast<int>(r)).top_k();
      for (int64_t k = 0; k < o.classification; ++k) {
        const auto& c = top.Get(static_cast<int>(k));
        std::snprintf(score, sizeof score, "%.9g",
                      static_cast<double>(values[static_cast<size_t>(r * classes + c.index())]));
        elements.push_back(std::string(score) + ":" + std::to_string(c.index()) +
                           (c.label().empty() ? "" : ":" + c.label()));
      }
    }
    add_raw_output(response, o.name, "BYTES", {batch, o.classification},
                   encode_bytes_elements(elements));
  }
}

void add_generate_outputs(ModelInferResponse* response,
                          const std::vector<RequestedOutput>& outputs,
                          const v1::GenerateResponse& generated, int64_t side) {
  const int64_t batch = generated.images_size();
  for (const RequestedOutput& o : outputs) {
    if (o.name == "IMAGE") {
      std::string pixels;
      pixels.reserve(static_cast<size_t>(batch * side * side * 3));
      for (const auto& img : generated.images()) pixels += img.data();
      add_raw_output(response, o.name, "UINT8", {batch, side, side, 3}, std::move(pixels));
    } else if (o.name == "PNG") {
      std::vector<std::string> files;
      for (const auto& img : generated.images()) {
        RgbImage rgb;
        rgb.height = img.height();
        rgb.width = img.width();
        rgb.pixels.assign(img.data().begin(), img.data().end());
        files.push_back(encode_png(rgb));
      }
      add_raw_output(response, o.name, "BYTES", {batch}, encode_bytes_elements(files));
    } else {
      std::vector<uint64_t> seeds;
      for (const auto& img : generated.images()) seeds.push_back(img.seed());
      add_raw_output(response, o.name, "UINT64", {batch},
                     std::string(reinterpret_cast<const char*>(seeds.data()),
                                 seeds.size() * sizeof(uint64_t)));
    }
  }
}

}  // namespace kdeserve::server::oip
