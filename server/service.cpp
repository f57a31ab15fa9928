// The Inference service's RPC handlers: validation, request building, submission, model info.
#include "server/service.h"

#include <malloc.h>

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>

#include "server/engine/images.h"
#include "server/engine/model_engine.h"
#include "server/fnv1a.h"
#include "server/request_validation.h"
#include "server/service_internal.h"

namespace kdeserve::server {

namespace {
// Freeing a message at least this large gives malloc's free pages back to the system.
constexpr size_t kTrimAfterMessageBytes = 8 << 20;

// What a queued job (or part) holds for the model: crops, z, class rows, seeds.
int64_t retained_bytes(const InferenceService::Job& job) {
  int64_t bytes = static_cast<int64_t>(job.z.size() * sizeof(float) +
                                       job.classes.size() * 2 * sizeof(double) +
                                       job.seeds.size() * sizeof(uint64_t));
  for (const RgbImage& img : job.images) bytes += static_cast<int64_t>(img.pixels.size());
  return bytes;
}

// Resident set size from /proc/self/statm (0 where it cannot be read).
double resident_mib() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  if (!(statm >> pages >> resident)) return 0.0;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1 << 20);
}

// The compute thread's idle trim (server/executor.h), timed and logged at debug.
ComputeExecutor::Options compute_options() {
  ComputeExecutor::Options o;
  o.trim = [] {
    const bool log = spdlog::should_log(spdlog::level::debug);
    const double before = log ? resident_mib() : 0.0;
    const auto start = std::chrono::steady_clock::now();
    malloc_trim(0);
    if (log) {
      const double ms = std::chrono::duration<double, std::milli>(
                            std::chrono::steady_clock::now() - start).count();
      spdlog::debug("idle malloc_trim: {:.1f} ms, RSS {:.0f} -> {:.0f} MiB", ms, before,
                    resident_mib());
    }
  };
  return o;
}
}  // namespace

InferenceService::InferenceService(const ServerConfig& config, Metrics& metrics)
    : config_(config),
      metrics_(metrics),
      compute_(compute_options()),
      decode_pool_(static_cast<int>(config.decode_threads), "kdeserve-decode") {
  SetMessageAllocatorFor_Classify(&classify_allocator_);
  SetMessageAllocatorFor_Generate(&generate_allocator_);
  for (const ModelConfig& m : config_.models) {
    auto h = std::make_unique<Hosted>();
    h->config = m;
    h->spec = registered_model_spec(m.name);
    metrics_.set_model_ready(m.name, false);
    metrics_.set_queue_depth(m.name, 0, 0);
    metrics_.set_queue_capacity(m.name, static_cast<double>(m.batching.max_queue_length),
                                static_cast<double>(m.batching.max_queue_bytes));
    std::vector<std::string> codes;
    for (grpc::StatusCode code :
         {grpc::StatusCode::OK, grpc::StatusCode::INVALID_ARGUMENT,
          grpc::StatusCode::RESOURCE_EXHAUSTED, grpc::StatusCode::DEADLINE_EXCEEDED,
          grpc::StatusCode::CANCELLED, grpc::StatusCode::UNAVAILABLE, grpc::StatusCode::INTERNAL}) {
      codes.push_back(code_name(code));
    }
    metrics_.declare_model(m.name, h->spec.kind == ModelKind::kClassifier ? "Classify" : "Generate",
                           codes);
    metrics_.declare_model(m.name, "ModelInfer", codes);
    if (m.shadow.fraction > 0) {
      h->shadow = std::make_unique<ShadowSampler>(m.shadow, std::chrono::steady_clock::now());
    }
    hosted_.push_back(std::move(h));
  }
}

InferenceService::~InferenceService() { shutdown(); }

InferenceService::Hosted& InferenceService::find(const std::string& name) {
  for (auto& h : hosted_) {
    if (h->config.name == name) return *h;
  }
  std::string list;
  for (auto& h : hosted_) list += (list.empty() ? "" : ", ") + h->config.name;
  throw_not_found("unknown model " + quote_client_string(name) + " (hosted: " + list + ")");
}

bool InferenceService::admit(Hosted& h, const std::shared_ptr<Job>& job, int64_t slots,
                             int64_t bytes) {
  if (stopping_.load()) throw_unavailable("the server is shutting down");
  if (!h.ready.load() || !h.batcher) throw_unavailable("model " + h.config.name + " is not ready");
  SubmitResult result;
  job->reservation = h.batcher->admit(slots, bytes, &result);
  switch (result) {
    case SubmitResult::kAccepted:
      return true;
    case SubmitResult::kQueueFull:
      metrics_.rejected(h.config.name, "queue_full");
      job->finish(to_status(ErrorKind::kResourceExhausted,
                            "queue of model " + h.config.name + " is full (" +
                                std::to_string(h.config.batching.max_queue_length) +
                                " requests); retry later"));
      return false;
    case SubmitResult::kQueueBytesFull:
      metrics_.rejected(h.config.name, "queue_bytes_full");
      job->finish(to_status(ErrorKind::kResourceExhausted,
                            "queue of model " + h.config.name + " holds too many bytes (" +
                                std::to_string(bytes) + " more would exceed max_queue_bytes " +
                                std::to_string(h.config.batching.max_queue_bytes) +
                                "); retry later"));
      return false;
    case SubmitResult::kShutdown:
      break;
  }
  throw_unavailable("the server is shutting down");
}

void InferenceService::enqueue(Hosted& h, const std::shared_ptr<Job>& job,
                               std::vector<std::shared_ptr<Job>> parts) {
  using TaskT = Batcher<std::shared_ptr<Job>>::Task;
  std::vector<TaskT> tasks;
  Job* root = job.get();
  for (auto& part : parts) {
    TaskT task;
    task.items = part->items;
    task.key = to_string(part->mode);
    if (h.spec.kind == ModelKind::kGenerator) {
      char buf[40];
      std::snprintf(buf, sizeof buf, "|t=%.17g", part->truncation);
      task.key += buf;
    }
    task.deadline = root->deadline;
    task.cancelled = [root] { return root->cancelled.load(); };
    task.bytes = retained_bytes(*part);
    task.payload = std::move(part);
    tasks.push_back(std::move(task));
  }
  if (h.batcher->enqueue(job->reservation, std::move(tasks)) != SubmitResult::kAccepted) {
    metrics_.rejected(h.config.name, "unavailable");
    job->finish(to_status(ErrorKind::kUnavailable, "the server is shutting down"));
    return;
  }
  // Cancelled while it was being prepared: its slot is freed now, not when a batch forms.
  if (job->cancelled.load()) h.batcher->reap();
}

grpc::ServerUnaryReactor* InferenceService::Classify(grpc::CallbackServerContext* context,
                                                     const v1::ClassifyRequest* request,
                                                     v1::ClassifyResponse* response) {
  auto job = make_job(metrics_, context, "Classify");
  job->inference = true;
  grpc::ServerUnaryReactor* reactor = job->reactor;
  try {
    Hosted& h = find(request->model());
    job->model_label = h.config.name;
    job->hosted = &h;
    job->items = request->images_size();
    const ClassifyRequestCheck check = check_classify_request(*request, h.config, h.spec);
    job->top_k = check.top_k;
    job->mode = h.resolve(request->attention());
    job->mode_known = true;
    if (!h.ready.load()) throw_unavailable("model " + h.config.name + " is not ready (loading)");
    job->classify_request = request;
    job->classify_response = response;
    submit_classify(h, job, static_cast<int64_t>(request->ByteSizeLong()));
  } catch (...) {
    job->finish(status_from_exception(std::current_exception(), "Classify"));
  }
  return reactor;
}

void InferenceService::submit_classify(Hosted& h, const std::shared_ptr<Job>& job,
                                       int64_t bytes) {
  // Admission before any decoding: the request holds its whole message until it is decoded.
  if (!admit(h, job, 1, bytes)) return;
  if (job->classify_request == nullptr) {  // preprocessed tensors: nothing to decode
    enqueue(h, job, {job});
    return;
  }
  if (!decode_pool_.post([this, &h, job] { decode_and_enqueue(h, job); })) {
    throw_unavailable("the server is shutting down");
  }
}

void InferenceService::decode_and_enqueue(Hosted& h, const std::shared_ptr<Job>& job) {
  try {
    const v1::ClassifyRequest& request = *job->classify_request;
    const int64_t crop = h.spec.image_size;
    const int64_t max_pixels = h.config.max_image_pixels;
    for (int i = 0; i < request.images_size(); ++i) {
      // Stops at the first image after the client gave up (cancelled, deadline passed).
      if (job->dead()) {
        const DropReason reason = job->death();
        metrics_.rejected(h.config.name, to_string(reason));
        job->finish(to_status(reason == DropReason::kDeadline ? ErrorKind::kDeadlineExceeded
                                                              : ErrorKind::kCancelled,
                              reason == DropReason::kDeadline
                                  ? "the deadline passed before the images were decoded"
                                  : "cancelled before the images were decoded"));
        return;
      }
      const auto& img = request.images(i);
      try {
        if (img.source_case() == v1::ImageInput::kEncoded) {
          job->images.push_back(prepare_encoded_image(
              img.encoded(), crop, {max_pixels, h.config.max_image_decoded_bytes}));
          job->seeds.push_back(fnv1a(img.encoded()));
        } else {
          const auto& raw = img.raw();
          job->images.push_back(prepare_raw_image(raw.data(), raw.height(), raw.width(),
                                                  raw.channels(), crop,
                                                  {max_pixels, h.config.max_image_decoded_bytes}));
          const std::string dims = std::to_string(raw.height()) + "x" +
                                   std::to_string(raw.width()) + "x" +
                                   std::to_string(raw.channels());
          job->seeds.push_back(fnv1a(raw.data(), fnv1a(dims)));
        }
      } catch (const LibTorchError& e) {
        throw_invalid("images[" + std::to_string(i) + "]: " + e.brief());
      }
    }
    // Only the crops stay: the message (encoded images, padding, unknown fields) is freed.
    const size_t message_bytes = request.ByteSizeLong();
    job->classify_request = nullptr;
    job->release_request();
    // gRPC received a large message in many small slices; without a trim their freed pages
    // stay in malloc's arenas (measured: up to 146 MiB after three 60 MB messages).
    if (message_bytes >= kTrimAfterMessageBytes) malloc_trim(0);
    enqueue(h, job, {job});
  } catch (...) {
    job->finish(status_from_exception(std::current_exception(), "Classify"));
  }
}

grpc::ServerUnaryReactor* InferenceService::Generate(grpc::CallbackServerContext* context,
                                                     const v1::GenerateRequest* request,
                                                     v1::GenerateResponse* response) {
  auto job = make_job(metrics_, context, "Generate");
  job->inference = true;
  grpc::ServerUnaryReactor* reactor = job->reactor;
  try {
    Hosted& h = find(request->model());
    job->model_label = h.config.name;
    job->hosted = &h;
    job->items = request->items_size();
    GenerateRequestCheck check = check_generate_request(*request, h.config, h.spec);
    job->format = check.format;
    job->mode = h.resolve(request->attention());
    job->mode_known = true;
    if (!h.ready.load()) throw_unavailable("model " + h.config.name + " is not ready (loading)");
    // Everything the model needs is in `check`: the message is freed before admission.
    context->GetRpcAllocatorState()->FreeRequest();
    request = nullptr;
    job->generate_response = response;
    submit_generate(h, job, std::move(check));
  } catch (...) {
    job->finish(status_from_exception(std::current_exception(), "Generate"));
  }
  return reactor;
}

void InferenceService::submit_generate(Hosted& h, const std::shared_ptr<Job>& job,
                                       GenerateRequestCheck check) {
  const int n = static_cast<int>(check.seeds.size());
  const int64_t z_dim = h.spec.z_dim;
  job->z.reserve(static_cast<size_t>(n * z_dim));
  for (int i = 0; i < n; ++i) {
    // An item with z and no seed gets one from z's bytes (FNV-1a, as Classify's from an
    // image's), so its output depends only on the request; neither: a fresh one.
    const uint64_t seed =
        check.seeds[i] ? *check.seeds[i]
        : check.z[i]   ? fnv1a(std::string_view(reinterpret_cast<const char*>(check.z[i]->data()),
                                                check.z[i]->size() * sizeof(float)))
                       : draw_seed();
    job->seeds.push_back(seed);
    const std::vector<float> z =
        check.z[i] ? *check.z[i] : truncated_noise(seed, check.truncations[i], z_dim);
    job->z.insert(job->z.end(), z.begin(), z.end());
  }
  job->classes = std::move(check.classes);
  // Items grouped by truncation, in order of first appearance.
  std::vector<std::pair<double, std::vector<int>>> groups;
  for (int i = 0; i < n; ++i) {
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const auto& g) { return g.first == check.truncations[i]; });
    if (it == groups.end()) {
      groups.push_back({check.truncations[i], {i}});
    } else {
      it->second.push_back(i);
    }
  }
  job->truncation = groups.front().first;
  std::vector<std::shared_ptr<Job>> parts;
  if (groups.size() == 1) {
    parts.push_back(job);
  } else {
    job->parts_remaining = static_cast<int>(groups.size());
    job->part_images.resize(static_cast<size_t>(n));
    for (const auto& [t, indices] : groups) {
      auto part = std::make_shared<Job>();
      part->metrics = &metrics_;
      part->context = job->context;
      part->hosted = &h;
      part->rpc = job->rpc;
      part->model_label = job->model_label;
      part->request_id = job->request_id;
      part->mode = job->mode;
      part->mode_known = true;
      part->items = static_cast<int64_t>(indices.size());
      part->truncation = t;
      part->format = job->format;
      part->parent = job;
      part->item_index = indices;
      for (int i : indices) {
        const auto row = job->z.begin() + static_cast<std::ptrdiff_t>(i * z_dim);
        part->z.insert(part->z.end(), row, row + z_dim);
        part->classes.push_back(job->classes[static_cast<size_t>(i)]);
        part->seeds.push_back(job->seeds[static_cast<size_t>(i)]);
      }
      part->generate_response = &part->own_response;
      parts.push_back(std::move(part));
    }
  }
  int64_t bytes = 0;
  for (const auto& part : parts) {
    bytes += retained_bytes(*part);
  }
  // The whole request or nothing: every part's slot at once.
  if (!admit(h, job, static_cast<int64_t>(parts.size()), bytes)) return;
  enqueue(h, job, std::move(parts));
}

void InferenceService::fill_info(const Hosted& h, v1::ModelInfo* info) const {
  info->set_name(h.config.name);
  info->set_kind(h.spec.kind == ModelKind::kClassifier ? v1::MODEL_KIND_CLASSIFIER
                                                       : v1::MODEL_KIND_GENERATOR);
  info->set_input(h.spec.input);
  info->set_output(h.spec.output);
  info->set_default_attention(to_proto(h.config.default_attention));
  for (AttentionMode a : h.config.allowed_attention) info->add_allowed_attention(to_proto(a));
  const bool ready = h.ready.load();
  if (ready) {
    auto fill_layers = [](const std::vector<LayerGroupPlan>& plan, const auto& add) {
      for (const LayerGroupPlan& g : plan) {
        v1::LayerAttention* la = add();
        la->set_group(g.group);
        la->set_method(g.method);
        la->set_settings(g.settings);
        if (g.kdeformer) {
          la->set_bucket_size(static_cast<uint32_t>(g.bucket_size));
          la->set_sample_size(static_cast<uint32_t>(g.sample_size));
          la->set_num_projections(static_cast<uint32_t>(g.num_projections));
        }
      }
    };
    fill_layers(h.engine->plan(h.config.default_attention),
                [info] { return info->add_attention_plan(); });
    for (AttentionMode a : h.config.allowed_attention) {
      v1::AttentionModePlan* p = info->add_plans();
      p->set_attention(to_proto(a));
      p->set_description(h.engine->describe_plan(a));
      fill_layers(h.engine->plan(a), [p] { return p->add_layers(); });
    }
    info->set_weights_source(h.engine->weights_source());
  } else {
    info->set_weights_source(h.config.weights
                                 ? "file " + *h.config.weights
                                 : "random init (seed " + std::to_string(h.config.init_seed) + ")");
  }
  info->set_device(h.config.device);
  info->set_ready(ready);
  info->set_max_batch_size(static_cast<uint32_t>(h.config.batching.max_batch_size));
  info->set_image_size(static_cast<uint32_t>(h.spec.image_size));
}

grpc::ServerUnaryReactor* InferenceService::ListModels(grpc::CallbackServerContext* context,
                                                       const v1::ListModelsRequest*,
                                                       v1::ListModelsResponse* response) {
  auto job = make_job(metrics_, context, "ListModels");
  job->server_level = true;
  try {
    for (const auto& h : hosted_) fill_info(*h, response->add_models());
    job->finish(grpc::Status::OK);
  } catch (...) {
    job->finish(status_from_exception(std::current_exception(), "ListModels"));
  }
  return job->reactor;
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetModelInfoRequest* request,
                                                         v1::ModelInfo* response) {
  auto job = make_job(metrics_, context, "GetModelInfo");
  try {
    const Hosted& h = find(request->model());
    job->model_label = h.config.name;
    fill_info(h, response);
    job->finish(grpc::Status::OK);
  } catch (...) {
    job->finish(status_from_exception(std::current_exception(), "GetModelInfo"));
  }
  return job->reactor;
}

}  // namespace kdeserve::server
