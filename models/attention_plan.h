#pragma once
/// Which attention each layer group of a model runs, and the per-call context of a forward pass.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "attention/call.h"
#include "attention/options.h"

namespace kdeserve::models {

/// Layer-group name → attention options (e.g. "t2t_layer1", "t2t_layer2", "blocks",
/// "self_attention"). Defaults come from each model; callers override groups per call.
struct AttentionPlan {
  std::map<std::string, attention::AttentionOptions> groups;

  /// The options of `group`; throws c10::Error naming the known groups when absent.
  const attention::AttentionOptions& at(const std::string& group) const;
  /// A copy with every group switched to `method` (other settings kept).
  AttentionPlan with_method(attention::Method method) const;
  /// A copy with `group` running `options` (the other groups kept): how a plan mixes methods
  /// per layer group, e.g. t2t_layer1 from the WildCat plan and t2t_layer2 from KDEformer's.
  /// Throws c10::Error naming the known groups when `group` is not one of them.
  AttentionPlan with_group(const std::string& group,
                           const attention::AttentionOptions& options) const;
  /// "blocks=exact, t2t_layer1=kdeformer(b=32,m=98,r=7)" — for logs, responses and model info.
  std::string describe() const;
};

/// One group's method and the settings that define its budget, e.g. "exact",
/// "kdeformer(b=32,m=98,r=7)", "performer(m=49,orthogonal)",
/// "reformer(bucket=49,hashes=2,keys)", "scatterbrain(w=49,f=48,band)",
/// "hyperattention(b=32,s=98,r=7,min_seq_len=0,masked)", "wildcat(r=224,bins=224,clamped)",
/// "thinformer(g=2,strided)".
std::string describe(const attention::AttentionOptions& options);

/// One attention call's inputs, kept for offline study (the budget chooser, bench/plan_budget).
struct RecordedAttention {
  std::string group;
  int64_t layer = 0;
  at::Tensor q, k, v;  ///< [B, H, Nq, D], [B, H, Nk, D], [B, H, Nk, Dv]
  double scale = 1.0;  ///< the softmax scale the call used
};

/// Per-call context of a model forward pass.
struct ForwardContext {
  /// Base seed of the call's random draws (each attention layer mixes in its own index).
  uint64_t seed = 0;
  /// Optional per-image seeds (size B), so an image's output never depends on its batch.
  std::vector<uint64_t> entry_seeds;
  /// When set, every attention call appends its report here (in forward order).
  std::vector<attention::AttentionReport>* reports = nullptr;
  /// When set, every attention call appends its inputs here (in forward order).
  std::vector<RecordedAttention>* recorded = nullptr;

  /// The AttentionCall for attention layer number `layer` of the model (seed mixed with it).
  attention::AttentionCall call_for_layer(int64_t layer, attention::AttentionReport* report) const;
  /// Appends one call's inputs to `recorded` when set.
  void record(const std::string& group, int64_t layer, const at::Tensor& q, const at::Tensor& k,
              const at::Tensor& v, const attention::AttentionOptions& options) const;
};

/// Runs attention for one layer with the plan's options for `group`, appending its report to
/// ctx.reports when set. q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] → [B, H, Nq, Dv].
at::Tensor run_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const AttentionPlan& plan, const std::string& group, int64_t layer,
                         const ForwardContext& ctx);

}  // namespace kdeserve::models
