#pragma once
/// One hosted model in the server's engine: built from the registry, its attention plan per
/// mode, warm-up, and batched Classify / Generate forwards, behind plain C++ types (see
/// server/engine/engine.h for why). A ModelEngine is built, warmed up and run on the compute
/// thread (server/executor.h); its const accessors are safe from any thread once it is built.

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "server/config.h"
#include "server/engine/engine.h"
#include "server/engine/images.h"

namespace kdeserve::server {

/// How to build a model (models::LoadOptions).
struct EngineLoadOptions {
  /// Converted safetensors weights; unset: seeded random weights.
  std::optional<std::string> weights;
  /// Seed of the random initialisation when there are no weights.
  uint64_t init_seed = 0;
  /// "cpu", "cuda" or "cuda:N".
  std::string device = "cpu";
  /// The kdeformer mode runs the paper's settings (models::Model::paper_kdeformer_plan) instead
  /// of the tuned default plan.
  bool paper_kdeformer = false;
};

/// One layer group of an attention plan, as ModelInfo lists it.
struct LayerGroupPlan {
  std::string group;       ///< e.g. "t2t_layer1", "blocks", "self_attention"
  std::string method;      ///< attention::to_string(Method): "exact", "kdeformer", …
  /// The method with its settings (models::describe), e.g. "performer(m=49,orthogonal)".
  std::string settings;
  bool kdeformer = false;  ///< the method is KDEformer: the sizes below are set
  /// KDEformer only (zero otherwise): bucket size b, sample size m, projections r.
  int64_t bucket_size = 0, sample_size = 0, num_projections = 0;
};

/// attention::to_string of the method `mode` runs: the library's name, which to_string(mode)
/// must equal (the names of the config, metrics and logs).
std::string attention_method_name(AttentionMode mode);

/// How one batch was computed: what the service counts (metrics) and reports (responses).
struct BatchReport {
  int64_t items = 0;           ///< images in the forward
  double compute_seconds = 0;  ///< the model forward, on the compute thread
  std::string plan;            ///< the plan that ran, AttentionPlan::describe()
};

/// One ranked class of one image (models::TopK).
struct RankedClass {
  int64_t row = 0;           ///< image of the request (0-based)
  int64_t index = 0;         ///< class index
  double probability = 0.0;  ///< softmax probability, computed in float64
  std::string wnid, label;   ///< ImageNet wnid and label (empty unless 1000 classes)
};

/// One request's share of a Classify batch (pointers into the caller's request, valid for the
/// call).
struct ClassifyInput {
  const std::vector<RgbImage>* images = nullptr;  ///< uint8 [S, S, 3] each, S = image_size
  const std::vector<uint64_t>* seeds = nullptr;   ///< attention entry seed per image
  int64_t top_k = 5;  ///< classes per image, 0 ≤ top_k ≤ classes (0: no ranking)
  /// Instead of images (when set): preprocessed float32 [n, 3, S, S] row-major, already
  /// normalised with the ImageNet mean/std, used as is.
  const std::vector<float>* tensors = nullptr;
  bool logits = false;  ///< also return every logit (ClassifyOutput::logits)
};

/// One request's result in a Classify batch.
struct ClassifyOutput {
  /// images · top_k entries, ordered by row then rank (probability descending).
  std::vector<RankedClass> ranked;
  /// With ClassifyInput::logits: float32 [n, classes] row-major.
  std::vector<float> logits;
  /// Set (and ranked empty) when ranking this request failed; the others are unaffected.
  std::exception_ptr error;
};

struct ClassifyBatchResult {
  std::vector<ClassifyOutput> outputs;  ///< one per ClassifyInput, in order
  BatchReport report;
};

/// (class id, weight ≥ 0) pairs of one Generate item; weights sum to > 0.
using ClassWeights = std::vector<std::pair<int64_t, double>>;

/// One request's (or request part's) share of a Generate batch (pointers valid for the call).
struct GenerateInput {
  const std::vector<float>* z = nullptr;               ///< [n, z_dim] row-major
  const std::vector<ClassWeights>* classes = nullptr;  ///< n rows
  const std::vector<uint64_t>* seeds = nullptr;        ///< n attention entry seeds
};

struct GenerateBatchResult {
  /// uint8 [R, R, 3] per item of every input, in input order.
  std::vector<RgbImage> images;
  BatchReport report;
};

/// One approximated attention layer of one image in a shadow check: the layer's approximate
/// output against exact attention on the same inputs (the ones the approximate forward gave it).
struct ShadowLayerError {
  std::string group;  ///< layer group, e.g. "t2t_layer1"
  int64_t layer = 0;  ///< attention layer number in the forward
  double frobenius = 0;  ///< ‖A − E‖_F / ‖E‖_F over the image's heads
  double spectral = 0;   ///< the largest over heads of ‖A − E‖₂ / ‖E‖₂
};

/// A shadow check of one batch: what approximate attention cost against exact attention.
struct ShadowResult {
  /// `stop` returned true between two steps: the check ended early, the fields are partial.
  bool stopped = false;
  std::vector<ShadowLayerError> layers;  ///< every image × approximated layer
  /// Classifier, per image: the approximate top-1 class equals the exact one.
  std::vector<bool> top1_agree;
  /// Classifier, per image: max over classes of |p_approx − p_exact| (softmax probabilities).
  std::vector<double> max_probability_difference;
  /// Generator, per image: PSNR in dB of the approximate 8-bit image against the exact one
  /// (identical images: kMaxPsnrDb).
  std::vector<double> psnr_db;
};

/// The PSNR reported for identical images.
inline constexpr double kMaxPsnrDb = 100.0;

/// BigGAN's truncated noise for one item: truncation · N(0, 1) truncated to [−2, 2], drawn from
/// a generator seeded by `seed` (models/biggan/noise.h) → [z_dim] float32.
/// Throws LibTorchError unless 0 < truncation ≤ 1 and z_dim ≥ 1.
std::vector<float> truncated_noise(uint64_t seed, double truncation, int64_t z_dim);

class ModelEngine {
 public:
  /// Builds `name` from the registry and loads its weights (strict) or initialises it from
  /// options.init_seed. Throws LibTorchError (or std::exception) when it cannot.
  ModelEngine(const std::string& name, const EngineLoadOptions& options);
  ~ModelEngine();
  ModelEngine(const ModelEngine&) = delete;
  ModelEngine& operator=(const ModelEngine&) = delete;

  const ModelSpec& spec() const;
  /// "file <path>" or "random init (seed N)".
  const std::string& weights_source() const;
  bool has_weights() const;

  /// The plan of a mode, one entry per layer group: exact → exact attention in every group;
  /// any other → that method, with the paper's settings for the model (kdeformer: the tuned
  /// far field, or the paper's with EngineLoadOptions::paper_kdeformer), where the paper
  /// approximates, exact elsewhere (models::Model::plan_for).
  std::vector<LayerGroupPlan> plan(AttentionMode mode) const;
  /// The plan of a mode as text: "t2t_layer1=kdeformer(b=32,m=0,r=7,cv,clamped), blocks=exact".
  std::string describe_plan(AttentionMode mode) const;

  /// One forward of a single zero image (classifier) or seed-0 item (generator) with `mode`.
  void warm_up(AttentionMode mode) const;

  /// One Classify batch: every input's images normalised (ImageNet mean/std) and stacked into
  /// [B, 3, S, S] float (or its preprocessed tensors), one forward with `mode`'s plan, then
  /// each input's top-k of its rows (and its logits when asked).
  ClassifyBatchResult classify(const std::vector<ClassifyInput>& inputs, AttentionMode mode) const;

  /// The shadow check of a Classify batch that ran `mode` (not exact): the approximate forward
  /// again (same seeds, so the same outputs) recording each approximated layer's inputs, exact
  /// attention on those inputs, and the exact forward. `stop` is asked between steps (layers
  /// included); when it returns true the check ends with ShadowResult::stopped.
  ShadowResult shadow_classify(const std::vector<ClassifyInput>& inputs, AttentionMode mode,
                               const std::function<bool()>& stop) const;
  /// The same for a Generate batch.
  ShadowResult shadow_generate(const std::vector<GenerateInput>& inputs, double truncation,
                               AttentionMode mode, const std::function<bool()>& stop) const;

  /// One Generate batch: z [B, z_dim] and class vectors [B, num_classes] of every input, one
  /// forward at `truncation` with `mode`'s plan → images in [−1, 1] → 8-bit RGB.
  GenerateBatchResult generate(const std::vector<GenerateInput>& inputs, double truncation,
                               AttentionMode mode) const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace kdeserve::server
