#include "server/engine/model_engine.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include "attention/attention.h"
#include "models/attention_plan.h"
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

namespace {

// A Classify batch's input: every input's rows, [B, 3, S, S] float, and their entry seeds.
struct ClassifyBatch {
  at::Tensor x;
  std::vector<uint64_t> seeds;
  std::vector<int64_t> rows;  // per input
};

ClassifyBatch assemble(const std::vector<ClassifyInput>& inputs, const ModelSpec& spec) {
  const int64_t side = spec.image_size;
  const int64_t per_image = 3 * side * side;
  std::vector<at::Tensor> chunks;  // [n_i, 3, S, S] per input
  ClassifyBatch batch;
  const auto preprocess = km::PreprocessOptions::for_crop(side);
  for (const ClassifyInput& in : inputs) {
    if (in.tensors != nullptr) {
      const int64_t n = static_cast<int64_t>(in.tensors->size()) / per_image;
      TORCH_CHECK(n * per_image == static_cast<int64_t>(in.tensors->size()), "classify: ",
                  in.tensors->size(), " values are not whole [3, ", side, ", ", side, "] images");
      // from_blob does not own the caller's vector: cloned, as the forward may keep views.
      chunks.push_back(
          at::from_blob(const_cast<float*>(in.tensors->data()), {n, 3, side, side}, at::kFloat)
              .clone());
      batch.rows.push_back(n);
    } else {
      std::vector<at::Tensor> images;
      for (const RgbImage& u8 : *in.images) {
        images.push_back(km::normalize_image(tensor_of(u8), preprocess));
      }
      batch.rows.push_back(static_cast<int64_t>(images.size()));
      if (!images.empty()) chunks.push_back(at::stack(images));
    }
    TORCH_CHECK(static_cast<int64_t>(in.seeds->size()) == batch.rows.back(), "classify: ",
                in.seeds->size(), " seeds for ", batch.rows.back(), " images");
    batch.seeds.insert(batch.seeds.end(), in.seeds->begin(), in.seeds->end());
  }
  batch.x = at::cat(chunks);
  return batch;
}

// A Generate batch's input: z [B, z_dim] (owning its values), class vectors and entry seeds.
struct GenerateBatch {
  std::vector<float> z_values;
  at::Tensor z, classes;
  std::vector<uint64_t> seeds;
};

GenerateBatch assemble(const std::vector<GenerateInput>& inputs, const ModelSpec& spec) {
  GenerateBatch batch;
  std::vector<ClassWeights> class_rows;
  for (const GenerateInput& in : inputs) {
    batch.z_values.insert(batch.z_values.end(), in.z->begin(), in.z->end());
    class_rows.insert(class_rows.end(), in.classes->begin(), in.classes->end());
    batch.seeds.insert(batch.seeds.end(), in.seeds->begin(), in.seeds->end());
  }
  const int64_t n = static_cast<int64_t>(class_rows.size());
  TORCH_CHECK(static_cast<int64_t>(batch.z_values.size()) == n * spec.z_dim, "generate: ",
              batch.z_values.size(), " z values for ", n, " items of z_dim ", spec.z_dim);
  batch.z = at::from_blob(batch.z_values.data(), {n, spec.z_dim}, at::kFloat);
  batch.classes = km::class_weight_vector(class_rows, spec.num_classes);
  return batch;
}

}  // namespace

ClassifyBatchResult ModelEngine::classify(const std::vector<ClassifyInput>& inputs,
                                          AttentionMode mode) const {
  return translating([&] {
    ClassifyBatch batch = assemble(inputs, state_->spec);
    km::ForwardContext ctx;
    ctx.entry_seeds = std::move(batch.seeds);
    const km::AttentionPlan& plan = state_->plans.at(mode);
    ClassifyBatchResult result;
    const auto t0 = Clock::now();
    const at::Tensor logits = state_->model->classify(batch.x, plan, ctx);
    result.report.compute_seconds = seconds_since(t0);
    result.report.items = logits.size(0);
    result.report.plan = plan.describe();
    const at::Tensor logits_cpu = logits.to(at::kCPU, at::kFloat).contiguous();
    int64_t row = 0;
    for (size_t k = 0; k < inputs.size(); ++k) {
      const ClassifyInput& in = inputs[k];
      const int64_t n = batch.rows[k];
      ClassifyOutput out;
      try {
        if (in.top_k > 0) {
          for (const km::TopK& t : km::top_k(logits.narrow(0, row, n), in.top_k)) {
            out.ranked.push_back({t.row, t.index, t.probability, t.wnid, t.label});
          }
        }
        if (in.logits) {
          const float* p = logits_cpu.data_ptr<float>() + row * logits_cpu.size(1);
          out.logits.assign(p, p + n * logits_cpu.size(1));
        }
      } catch (...) {
        out.ranked.clear();
        out.logits.clear();
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
    GenerateBatch batch = assemble(inputs, state_->spec);
    km::ForwardContext ctx;
    ctx.entry_seeds = std::move(batch.seeds);
    const km::AttentionPlan& plan = state_->plans.at(mode);
    GenerateBatchResult result;
    const auto t0 = Clock::now();
    const at::Tensor images = state_->model->generate(batch.z, batch.classes, truncation, plan, ctx);
    result.report.compute_seconds = seconds_since(t0);
    const at::Tensor rgb = km::to_uint8_rgb(images).to(at::kCPU);  // [B, H, W, 3]
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

namespace {

// Per-image relative errors of one recorded layer: approximate `a` against exact `e`, both
// [B, H, N, Dv].
void layer_errors(const at::Tensor& a, const at::Tensor& e, const std::string& group,
                  int64_t layer, std::vector<ShadowLayerError>* out) {
  const at::Tensor d = (a - e).to(at::kDouble);
  const at::Tensor ed = e.to(at::kDouble);
  const at::Tensor frob = d.flatten(1).norm(2, {1}) / ed.flatten(1).norm(2, {1}).clamp_min(1e-300);
  // Spectral norms per head: the largest singular value of each [N, Dv] matrix.
  const at::Tensor spec_d = at::linalg_matrix_norm(d, 2, {-2, -1});
  const at::Tensor spec_e = at::linalg_matrix_norm(ed, 2, {-2, -1}).clamp_min(1e-300);
  const at::Tensor spec = std::get<0>((spec_d / spec_e).max(1)).cpu();
  const at::Tensor frob_cpu = frob.cpu();
  for (int64_t b = 0; b < a.size(0); ++b) {
    out->push_back({group, layer, frob_cpu[b].item<double>(), spec[b].item<double>()});
  }
}

// Exact attention on every recorded input of an approximated layer, against the approximation.
bool check_layers(const std::vector<km::RecordedAttention>& recorded,
                  const km::AttentionPlan& plan, const km::AttentionPlan& exact,
                  const km::ForwardContext& ctx, const std::function<bool()>& stop,
                  ShadowResult* result) {
  for (const km::RecordedAttention& r : recorded) {
    // The layer's own softmax scale (a model may set it per layer, as T2T-ViT's tokens do).
    attention::AttentionOptions options = plan.at(r.group);
    if (options.method() == attention::Method::kExact) continue;
    if (stop()) return false;
    options.scale(r.scale);
    attention::AttentionOptions exact_options = exact.at(r.group);
    exact_options.scale(r.scale);
    const at::Tensor a = attention::attention(r.q, r.k, r.v, options,
                                              ctx.call_for_layer(r.layer, nullptr));
    const at::Tensor e = attention::attention(r.q, r.k, r.v, exact_options,
                                              ctx.call_for_layer(r.layer, nullptr));
    layer_errors(a, e, r.group, r.layer, &result->layers);
  }
  return true;
}

// The shadow check shared by both kinds of model: the approximate forward (same seeds, so the
// same outputs) recording each approximated layer's inputs, exact attention on those, the exact
// forward, then `compare(approx output, exact output, result)`.
template <typename Forward, typename Compare>
ShadowResult shadow_check(const std::map<AttentionMode, km::AttentionPlan>& plans,
                          std::vector<uint64_t> seeds, AttentionMode mode,
                          const std::function<bool()>& stop, const Forward& forward,
                          const Compare& compare) {
  ShadowResult result;
  std::vector<km::RecordedAttention> recorded;
  km::ForwardContext ctx;
  ctx.entry_seeds = std::move(seeds);
  ctx.recorded = &recorded;
  const km::AttentionPlan& plan = plans.at(mode);
  const km::AttentionPlan& exact = plans.at(AttentionMode::kExact);
  const at::Tensor approx = forward(plan, ctx);
  ctx.recorded = nullptr;
  if (!check_layers(recorded, plan, exact, ctx, stop, &result)) {
    result.stopped = true;
    return result;
  }
  recorded.clear();
  if (stop()) {
    result.stopped = true;
    return result;
  }
  compare(approx, forward(exact, ctx), &result);
  return result;
}

}  // namespace

ShadowResult ModelEngine::shadow_classify(const std::vector<ClassifyInput>& inputs,
                                          AttentionMode mode,
                                          const std::function<bool()>& stop) const {
  return translating([&] {
    ClassifyBatch batch = assemble(inputs, state_->spec);
    return shadow_check(
        state_->plans, std::move(batch.seeds), mode, stop,
        [&](const km::AttentionPlan& plan, km::ForwardContext& ctx) {
          return state_->model->classify(batch.x, plan, ctx);
        },
        [](const at::Tensor& approx, const at::Tensor& truth, ShadowResult* result) {
          const at::Tensor pa = approx.to(at::kDouble).softmax(-1).cpu();
          const at::Tensor pe = truth.to(at::kDouble).softmax(-1).cpu();
          const at::Tensor agree = pa.argmax(-1).eq(pe.argmax(-1));
          const at::Tensor diff = std::get<0>((pa - pe).abs().max(-1));
          for (int64_t i = 0; i < pa.size(0); ++i) {
            result->top1_agree.push_back(agree[i].item<bool>());
            result->max_probability_difference.push_back(diff[i].item<double>());
          }
        });
  });
}

ShadowResult ModelEngine::shadow_generate(const std::vector<GenerateInput>& inputs,
                                          double truncation, AttentionMode mode,
                                          const std::function<bool()>& stop) const {
  return translating([&] {
    GenerateBatch batch = assemble(inputs, state_->spec);
    return shadow_check(
        state_->plans, std::move(batch.seeds), mode, stop,
        [&](const km::AttentionPlan& plan, km::ForwardContext& ctx) {
          return km::to_uint8_rgb(
              state_->model->generate(batch.z, batch.classes, truncation, plan, ctx));
        },
        [](const at::Tensor& approx, const at::Tensor& truth, ShadowResult* result) {
          const at::Tensor mse =
              (approx.to(at::kDouble) - truth.to(at::kDouble)).pow(2).flatten(1).mean(1).cpu();
          for (int64_t i = 0; i < mse.size(0); ++i) {
            const double m = mse[i].item<double>();
            result->psnr_db.push_back(
                m > 0 ? std::min(kMaxPsnrDb, 10.0 * std::log10(255.0 * 255.0 / m)) : kMaxPsnrDb);
          }
        });
  });
}

}  // namespace kdeserve::server
