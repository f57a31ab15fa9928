// The Inference service's model side: loading and warm-up, batch execution, response filling.
// The tensor work itself is the engine's (server/engine/model_engine.h), on the compute thread.
#include <spdlog/spdlog.h>

#include <random>

#include "server/call_accounting.h"
#include "server/engine/images.h"
#include "server/engine/model_engine.h"
#include "server/isolation.h"
#include "server/service_internal.h"

namespace kdeserve::server {

v1::AttentionMode to_proto(AttentionMode mode) {
  switch (mode) {
    case AttentionMode::kExact:
      return v1::ATTENTION_MODE_EXACT;
    case AttentionMode::kKdeformer:
      return v1::ATTENTION_MODE_KDEFORMER;
    case AttentionMode::kPerformer:
      return v1::ATTENTION_MODE_PERFORMER;
    case AttentionMode::kReformer:
      return v1::ATTENTION_MODE_REFORMER;
    case AttentionMode::kScatterBrain:
      return v1::ATTENTION_MODE_SCATTERBRAIN;
    case AttentionMode::kHyperAttention:
      return v1::ATTENTION_MODE_HYPERATTENTION;
    case AttentionMode::kWildCat:
      return v1::ATTENTION_MODE_WILDCAT;
    case AttentionMode::kThinformer:
      return v1::ATTENTION_MODE_THINFORMER;
  }
  return v1::ATTENTION_MODE_UNSPECIFIED;
}

std::optional<AttentionMode> from_proto(v1::AttentionMode mode) {
  for (AttentionMode m : kAllAttentionModes) {
    if (to_proto(m) == mode) return m;
  }
  return std::nullopt;
}

uint64_t draw_seed() {
  static std::mutex mutex;
  static std::mt19937_64 rng(std::random_device{}());
  std::lock_guard<std::mutex> lock(mutex);
  return rng();
}

namespace {

std::string new_request_id() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t prefix = draw_seed() & 0xffffffffULL;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%08llx-%08llx", static_cast<unsigned long long>(prefix),
                static_cast<unsigned long long>(++counter));
  return buf;
}

}  // namespace

std::string request_id_of(const grpc::CallbackServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  const auto it = md.find("x-request-id");
  if (it != md.end() && !it->second.empty() && it->second.size() <= 128) {
    std::string id(it->second.data(), it->second.size());
    bool printable = true;
    for (char c : id) printable = printable && c > 32 && c < 127;
    if (printable) return id;
  }
  return new_request_id();
}

Clock::time_point steady_deadline(const grpc::CallbackServerContext* ctx) {
  const auto deadline = ctx->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return Clock::time_point::max();
  const auto left = deadline - std::chrono::system_clock::now();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(left);
}

std::shared_ptr<InferenceService::Job> make_job(Metrics& metrics,
                                                grpc::CallbackServerContext* context,
                                                const std::string& rpc) {
  auto job = std::make_shared<InferenceService::Job>();
  job->metrics = &metrics;
  job->context = context;
  job->reactor = new CallReactor(job);  // deletes itself in OnDone
  job->rpc = rpc;
  job->request_id = request_id_of(context);
  job->deadline = steady_deadline(context);
  metrics.add_inflight(1);
  return job;
}

void CallReactor::OnCancel() {
  std::shared_ptr<InferenceService::Job> held;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    held = job_;
  }
  InferenceService::Job& job = *held;
  job.cancelled = true;
  // A queued request leaves the queue now; one being decoded stops at its next image.
  if (job.hosted != nullptr && job.hosted->batcher) job.hosted->batcher->reap();
}

void CallReactor::OnDone() {
  std::shared_ptr<InferenceService::Job> job;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job = std::move(job_);
  }
  job->on_done();
  delete this;
}

void InferenceService::Job::release_request() {
  if (free_request) {
    free_request();
  } else {
    context->GetRpcAllocatorState()->FreeRequest();
  }
}

void InferenceService::Job::finish(const grpc::Status& status) noexcept {
  if (finished.exchange(true)) return;
  reservation.release();
  if (parent) {
    parent->part_done(*this, status);
    return;
  }
  grpc::Status answer = status;
  if (answer.ok() && respond) {
    try {
      answer = respond();
    } catch (...) {
      answer = status_from_exception(std::current_exception(), rpc + " response");
    }
  }
  {
    std::lock_guard<std::mutex> lock(sent_mutex);
    sent = answer;
  }
  reactor->Finish(answer);
}

void InferenceService::Job::on_done() noexcept {
  std::lock_guard<std::mutex> lock(sent_mutex);
  try {
    const double latency = seconds_since(start);
    // What the client received: after a cancellation (by the client, or by gRPC at the
    // deadline) the status the server sent, if any, never reached it.
    grpc::StatusCode code = sent.error_code();
    if (context->IsCancelled()) code = cancelled_call_code(context->deadline());
    const std::string name = code_name(code);
    const std::string attention = mode_known ? to_string(mode) : "";
    // Unknown model names share one label value: clients must not create series.
    const std::string label = !model_label.empty() ? model_label
                              : server_level        ? ""
                                                    : "unknown";
    metrics->request_done(label, rpc, name, attention, latency);
    if (code == grpc::StatusCode::INVALID_ARGUMENT) {
      metrics->rejected(label, "invalid");
    } else if (code == grpc::StatusCode::UNAVAILABLE) {
      metrics->rejected(label, "unavailable");
    }
    metrics->add_inflight(-1);
    if (inference && hosted != nullptr) {
      hosted->stats.request_done(code == grpc::StatusCode::OK, latency);
    }
    std::string message = code == sent.error_code() ? sent.error_message() : "";
    if (code != sent.error_code()) {
      message = std::string(code == grpc::StatusCode::DEADLINE_EXCEEDED ? "deadline passed"
                                                                        : "cancelled by the client") +
                " (the server answered " + code_name(sent.error_code()) + ")";
    }
    log_access({request_id, rpc, model_label, items, attention, name, latency, context->peer(),
                code == grpc::StatusCode::OK ? "" : message});
  } catch (...) {
  }
  done = true;
}

void InferenceService::Job::part_done(Job& part, const grpc::Status& status) noexcept {
  bool last = false;
  {
    std::lock_guard<std::mutex> lock(parts_mutex);
    if (!status.ok() && parts_error.ok()) parts_error = status;
    if (status.ok()) {
      for (size_t k = 0; k < part.item_index.size(); ++k) {
        part_images[static_cast<size_t>(part.item_index[k])] =
            part.own_response.images(static_cast<int>(k));
      }
      parts_queue = std::max(parts_queue, part.own_response.timing().queue_seconds());
      parts_compute += part.own_response.timing().compute_seconds();
      parts_batch = std::max(parts_batch, part.own_response.timing().batch_size());
      parts_plan = part.own_response.attention_plan();
    }
    last = --parts_remaining == 0;
  }
  if (!last) return;
  if (!parts_error.ok()) {
    finish(parts_error);
    return;
  }
  try {
    v1::GenerateResponse* r = generate_response;
    r->set_model(model_label);
    for (auto& img : part_images) *r->add_images() = std::move(img);
    r->set_attention(to_proto(mode));
    r->set_attention_plan(parts_plan);
    r->mutable_timing()->set_queue_seconds(parts_queue);
    r->mutable_timing()->set_compute_seconds(parts_compute);
    r->mutable_timing()->set_batch_size(parts_batch);
    r->set_request_id(request_id);
    finish(grpc::Status::OK);
  } catch (...) {
    finish(status_from_exception(std::current_exception(), "Generate response"));
  }
}

void InferenceService::load_models() {
  for (auto& hp : hosted_) {
    Hosted& h = *hp;
    const auto t0 = Clock::now();
    EngineLoadOptions options;
    options.weights = h.config.weights;
    options.init_seed = h.config.init_seed;
    options.device = h.config.device;
    options.paper_kdeformer = h.config.kdeformer_settings == KdeformerSettings::kPaper;
    // Loading and warm-up run on the compute thread, like every batch (server/executor.h).
    compute_.run([&] { h.engine = std::make_unique<ModelEngine>(h.config.name, options); });
    const double load_s = seconds_since(t0);
    if (!h.engine->has_weights()) {
      spdlog::warn(
          "*** WARNING: model {} has no weights file and runs on SEEDED RANDOM WEIGHTS ({}). Its "
          "outputs are MEANINGLESS. Convert the checkpoint with tools/convert_checkpoint.py and "
          "set models[].weights or --model-weights {}=FILE. ***",
          h.config.name, h.engine->weights_source(), h.config.name);
    }
    const auto t1 = Clock::now();
    compute_.run([&] {
      for (AttentionMode mode : h.config.allowed_attention) h.engine->warm_up(mode);
    });
    const double warm_s = seconds_since(t1);
    metrics_.set_load_seconds(h.config.name, load_s, warm_s);
    if (h.shadow) declare_shadow_metrics(h);

    BatcherOptions bo;
    bo.max_batch_size = h.config.batching.max_batch_size;
    bo.max_queue_delay = std::chrono::milliseconds(h.config.batching.max_queue_delay_ms);
    bo.max_queue_length = h.config.batching.max_queue_length;
    bo.max_queue_bytes = h.config.batching.max_queue_bytes;
    using TaskT = Batcher<std::shared_ptr<Job>>::Task;
    Batcher<std::shared_ptr<Job>>::Hooks hooks;
    Hosted* hosted = &h;
    auto drop = [this, hosted](TaskT& t, DropReason reason) {
      // The batcher sees "cancelled" where the client's own deadline cancelled the call.
      if (reason == DropReason::kCancelled) reason = t.payload->death();
      metrics_.rejected(hosted->config.name,
                        reason == DropReason::kShutdown ? "unavailable" : to_string(reason));
      t.payload->finish(
          reason == DropReason::kDeadline
              ? to_status(ErrorKind::kDeadlineExceeded,
                          "the deadline passed while the request was queued")
          : reason == DropReason::kCancelled
              ? to_status(ErrorKind::kCancelled, "cancelled while queued")
              : to_status(ErrorKind::kUnavailable,
                          "the server shut down before the request could run"));
    };
    hooks.run = [this, hosted, drop](std::vector<TaskT>& batch) {
      compute_.run([&] {
        // Every hosted model shares the compute thread, so a batch may have waited here behind
        // another model's: deadlines and cancellations are checked again, and the queue time
        // runs until now.
        const auto start = Clock::now();
        std::vector<TaskT> live;
        for (TaskT& t : batch) {
          if (t.deadline <= start) {
            drop(t, DropReason::kDeadline);
          } else if (t.cancelled && t.cancelled()) {
            drop(t, DropReason::kCancelled);
          } else {
            live.push_back(std::move(t));
          }
        }
        batch = std::move(live);  // hooks.fail then finishes only the live ones
        if (batch.empty()) return;
        std::vector<std::shared_ptr<Job>> jobs;
        for (TaskT& t : batch) {
          const double queued = std::chrono::duration<double>(start - t.enqueued).count();
          metrics_.queued(hosted->config.name, queued);
          hosted->stats.queued(queued);
          auto* timing = t.payload->classify_response
                             ? t.payload->classify_response->mutable_timing()
                             : t.payload->generate_response->mutable_timing();
          timing->set_queue_seconds(queued);
          jobs.push_back(t.payload);
        }
        run_isolated(*hosted, jobs);
        after_batch(*hosted, jobs);
      });
    };
    hooks.drop = drop;
    hooks.fail = [hosted](std::vector<TaskT>& batch, std::exception_ptr error) {
      const grpc::Status status = status_from_exception(error, hosted->config.name + " forward");
      for (TaskT& t : batch) t.payload->finish(status);
    };
    hooks.depth_changed = [this, hosted](size_t depth, int64_t bytes) {
      hosted->admitted = depth;
      metrics_.set_queue_depth(hosted->config.name, static_cast<double>(depth),
                               static_cast<double>(bytes));
    };
    h.batcher = std::make_unique<Batcher<std::shared_ptr<Job>>>(bo, std::move(hooks));
    h.ready = true;
    metrics_.set_model_ready(h.config.name, true);
    spdlog::info(
        "model {} ready: {} on {}, load {:.2f} s, warm-up {:.2f} s, default attention {}: {}",
        h.config.name, h.engine->weights_source(), h.config.device, load_s, warm_s,
        to_string(h.config.default_attention), h.engine->describe_plan(h.config.default_attention));
  }
  ready_ = true;
}

void InferenceService::shutdown(Clock::time_point deadline) {
  ready_ = false;
  stopping_ = true;
  shadow_worker_.stop();
  // Admitted requests still decoding are queued (or answered) before the batchers stop.
  decode_pool_.stop();
  for (auto& h : hosted_) {
    if (h->batcher) h->batcher->shutdown(deadline);
    if (h->ready.exchange(false)) metrics_.set_model_ready(h->config.name, false);
  }
}

void InferenceService::run_isolated(Hosted& h, std::vector<std::shared_ptr<Job>>& jobs) {
  run_isolating(
      jobs,
      [&](std::vector<std::shared_ptr<Job>>& batch) {
        if (h.spec.kind == ModelKind::kClassifier) {
          run_classify(h, batch);
        } else {
          run_generate(h, batch);
        }
      },
      [&](const std::shared_ptr<Job>& job, std::exception_ptr error) {
        job->finish(status_from_exception(error, h.config.name + " forward"));
      },
      [&](const std::vector<std::shared_ptr<Job>>& batch, std::exception_ptr error) {
        spdlog::warn("{}: a batch of {} requests failed ({}); recomputing it in halves so that "
                     "only the failing request fails",
                     h.config.name, batch.size(),
                     status_from_exception(error, h.config.name + " forward").error_message());
      });
}

// The fields every Classify/Generate response carries about how it was computed.
template <typename Response>
void fill_common(Response* r, v1::AttentionMode mode, const std::string& plan_text, double compute,
                 int64_t batch, const std::string& request_id) {
  r->set_attention(mode);
  r->set_attention_plan(plan_text);
  r->mutable_timing()->set_compute_seconds(compute);
  r->mutable_timing()->set_batch_size(static_cast<uint32_t>(batch));
  r->set_request_id(request_id);
}

void InferenceService::run_classify(Hosted& h, std::vector<std::shared_ptr<Job>>& jobs) {
  std::vector<ClassifyInput> inputs;
  for (const auto& j : jobs) {
    inputs.push_back({&j->images, &j->seeds, j->top_k,
                      j->tensors.empty() ? nullptr : &j->tensors, j->want_logits});
  }
  const AttentionMode mode = jobs.front()->mode;
  // Normalisation, the forward and the ranking: tensor math, on this compute thread.
  const ClassifyBatchResult result = h.engine->classify(inputs, mode);
  const BatchReport& report = result.report;
  metrics_.batch_done(h.config.name, to_string(mode), report.items, report.compute_seconds);
  h.stats.batch_done(report.items, report.compute_seconds);
  for (size_t k = 0; k < jobs.size(); ++k) {
    const auto& j = jobs[k];
    try {
      const ClassifyOutput& output = result.outputs[k];
      if (output.error) std::rethrow_exception(output.error);
      v1::ClassifyResponse* r = j->classify_response;
      r->set_model(h.config.name);
      for (size_t i = 0; i < j->seeds.size(); ++i) r->add_results();
      if (j->want_logits) j->logits = output.logits;
      for (const RankedClass& t : output.ranked) {
        auto* p = r->mutable_results(static_cast<int>(t.row))->add_top_k();
        p->set_index(static_cast<uint32_t>(t.index));
        p->set_wnid(t.wnid);
        p->set_label(t.label);
        p->set_probability(static_cast<float>(t.probability));
      }
      fill_common(r, to_proto(mode), report.plan, report.compute_seconds, report.items,
                  j->request_id);
      j->finish(grpc::Status::OK);
    } catch (...) {
      j->finish(status_from_exception(std::current_exception(), "Classify response"));
    }
  }
}

void InferenceService::run_generate(Hosted& h, std::vector<std::shared_ptr<Job>>& jobs) {
  std::vector<GenerateInput> inputs;
  for (const auto& j : jobs) inputs.push_back({&j->z, &j->classes, &j->seeds});
  const AttentionMode mode = jobs.front()->mode;
  const double truncation = jobs.front()->truncation;
  const GenerateBatchResult result = h.engine->generate(inputs, truncation, mode);
  const BatchReport& report = result.report;
  metrics_.batch_done(h.config.name, to_string(mode), report.items, report.compute_seconds);
  h.stats.batch_done(report.items, report.compute_seconds);
  const size_t z_dim = static_cast<size_t>(h.spec.z_dim);
  size_t next_row = 0;
  for (const auto& j : jobs) {
    const size_t first_row = next_row;  // this job's images in the batch
    next_row += j->classes.size();
    try {
      v1::GenerateResponse* r = j->generate_response;
      r->set_model(h.config.name);
      for (size_t i = 0; i < j->classes.size(); ++i) {
        const RgbImage& img = result.images.at(first_row + i);
        auto* out = r->add_images();
        if (j->format == v1::IMAGE_FORMAT_PNG) {
          out->set_data(encode_png(img));
        } else {
          out->set_data(reinterpret_cast<const char*>(img.pixels.data()), img.pixels.size());
        }
        out->set_format(j->format);
        out->set_height(static_cast<uint32_t>(img.height));
        out->set_width(static_cast<uint32_t>(img.width));
        out->set_seed(j->seeds[i]);
        const float* zp = j->z.data() + i * z_dim;
        out->mutable_z()->Add(zp, zp + z_dim);
        out->set_truncation(j->truncation);
      }
      fill_common(r, to_proto(mode), report.plan, report.compute_seconds, report.items,
                  j->request_id);
      j->finish(grpc::Status::OK);
    } catch (...) {
      j->finish(status_from_exception(std::current_exception(), "Generate response"));
    }
  }
}

}  // namespace kdeserve::server
