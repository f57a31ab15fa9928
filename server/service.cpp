// The Inference service's RPC handlers: validation, request building, submission, model info.
#include "server/service.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "server/engine/images.h"
#include "server/engine/model_engine.h"
#include "server/service_internal.h"

namespace kdeserve::server {

InferenceService::InferenceService(const ServerConfig& config, Metrics& metrics)
    : config_(config), metrics_(metrics) {
  for (const ModelConfig& m : config_.models) {
    auto h = std::make_unique<Hosted>();
    h->config = m;
    h->spec = registered_model_spec(m.name);
    metrics_.set_model_ready(m.name, false);
    metrics_.set_queue_depth(m.name, 0);
    metrics_.set_queue_capacity(m.name, static_cast<double>(m.batching.max_queue_length));
    std::vector<std::string> codes;
    for (grpc::StatusCode code :
         {grpc::StatusCode::OK, grpc::StatusCode::INVALID_ARGUMENT,
          grpc::StatusCode::RESOURCE_EXHAUSTED, grpc::StatusCode::DEADLINE_EXCEEDED,
          grpc::StatusCode::CANCELLED, grpc::StatusCode::UNAVAILABLE, grpc::StatusCode::INTERNAL}) {
      codes.push_back(code_name(code));
    }
    metrics_.declare_model(m.name, h->spec.kind == ModelKind::kClassifier ? "Classify" : "Generate",
                           codes);
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
  throw_not_found("unknown model '" + name + "' (hosted: " + list + ")");
}

void InferenceService::submit(Hosted& h, const std::shared_ptr<Job>& job) {
  if (!h.ready.load() || !h.batcher) throw_unavailable("model " + h.config.name + " is not ready");
  Batcher<std::shared_ptr<Job>>::Task task;
  task.payload = job;
  task.items = job->items;
  task.key = to_string(job->mode);
  if (h.spec.kind == ModelKind::kGenerator) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "|t=%.17g", job->truncation);
    task.key += buf;
  }
  task.deadline = steady_deadline(job->context);
  grpc::CallbackServerContext* ctx = job->context;
  task.cancelled = [ctx] { return ctx->IsCancelled(); };
  switch (h.batcher->submit(std::move(task))) {
    case SubmitResult::kAccepted:
      return;
    case SubmitResult::kQueueFull:
      metrics_.rejected(h.config.name, "queue_full");
      job->finish(to_status(ErrorKind::kResourceExhausted,
                            "queue of model " + h.config.name + " is full (" +
                                std::to_string(h.config.batching.max_queue_length) +
                                " requests); retry later"));
      return;
    case SubmitResult::kShutdown:
      throw_unavailable("the server is shutting down");
  }
}

grpc::ServerUnaryReactor* InferenceService::Classify(grpc::CallbackServerContext* context,
                                                     const v1::ClassifyRequest* request,
                                                     v1::ClassifyResponse* response) {
  auto job = make_job(metrics_, context, "Classify");
  grpc::ServerUnaryReactor* reactor = job->reactor;
  try {
    Hosted& h = find(request->model());
    job->model_label = h.config.name;
    job->items = request->images_size();
    if (h.spec.kind != ModelKind::kClassifier) {
      throw_invalid("model " + h.config.name + " is a generator: call Generate");
    }
    const int64_t max_items = h.config.batching.max_items_per_request;
    if (request->images_size() == 0) throw_invalid("images: at least one image is required");
    if (request->images_size() > max_items) {
      throw_invalid("images: " + std::to_string(request->images_size()) + " images, at most " +
                    std::to_string(max_items) + " per request for model " + h.config.name);
    }
    job->top_k = request->top_k() == 0 ? kDefaultTopK : request->top_k();
    if (job->top_k > h.spec.num_classes) {
      throw_invalid("top_k: " + std::to_string(job->top_k) + " exceeds the " +
                    std::to_string(h.spec.num_classes) + " classes");
    }
    job->mode = h.resolve(request->attention());
    job->mode_known = true;
    if (!h.ready.load()) throw_unavailable("model " + h.config.name + " is not ready (loading)");
    const int64_t max_pixels = h.config.max_image_pixels;
    for (int i = 0; i < request->images_size(); ++i) {
      const auto& img = request->images(i);
      const std::string where = "images[" + std::to_string(i) + "]";
      if (img.source_case() == v1::ImageInput::kEncoded) {
        if (img.encoded().empty()) throw_invalid(where + ": empty encoded image");
      } else if (img.source_case() == v1::ImageInput::kRaw) {
        const auto& raw = img.raw();
        if (raw.height() == 0 || raw.width() == 0) throw_invalid(where + ": zero height or width");
        if (raw.channels() != 1 && raw.channels() != 3 && raw.channels() != 4) {
          throw_invalid(where + ": channels must be 1, 3 or 4, got " +
                        std::to_string(raw.channels()));
        }
        const uint64_t pixels = uint64_t{raw.height()} * raw.width();
        if (pixels > static_cast<uint64_t>(max_pixels)) {
          throw_invalid(where + ": " + std::to_string(pixels) + " pixels, more than the " +
                        std::to_string(max_pixels) + " allowed");
        }
        if (raw.data().size() != pixels * raw.channels()) {
          throw_invalid(where + ": data has " + std::to_string(raw.data().size()) +
                        " bytes, expected height*width*channels = " +
                        std::to_string(pixels * raw.channels()));
        }
      } else {
        throw_invalid(where + ": neither encoded nor raw is set");
      }
    }
    const int64_t crop = h.spec.image_size;
    for (int i = 0; i < request->images_size(); ++i) {
      const auto& img = request->images(i);
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
    job->classify_response = response;
    submit(h, job);
  } catch (...) {
    job->finish(status_from_exception(std::current_exception(), "Classify"));
  }
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::Generate(grpc::CallbackServerContext* context,
                                                     const v1::GenerateRequest* request,
                                                     v1::GenerateResponse* response) {
  auto job = make_job(metrics_, context, "Generate");
  grpc::ServerUnaryReactor* reactor = job->reactor;
  try {
    Hosted& h = find(request->model());
    job->model_label = h.config.name;
    job->items = request->items_size();
    if (h.spec.kind != ModelKind::kGenerator) {
      throw_invalid("model " + h.config.name + " is a classifier: call Classify");
    }
    const int64_t max_items = h.config.batching.max_items_per_request;
    if (request->items_size() == 0) throw_invalid("items: at least one item is required");
    if (request->items_size() > max_items) {
      throw_invalid("items: " + std::to_string(request->items_size()) + " items, at most " +
                    std::to_string(max_items) + " per request for model " + h.config.name);
    }
    switch (request->format()) {
      case v1::IMAGE_FORMAT_UNSPECIFIED:
      case v1::IMAGE_FORMAT_PNG:
        job->format = v1::IMAGE_FORMAT_PNG;
        break;
      case v1::IMAGE_FORMAT_RAW_RGB8:
        job->format = v1::IMAGE_FORMAT_RAW_RGB8;
        break;
      default:
        throw_invalid("format: unknown image format " + std::to_string(request->format()));
    }
    job->mode = h.resolve(request->attention());
    job->mode_known = true;
    const int64_t num_classes = h.spec.num_classes;
    const int64_t z_dim = h.spec.z_dim;
    std::vector<ClassWeights> class_rows;
    std::vector<std::optional<uint64_t>> seeds;
    std::vector<double> truncations;
    for (int i = 0; i < request->items_size(); ++i) {
      const auto& item = request->items(i);
      const std::string where = "items[" + std::to_string(i) + "]";
      double t = item.truncation() == 0 ? kDefaultTruncation : item.truncation();
      if (!std::isfinite(t) || t <= 0 || t > 1) {
        throw_invalid(where + ".truncation: must be in (0, 1], got " + std::to_string(t));
      }
      truncations.push_back(t);
      ClassWeights row;
      if (item.class_spec_case() == v1::GenerateItem::kClassId) {
        if (item.class_id() >= num_classes) {
          throw_invalid(where + ".class_id: " + std::to_string(item.class_id()) + " outside [0, " +
                        std::to_string(num_classes) + ")");
        }
        row.emplace_back(item.class_id(), 1.0);
      } else if (item.class_spec_case() == v1::GenerateItem::kClassWeights) {
        std::set<uint32_t> seen;
        double sum = 0;
        if (item.class_weights().weights_size() == 0)
          throw_invalid(where + ".class_weights: empty");
        for (const auto& w : item.class_weights().weights()) {
          if (w.class_id() >= num_classes) {
            throw_invalid(where + ".class_weights: class " + std::to_string(w.class_id()) +
                          " outside [0, " + std::to_string(num_classes) + ")");
          }
          if (!seen.insert(w.class_id()).second) {
            throw_invalid(where + ".class_weights: class " + std::to_string(w.class_id()) +
                          " repeated");
          }
          if (!std::isfinite(w.weight()) || w.weight() < 0) {
            throw_invalid(where + ".class_weights: weights must be finite and >= 0");
          }
          sum += w.weight();
          row.emplace_back(w.class_id(), w.weight());
        }
        if (!(sum > 0)) throw_invalid(where + ".class_weights: the weights sum to 0");
      } else {
        throw_invalid(where + ": set class_id or class_weights");
      }
      class_rows.push_back(std::move(row));
      if (item.noise_case() == v1::GenerateItem::kZ) {
        if (item.z().values_size() != z_dim) {
          throw_invalid(where + ".z: " + std::to_string(item.z().values_size()) +
                        " values, the model's z_dim is " + std::to_string(z_dim));
        }
        for (float v : item.z().values()) {
          if (!std::isfinite(v)) throw_invalid(where + ".z: values must be finite");
        }
      }
      seeds.push_back(item.noise_case() == v1::GenerateItem::kSeed
                          ? std::optional<uint64_t>(item.seed())
                          : std::nullopt);
    }
    if (!h.ready.load()) throw_unavailable("model " + h.config.name + " is not ready (loading)");
    job->z.reserve(static_cast<size_t>(request->items_size() * z_dim));
    for (int i = 0; i < request->items_size(); ++i) {
      const auto& item = request->items(i);
      const uint64_t seed = seeds[i] ? *seeds[i] : draw_seed();
      job->seeds.push_back(seed);
      if (item.noise_case() == v1::GenerateItem::kZ) {
        job->z.insert(job->z.end(), item.z().values().begin(), item.z().values().end());
      } else {
        const std::vector<float> z = truncated_noise(seed, truncations[i], z_dim);
        job->z.insert(job->z.end(), z.begin(), z.end());
      }
    }
    job->classes = std::move(class_rows);
    job->generate_response = response;
    // Items grouped by truncation, in order of first appearance.
    std::vector<std::pair<double, std::vector<int>>> groups;
    for (int i = 0; i < request->items_size(); ++i) {
      auto it = std::find_if(groups.begin(), groups.end(),
                             [&](const auto& g) { return g.first == truncations[i]; });
      if (it == groups.end()) {
        groups.push_back({truncations[i], {i}});
      } else {
        it->second.push_back(i);
      }
    }
    job->truncation = groups.front().first;
    if (groups.size() == 1) {
      submit(h, job);
    } else {
      job->parts_remaining = static_cast<int>(groups.size());
      job->part_images.resize(static_cast<size_t>(request->items_size()));
      std::vector<std::shared_ptr<Job>> parts;
      for (const auto& [t, indices] : groups) {
        auto part = std::make_shared<Job>();
        part->metrics = &metrics_;
        part->context = context;
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
      for (auto& part : parts) {
        try {
          submit(h, part);
        } catch (...) {
          part->finish(status_from_exception(std::current_exception(), "Generate"));
        }
      }
    }
  } catch (...) {
    job->finish(status_from_exception(std::current_exception(), "Generate"));
  }
  return reactor;
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
    for (const LayerGroupPlan& g : h.engine->plan(h.config.default_attention)) {
      auto* la = info->add_attention_plan();
      la->set_group(g.group);
      la->set_method(g.method);
      if (g.kdeformer) {
        la->set_bucket_size(static_cast<uint32_t>(g.bucket_size));
        la->set_sample_size(static_cast<uint32_t>(g.sample_size));
        la->set_num_projections(static_cast<uint32_t>(g.num_projections));
      }
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
