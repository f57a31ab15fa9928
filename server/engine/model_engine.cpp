#include "server/engine/model_engine.h"

#include <ATen/ATen.h>

#include <chrono>
#include <map>

#include "models/biggan/noise.h"
#include "models/preprocess/image.h"
#include "models/preprocess/labels.h"
#include "models/registry.h"
#include "server/engine/translate.h"

namespace kdeserve::server {

namespace km = kdeserve::models;
using engine_detail::current_translated;
using engine_detail::translating;
using Clock = std::chrono::steady_clock;

namespace {

constexpr double kWarmUpTruncation = 0.4;

attention::Method to_method(AttentionMode mode) {
  switch (mode) {
    case AttentionMode::kExact:
      return attention::Method::kExact;
    case AttentionMode::kKdeformer:
      return attention::Method::kKdeformer;
    case AttentionMode::kPerformer:
      return attention::Method::kPerformer;
    case AttentionMode::kReformer:
      return attention::Method::kReformer;
    case AttentionMode::kScatterBrain:
      return attention::Method::kScatterBrain;
    case AttentionMode::kHyperAttention:
      return attention::Method::kHyperAttention;
    case AttentionMode::kWildCat:
      return attention::Method::kWildCat;
    case AttentionMode::kThinformer:
      return attention::Method::kThinformer;
  }
  TORCH_CHECK(false, "unknown attention mode ", static_cast<int>(mode));
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A view of an RgbImage as uint8 [H, W, 3] (no copy; the image outlives the tensor).
at::Tensor tensor_of(const RgbImage& image) {
  return at::from_blob(const_cast<uint8_t*>(image.pixels.data()), {image.height, image.width, 3},
                       at::kByte);
}

}  // namespace

struct ModelEngine::State {
  std::unique_ptr<km::Model> model;
  ModelSpec spec;
  std::map<AttentionMode, km::AttentionPlan> plans;  // every mode
};

std::vector<float> truncated_noise(uint64_t seed, double truncation, int64_t z_dim) {
  return translating([&] {
    const at::Tensor z =
        km::truncated_noise_sample(std::vector<uint64_t>{seed}, truncation, z_dim).contiguous();
    const float* p = z.data_ptr<float>();
    return std::vector<float>(p, p + z.numel());
  });
}

std::string attention_method_name(AttentionMode mode) {
  return translating([&] { return attention::to_string(to_method(mode)); });
}

ModelEngine::ModelEngine(const std::string& name, const EngineLoadOptions& options)
    : state_(std::make_unique<State>()) {
  translating([&] {
    km::LoadOptions load;
    load.weights = options.weights;
    load.init_seed = options.init_seed;
    load.device = c10::Device(options.device);
    state_->model = km::create_model(name, load);
    state_->spec = registered_model_spec(name);
    for (AttentionMode mode : kAllAttentionModes) {
      state_->plans[mode] = state_->model->plan_for(to_method(mode));
    }
    if (options.paper_kdeformer) {
      state_->plans[AttentionMode::kKdeformer] = state_->model->paper_kdeformer_plan();
    }
  });
}

ModelEngine::~ModelEngine() = default;

const ModelSpec& ModelEngine::spec() const { return state_->spec; }
const std::string& ModelEngine::weights_source() const { return state_->model->weights_source(); }
bool ModelEngine::has_weights() const { return state_->model->has_weights(); }

std::vector<LayerGroupPlan> ModelEngine::plan(AttentionMode mode) const {
  std::vector<LayerGroupPlan> groups;
  for (const auto& [group, options] : state_->plans.at(mode).groups) {
    LayerGroupPlan g;
    g.group = group;
    g.method = attention::to_string(options.method());
    g.settings = km::describe(options);
    if (options.method() == attention::Method::kKdeformer) {
      g.kdeformer = true;
      g.bucket_size = options.kdeformer().bucket_size();
      g.sample_size = options.kdeformer().sample_size();
      g.num_projections = options.kdeformer().num_projections();
    }
    groups.push_back(std::move(g));
  }
  return groups;
}

std::string ModelEngine::describe_plan(AttentionMode mode) const {
  return state_->plans.at(mode).describe();
}

void ModelEngine::warm_up(AttentionMode mode) const {
  translating([&] {
    const ModelSpec& spec = state_->spec;
    km::ForwardContext ctx;
    ctx.entry_seeds = {0};
    if (spec.kind == ModelKind::kClassifier) {
      const at::Tensor x = at::zeros({1, 3, spec.image_size, spec.image_size});
      (void)state_->model->classify(x, state_->plans.at(mode), ctx);
    } else {
      const at::Tensor z =
          km::truncated_noise_sample(std::vector<uint64_t>{0}, kWarmUpTruncation, spec.z_dim);
      const at::Tensor c = km::one_hot_class_vector({0}, spec.num_classes);
      (void)state_->model->generate(z, c, kWarmUpTruncation, state_->plans.at(mode), ctx);
    }
  });
}

ClassifyBatchResult ModelEngine::classify(const std::vector<ClassifyInput>& inputs,
                                          AttentionMode mode) const {
  return translating([&] {
    std::vector<at::Tensor> images;
    km::ForwardContext ctx;
    const auto preprocess = km::PreprocessOptions::for_crop(state_->spec.image_size);
    for (const ClassifyInput& in : inputs) {
      for (const RgbImage& u8 : *in.images) {
        images.push_back(km::normalize_image(tensor_of(u8), preprocess));
      }
      ctx.entry_seeds.insert(ctx.entry_seeds.end(), in.seeds->begin(), in.seeds->end());
    }
    const km::AttentionPlan& plan = state_->plans.at(mode);
    ClassifyBatchResult result;
    const auto t0 = Clock::now();
    const at::Tensor logits = state_->model->classify(at::stack(images), plan, ctx);
    result.report.compute_seconds = seconds_since(t0);
    result.report.items = static_cast<int64_t>(images.size());
    result.report.plan = plan.describe();
    int64_t row = 0;
    for (const ClassifyInput& in : inputs) {
      const int64_t n = static_cast<int64_t>(in.images->size());
      ClassifyOutput out;
      try {
        for (const km::TopK& t : km::top_k(logits.narrow(0, row, n), in.top_k)) {
          out.ranked.push_back({t.row, t.index, t.probability, t.wnid, t.label});
        }
      } catch (...) {
        out.ranked.clear();
        out.error = current_translated();
      }
      row += n;
      result.outputs.push_back(std::move(out));
    }
    return result;
  });
}

GenerateBatchResult ModelEngine::generate(const std::vector<GenerateInput>& inputs,
                                          double truncation, AttentionMode mode) const {
  return translating([&] {
    const ModelSpec& spec = state_->spec;
    std::vector<float> z_values;
    std::vector<ClassWeights> class_rows;
    km::ForwardContext ctx;
    for (const GenerateInput& in : inputs) {
      z_values.insert(z_values.end(), in.z->begin(), in.z->end());
      class_rows.insert(class_rows.end(), in.classes->begin(), in.classes->end());
      ctx.entry_seeds.insert(ctx.entry_seeds.end(), in.seeds->begin(), in.seeds->end());
    }
    const int64_t batch = static_cast<int64_t>(class_rows.size());
    TORCH_CHECK(static_cast<int64_t>(z_values.size()) == batch * spec.z_dim,
                "generate: ", z_values.size(), " z values for ", batch, " items of z_dim ",
                spec.z_dim);
    const at::Tensor z = at::from_blob(z_values.data(), {batch, spec.z_dim}, at::kFloat);
    const at::Tensor classes = km::class_weight_vector(class_rows, spec.num_classes);
    const km::AttentionPlan& plan = state_->plans.at(mode);
    GenerateBatchResult result;
    const auto t0 = Clock::now();
    const at::Tensor images = state_->model->generate(z, classes, truncation, plan, ctx);
    result.report.compute_seconds = seconds_since(t0);
    const at::Tensor rgb = km::to_uint8_rgb(images);  // [B, H, W, 3]
    result.report.items = rgb.size(0);
    result.report.plan = plan.describe();
    for (int64_t i = 0; i < rgb.size(0); ++i) {
      const at::Tensor img = rgb[i].contiguous();
      RgbImage out;
      out.height = img.size(0);
      out.width = img.size(1);
      const uint8_t* p = img.data_ptr<uint8_t>();
      out.pixels.assign(p, p + img.numel());
      result.images.push_back(std::move(out));
    }
    return result;
  });
}

}  // namespace kdeserve::server
