#include "models/attention_plan.h"

#include <ATen/ATen.h>

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

std::string AttentionPlan::describe() const {
  std::ostringstream out;
  bool first = true;
  for (const auto& [name, o] : groups) {
    out << (first ? "" : ", ") << name << "=" << attention::to_string(o.method());
    if (o.method() == attention::Method::kKdeformer) {
      out << "(b=" << o.kdeformer().bucket_size() << ",m=" << o.kdeformer().sample_size()
          << ",r=" << o.kdeformer().num_projections() << ")";
    }
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

at::Tensor run_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const AttentionPlan& plan, const std::string& group, int64_t layer,
                         const ForwardContext& ctx) {
  attention::AttentionReport report;
  at::Tensor out = attention::attention(q, k, v, plan.at(group), ctx.call_for_layer(layer, &report));
  if (ctx.reports != nullptr) ctx.reports->push_back(std::move(report));
  return out;
}

}  // namespace kdeserve::models
