#include "models/registry.h"

#include <torch/torch.h>

#include <map>

#include "models/biggan/biggan.h"
#include "models/biggan/options.h"
#include "models/biggan/weights.h"
#include "models/t2t_vit/options.h"
#include "models/t2t_vit/t2t_vit.h"
#include "models/weights/safetensors.h"
#include "models/weights/state_dict.h"

namespace kdeserve::models {
namespace {

bool is_biggan(const std::string& name) { return name.rfind("biggan-deep-", 0) == 0; }

std::string weights_description(const LoadOptions& o) {
  return o.weights ? "file " + *o.weights : "random init (seed " + std::to_string(o.init_seed) + ")";
}

// LibTorch's module initialisers draw from the global generator: seed it explicitly so random
// weights are reproducible (model construction happens once, at start-up).
void seed_initialisation(const LoadOptions& o) { torch::manual_seed(o.init_seed); }

class T2TViTModel final : public Model {
 public:
  T2TViTModel(const std::string& name, const LoadOptions& o) : module_(nullptr) {
    spec_ = model_spec(name);
    for (attention::Method m : attention::kAllMethods) plans_[m] = t2t_vit_plan(m);
    paper_kdeformer_plan_ = t2t_vit_paper_plan();
    weights_source_ = weights_description(o);
    has_weights_ = o.weights.has_value();
    device_ = o.device;
    seed_initialisation(o);
    module_ = T2TViT(t2t_vit_options(name));
    module_->to(o.dtype);  // load into the final dtype: values are rounded once
    if (o.weights) load_state_dict(*module_, SafetensorsFile::open(*o.weights));
    module_->eval();
    module_->to(o.device);
    dtype_ = o.dtype;
  }

  at::Tensor classify(const at::Tensor& images, const AttentionPlan& plan,
                      const ForwardContext& ctx) const override {
    const int64_t s = spec_.image_size;
    TORCH_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) == s &&
                    images.size(3) == s,
                spec_.name, ": images must be [B, 3, ", s, ", ", s, "], got ", images.sizes());
    torch::NoGradGuard no_grad;
    at::Tensor x = images.to(device_, dtype_);
    return module_->forward(x, plan, ctx).to(at::kCPU, at::kFloat);
  }

 private:
  mutable T2TViT module_;
  at::ScalarType dtype_ = at::kFloat;
};

class BigGANModel final : public Model {
 public:
  BigGANModel(const std::string& name, const LoadOptions& o) : module_(nullptr) {
    spec_ = model_spec(name);
    for (attention::Method m : attention::kAllMethods) plans_[m] = biggan_plan(m);
    paper_kdeformer_plan_ = biggan_paper_plan();
    weights_source_ = weights_description(o);
    has_weights_ = o.weights.has_value();
    device_ = o.device;
    seed_initialisation(o);
    module_ = BigGAN(biggan_options(name));
    // The spectral-norm fold is computed in float64 and rounded once to the module's dtype.
    module_->to(o.dtype);
    if (o.weights) load_biggan_weights(*module_, SafetensorsFile::open(*o.weights));
    module_->eval();
    module_->to(o.device);
    dtype_ = o.dtype;
  }

  at::Tensor generate(const at::Tensor& z, const at::Tensor& class_vector, double truncation,
                      const AttentionPlan& plan, const ForwardContext& ctx) const override {
    TORCH_CHECK(z.dim() == 2 && z.size(1) == spec_.z_dim, spec_.name, ": z must be [B, ",
                spec_.z_dim, "], got ", z.sizes());
    TORCH_CHECK(class_vector.dim() == 2 && class_vector.size(0) == z.size(0) &&
                    class_vector.size(1) == spec_.num_classes,
                spec_.name, ": class_vector must be [B, ", spec_.num_classes, "], got ",
                class_vector.sizes());
    TORCH_CHECK(truncation > 0 && truncation <= 1, spec_.name,
                ": truncation must be in (0, 1], got ", truncation);
    torch::NoGradGuard no_grad;
    return module_
        ->forward(z.to(device_, dtype_), class_vector.to(device_, dtype_), truncation, plan, ctx)
        .to(at::kCPU, at::kFloat);
  }

 private:
  mutable BigGAN module_;
  at::ScalarType dtype_ = at::kFloat;
};

}  // namespace

std::string to_string(ModelKind kind) {
  return kind == ModelKind::kClassifier ? "classifier" : "generator";
}

at::Tensor Model::classify(const at::Tensor&, const AttentionPlan&, const ForwardContext&) const {
  TORCH_CHECK(false, spec_.name, " is a ", to_string(spec_.kind), ", not a classifier");
}

at::Tensor Model::generate(const at::Tensor&, const at::Tensor&, double, const AttentionPlan&,
                           const ForwardContext&) const {
  TORCH_CHECK(false, spec_.name, " is a ", to_string(spec_.kind), ", not a generator");
}

std::vector<std::string> model_names() {
  std::vector<std::string> names = t2t_vit_variants();
  for (const std::string& n : biggan_model_names()) names.push_back(n);
  return names;
}

ModelSpec model_spec(const std::string& name) {
  ModelSpec spec;
  spec.name = name;
  if (is_biggan(name)) {
    const BigGANOptions o = biggan_options(name);  // throws for unknown sizes
    spec.kind = ModelKind::kGenerator;
    spec.image_size = output_resolution(o);
    spec.num_classes = o.num_classes();
    spec.z_dim = o.z_dim();
    spec.input = "z [B, " + std::to_string(o.z_dim()) + "] float (truncated normal × truncation), "
                 "class vector [B, " + std::to_string(o.num_classes()) +
                 "] (one-hot or class weights), truncation in (0, 1]";
    spec.output = "image [B, 3, " + std::to_string(spec.image_size) + ", " +
                   std::to_string(spec.image_size) + "] float in [-1, 1] (RGB)";
    return spec;
  }
  const auto variants = t2t_vit_variants();
  if (std::find(variants.begin(), variants.end(), name) == variants.end()) {
    std::string known;
    for (const std::string& n : model_names()) known += (known.empty() ? "" : ", ") + n;
    TORCH_CHECK(false, "unknown model '", name, "' (registered: ", known, ")");
  }
  const T2TViTOptions o = t2t_vit_options(name);
  spec.kind = ModelKind::kClassifier;
  spec.image_size = o.img_size();
  spec.num_classes = o.num_classes();
  spec.input = "image [B, 3, " + std::to_string(o.img_size()) + ", " +
               std::to_string(o.img_size()) + "] float, ImageNet-normalised RGB";
  spec.output = "logits [B, " + std::to_string(o.num_classes()) + "] float (ImageNet-1k classes)";
  return spec;
}

std::unique_ptr<Model> create_model(const std::string& name, const LoadOptions& options) {
  const ModelSpec spec = model_spec(name);
  if (spec.kind == ModelKind::kGenerator) return std::make_unique<BigGANModel>(name, options);
  return std::make_unique<T2TViTModel>(name, options);
}

}  // namespace kdeserve::models
