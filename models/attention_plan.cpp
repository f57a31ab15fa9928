#include "models/attention_plan.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "attention/attention.h"
#include "attention/random.h"

namespace kdeserve::models {

const attention::AttentionOptions& AttentionPlan::at(const std::string& group) const {
  auto it = groups.find(group);
  if (it == groups.end()) {
    std::string known;
    for (const auto& [name, _] : groups) known += (known.empty() ? "" : ", ") + name;
    TORCH_CHECK(false, "attention plan has no layer group '", group, "' (known: ", known, ")");
  }
  return it->second;
}

AttentionPlan AttentionPlan::with_method(attention::Method method) const {
  AttentionPlan plan = *this;
  for (auto& [_, options] : plan.groups) options.method(method);
  return plan;
}

AttentionPlan AttentionPlan::with_group(const std::string& group,
                                        const attention::AttentionOptions& options) const {
  (void)at(group);  // throws for an unknown group
  AttentionPlan plan = *this;
  plan.groups[group] = options;
  return plan;
}

std::string describe(const attention::AttentionOptions& o) {
  using attention::Method;
  std::ostringstream out;
  out << attention::to_string(o.method());
  switch (o.method()) {
    case Method::kExact:
      return out.str();
    case Method::kKdeformer:
      out << "(b=" << o.kdeformer().bucket_size() << ",m=" << o.kdeformer().sample_size()
          << ",r=" << o.kdeformer().num_projections();
      if (o.kdeformer().residual() == attention::Residual::kControlVariate) out << ",cv";
      if (o.kdeformer().residual() == attention::Residual::kMassCalibrated) out << ",cv-mass";
      if (o.kdeformer().residual() == attention::Residual::kCoreset) out << ",coreset";
      if (o.kdeformer().residual() == attention::Residual::kFittedFarField) out << ",cv-coreset";
      if (o.kdeformer().coreset_fit_rows() > 0) out << ",fit=" << o.kdeformer().coreset_fit_rows();
      if (o.kdeformer().clamp_output()) out << ",clamped";
      if (o.kdeformer().calibration_rows() > 0) {
        out << ",calibrated=" << o.kdeformer().calibration_rows();
      }
      out << ")";
      break;
    case Method::kPerformer:
      // The stabiliser is left out: it changes rounding, not the estimator (and its option is
      // the port's to shape).
      out << "(m=" << o.performer().num_features() << ","
          << (o.performer().orthogonal() ? "orthogonal" : "iid") << ")";
      break;
    case Method::kReformer:
      out << "(bucket=" << o.reformer().bucket_size() << ",hashes=" << o.reformer().num_hashes()
          << "," << (o.reformer().shared_qk() ? "shared_qk" : "keys") << ")";
      break;
    case Method::kScatterBrain: {
      const auto& sb = o.scatterbrain();
      out << "(w=" << sb.local_window() << ",f=" << sb.num_features() << ",";
      if (sb.support() == attention::SparseSupport::kBand) {
        out << "band)";
      } else {
        out << "lsh,r=" << sb.num_projections() << ")";
      }
      break;
    }
    case Method::kHyperAttention: {
      const auto& h = o.hyperattention();
      out << "(b=" << h.block_size() << ",s=" << h.sample_size() << ",r=" << h.num_projections()
          << ",min_seq_len=" << h.min_seq_len() << "," << (h.mask_padding() ? "masked" : "unmasked")
          << (h.bucket_order() == attention::BucketOrder::kGray ? "" : ",reference_order") << ")";
      break;
    }
    case Method::kWildCat:
      out << "(r=" << o.wildcat().rank() << ",bins=" << o.wildcat().num_bins() << ","
          << (o.wildcat().clamp_output() ? "clamped" : "unclamped") << ")";
      break;
    case Method::kThinformer:
      out << "(g=" << o.thinformer().g() << ","
          << (o.thinformer().strided_prethinning() ? "strided" : "padded") << ")";
      break;
  }
  return out.str();
}

std::string AttentionPlan::describe() const {
  std::ostringstream out;
  bool first = true;
  for (const auto& [name, o] : groups) {
    out << (first ? "" : ", ") << name << "=" << models::describe(o);
    first = false;
  }
  return out.str();
}

attention::AttentionCall ForwardContext::call_for_layer(int64_t layer,
                                                        attention::AttentionReport* report) const {
  attention::AttentionCall call;
  call.seed = attention::mix_seed(seed, static_cast<uint64_t>(layer));
  call.entry_seeds = entry_seeds;
  call.report = report;
  return call;
}

void ForwardContext::record(const std::string& group, int64_t layer, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v,
                            const attention::AttentionOptions& options) const {
  if (recorded == nullptr) return;
  const double scale = options.scale().value_or(1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  recorded->push_back({group, layer, q.detach().clone(), k.detach().clone(), v.detach().clone(),
                       scale});
}

at::Tensor run_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const AttentionPlan& plan, const std::string& group, int64_t layer,
                         const ForwardContext& ctx) {
  ctx.record(group, layer, q, k, v, plan.at(group));
  attention::AttentionReport report;
  at::Tensor out = attention::attention(q, k, v, plan.at(group), ctx.call_for_layer(layer, &report));
  if (ctx.reports != nullptr) ctx.reports->push_back(std::move(report));
  return out;
}

}  // namespace kdeserve::models
