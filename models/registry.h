#pragma once
/// The model registry: name → factory, with each model's input/output description and default
/// attention plan. The server and the offline CLI create every model through it.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/attention_plan.h"
#include "models/model_spec.h"

namespace kdeserve::models {

/// How to build a model.
struct LoadOptions {
  /// Converted safetensors weights (tools/convert_checkpoint.py); unset: seeded random weights
  /// (callers must say so loudly: outputs are meaningless).
  std::optional<std::string> weights;
  /// Seed of the random initialisation when there are no weights.
  uint64_t init_seed = 0;
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::Device(c10::DeviceType::CPU);
};

/// A loaded model. Thread-safe for concurrent forward calls (no mutable state).
class Model {
 public:
  virtual ~Model() = default;
  const ModelSpec& spec() const { return spec_; }
  /// The default per-layer-group plan for this model: plan_for(kKdeformer).
  const AttentionPlan& default_plan() const { return plans_.at(attention::Method::kKdeformer); }
  /// The plan of a method: kExact → exact attention in every group; any other method → that
  /// method, with the paper's settings for this model (kdeformer.md §1.7, peers.md tables;
  /// KDEformer: the paper's b with the tuned far-field residual), in the groups the paper
  /// approximates, exact elsewhere (t2t_vit_plan, biggan_plan). Groups
  /// of different plans combine with AttentionPlan::with_group.
  const AttentionPlan& plan_for(attention::Method method) const { return plans_.at(method); }
  /// KDEformer as the paper ran it on this model (Residual::kSampled with the paper's b and m:
  /// t2t_vit_paper_plan, biggan_paper_plan); plan_for(kKdeformer) is the tuned default.
  const AttentionPlan& paper_kdeformer_plan() const { return paper_kdeformer_plan_; }
  /// "file <path>" or "random init (seed N)".
  const std::string& weights_source() const { return weights_source_; }
  bool has_weights() const { return has_weights_; }
  c10::Device device() const { return device_; }

  /// Classifier: images [B, 3, S, S] float (ImageNet-normalised, models/preprocess) →
  /// logits [B, num_classes] float32 on the CPU. Throws c10::Error for a generator.
  virtual at::Tensor classify(const at::Tensor& images, const AttentionPlan& plan,
                              const ForwardContext& ctx) const;
  /// Generator: z [B, z_dim], class_vector [B, num_classes], truncation in (0, 1] →
  /// images [B, 3, R, R] in [−1, 1], float32 on the CPU. Throws c10::Error for a classifier.
  virtual at::Tensor generate(const at::Tensor& z, const at::Tensor& class_vector,
                              double truncation, const AttentionPlan& plan,
                              const ForwardContext& ctx) const;

 protected:
  ModelSpec spec_;
  /// One plan per attention::kAllMethods entry, filled by the subclass's constructor.
  std::map<attention::Method, AttentionPlan> plans_;
  AttentionPlan paper_kdeformer_plan_;
  std::string weights_source_;
  bool has_weights_ = false;
  c10::Device device_ = c10::Device(c10::DeviceType::CPU);
};

/// Every registered model name: the T2T-ViT variants, then biggan-deep-128/256/512.
std::vector<std::string> model_names();

/// The spec of `name`; throws c10::Error listing the registered names when unknown.
ModelSpec model_spec(const std::string& name);

/// Builds `name` and loads its weights (strict) or initialises it from options.init_seed.
std::unique_ptr<Model> create_model(const std::string& name, const LoadOptions& options = {});

}  // namespace kdeserve::models
