// The shadow check of approximate batches (server/shadow.h): picking, scheduling, recording.
#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "server/engine/model_engine.h"
#include "server/service_internal.h"

namespace kdeserve::server {

bool InferenceService::requests_waiting() const {
  if (compute_.pending() > 0) return true;
  for (const auto& h : hosted_) {
    if (h->admitted.load() > 0) return true;
  }
  return false;
}

void InferenceService::declare_shadow_metrics(const Hosted& h) {
  std::vector<std::string> approximate, outcomes;
  std::vector<std::vector<std::string>> groups;
  for (AttentionMode a : h.config.allowed_attention) {
    if (a == AttentionMode::kExact) continue;
    approximate.push_back(to_string(a));
    groups.emplace_back();
    for (const LayerGroupPlan& g : h.engine->plan(a)) {
      if (g.method != attention_method_name(AttentionMode::kExact)) groups.back().push_back(g.group);
    }
  }
  for (ShadowOutcome o : {ShadowOutcome::kRun, ShadowOutcome::kNotSampled, ShadowOutcome::kBusy,
                          ShadowOutcome::kQueue, ShadowOutcome::kPreempted, ShadowOutcome::kBudget,
                          ShadowOutcome::kFailed}) {
    outcomes.push_back(to_string(o));
  }
  metrics_.declare_shadow(h.config.name, h.spec.kind == ModelKind::kClassifier, approximate,
                          groups, outcomes);
}

void InferenceService::after_batch(Hosted& h, const std::vector<std::shared_ptr<Job>>& jobs) {
  if (!h.shadow || jobs.empty()) return;
  const AttentionMode mode = jobs.front()->mode;
  if (mode == AttentionMode::kExact) return;
  if (!h.shadow->pick()) {
    metrics_.shadow_check(h.config.name, to_string(mode), to_string(ShadowOutcome::kNotSampled),
                          0);
    return;
  }
  Hosted* hosted = &h;
  // The jobs are answered; the check keeps them (their model inputs) until it is done.
  if (!shadow_worker_.offer([this, hosted, jobs, mode] { run_shadow(*hosted, jobs, mode); })) {
    metrics_.shadow_check(h.config.name, to_string(mode), to_string(ShadowOutcome::kBusy), 0);
  }
}

void InferenceService::run_shadow(Hosted& h, const std::vector<std::shared_ptr<Job>>& jobs,
                                  AttentionMode mode) {
  const std::string& name = h.config.name;
  const std::string attention = to_string(mode);
  // The responses first: the check starts once gRPC is done with every call of the batch (at
  // most kResponseWait), so its computation never competes with sending them.
  constexpr auto kResponseWait = std::chrono::seconds(2);
  const auto waited = Clock::now();
  for (const auto& j : jobs) {
    while (!j->root().done.load() && !stopping_.load() && Clock::now() - waited < kResponseWait) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  ShadowOutcome outcome = ShadowOutcome::kFailed;
  ShadowResult result;
  double seconds = 0;
  try {
    compute_.run([&] {
      if (stopping_.load() || requests_waiting()) {
        outcome = ShadowOutcome::kQueue;
        return;
      }
      if (!h.shadow->within_budget(Clock::now())) {
        outcome = ShadowOutcome::kBudget;
        return;
      }
      const auto t0 = Clock::now();
      const auto stop = [this] { return stopping_.load() || requests_waiting(); };
      if (h.spec.kind == ModelKind::kClassifier) {
        std::vector<ClassifyInput> inputs;
        for (const auto& j : jobs) {
          inputs.push_back(
              {&j->images, &j->seeds, 0, j->tensors.empty() ? nullptr : &j->tensors, false});
        }
        result = h.engine->shadow_classify(inputs, mode, stop);
      } else {
        std::vector<GenerateInput> inputs;
        for (const auto& j : jobs) inputs.push_back({&j->z, &j->classes, &j->seeds});
        result = h.engine->shadow_generate(inputs, jobs.front()->truncation, mode, stop);
      }
      seconds = seconds_since(t0);
      outcome = result.stopped ? ShadowOutcome::kPreempted : ShadowOutcome::kRun;
    });
  } catch (...) {
    const grpc::Status status =
        status_from_exception(std::current_exception(), name + " shadow check");
    spdlog::warn("{}: shadow check of a {} batch failed: {}", name, attention,
                 status.error_message());
    outcome = ShadowOutcome::kFailed;
  }
  h.shadow->spent(seconds);
  metrics_.shadow_check(name, attention, to_string(outcome), seconds);
  if (outcome != ShadowOutcome::kRun) return;
  double worst = 0;
  for (const ShadowLayerError& e : result.layers) {
    metrics_.shadow_layer_error(name, attention, e.group, e.frobenius, e.spectral);
    worst = std::max(worst, e.frobenius);
  }
  for (size_t i = 0; i < result.top1_agree.size(); ++i) {
    metrics_.shadow_classified(name, attention, result.top1_agree[i],
                               result.max_probability_difference[i]);
  }
  for (double psnr : result.psnr_db) metrics_.shadow_generated(name, attention, psnr);
  spdlog::debug("{}: shadow check of a {} batch: {} layer checks, worst relative error {:.4f}, "
                "{:.3f} s",
                name, attention, result.layers.size(), worst, seconds);
}

}  // namespace kdeserve::server
