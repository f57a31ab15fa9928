#pragma once
/// Internals of the Inference service shared by service.cpp (handlers, validation) and
/// service_run.cpp (model loading, batch execution): the hosted model and the per-request job.
/// Not part of the server's interface.

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "server/batcher.h"
#include "server/engine/model_engine.h"
#include "server/logging.h"
#include "server/service.h"
#include "server/status.h"

namespace kdeserve::server {
namespace v1 = kdeserve::v1;
using Clock = std::chrono::steady_clock;

constexpr double kDefaultTruncation = 0.4;
constexpr uint32_t kDefaultTopK = 5;

inline double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

inline v1::AttentionMode to_proto(AttentionMode mode) {
  return mode == AttentionMode::kExact ? v1::ATTENTION_MODE_EXACT : v1::ATTENTION_MODE_KDEFORMER;
}

/// FNV-1a of bytes: the per-image attention seed of Classify, so a result depends only on the
/// image.
uint64_t fnv1a(const std::string& bytes, uint64_t h = 1469598103934665603ULL);
/// A fresh random seed (for Generate items without seed or z).
uint64_t draw_seed();
/// The client's x-request-id metadata when printable (≤ 128 chars), else a new id.
std::string request_id_of(const grpc::CallbackServerContext* ctx);
/// The call's deadline on the steady clock (max when none).
Clock::time_point steady_deadline(const grpc::CallbackServerContext* ctx);

struct InferenceService::Hosted {
  ModelConfig config;
  ModelSpec spec;
  std::unique_ptr<ModelEngine> engine;  // built on the compute thread by load_models()
  std::atomic<bool> ready{false};
  std::unique_ptr<Batcher<std::shared_ptr<Job>>> batcher;

  AttentionMode resolve(v1::AttentionMode requested) const {
    AttentionMode mode = config.default_attention;
    if (requested == v1::ATTENTION_MODE_EXACT) {
      mode = AttentionMode::kExact;
    } else if (requested == v1::ATTENTION_MODE_KDEFORMER) {
      mode = AttentionMode::kKdeformer;
    } else if (requested != v1::ATTENTION_MODE_UNSPECIFIED) {
      throw_invalid("unknown attention mode " + std::to_string(static_cast<int>(requested)));
    }
    for (AttentionMode a : config.allowed_attention) {
      if (a == mode) return mode;
    }
    std::string allowed;
    for (AttentionMode a : config.allowed_attention) {
      allowed += (allowed.empty() ? "" : ", ") + to_string(a);
    }
    throw_invalid("attention " + to_string(mode) + " is not allowed for model " + config.name +
                  " (allowed: " + allowed + ")");
  }
};

struct InferenceService::Job {
  Metrics* metrics = nullptr;
  grpc::CallbackServerContext* context = nullptr;
  grpc::ServerUnaryReactor* reactor = nullptr;
  std::string rpc, model_label, request_id;
  AttentionMode mode = AttentionMode::kExact;
  bool mode_known = false;
  int64_t items = 0;
  Clock::time_point start = Clock::now();
  std::atomic<bool> finished{false};
  // Classify
  std::vector<RgbImage> images;  // uint8 [S, S, 3] each, resized and cropped
  std::vector<uint64_t> seeds;   // one per item: attention entry seeds
  int64_t top_k = kDefaultTopK;
  v1::ClassifyResponse* classify_response = nullptr;
  // Generate
  std::vector<float> z;               // [n, z_dim] row-major
  std::vector<ClassWeights> classes;  // n rows of (class id, weight)
  double truncation = kDefaultTruncation;
  v1::ImageFormat format = v1::IMAGE_FORMAT_PNG;
  v1::GenerateResponse* generate_response = nullptr;
  // A Generate request whose items use different truncations runs as one part per truncation
  // (the model takes one truncation per batch); each part is batched on its own.
  std::shared_ptr<Job> parent;     // set on a part
  std::vector<int> item_index;     // part: positions of its items in the request
  v1::GenerateResponse own_response;  // part: its results
  std::mutex parts_mutex;          // parent: the fields below
  int parts_remaining = 0;
  grpc::Status parts_error;
  std::vector<v1::GeneratedImage> part_images;
  double parts_queue = 0, parts_compute = 0;
  uint32_t parts_batch = 0;
  std::string parts_plan;

  /// Answers the call exactly once; counts and logs it. A part reports to its parent instead.
  void finish(const grpc::Status& status) noexcept {
    if (finished.exchange(true)) return;
    if (parent) {
      parent->part_done(*this, status);
      return;
    }
    try {
      const double latency = seconds_since(start);
      const std::string code = code_name(status.error_code());
      const std::string attention = mode_known ? to_string(mode) : "";
      // Unknown model names share one label value: clients must not create series.
      const std::string label = !model_label.empty() ? model_label
                                : rpc == "ListModels" ? ""
                                                      : "unknown";
      metrics->request_done(label, rpc, code, attention, latency);
      if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
        metrics->rejected(label, "invalid");
      } else if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
        metrics->rejected(label, "unavailable");
      }
      metrics->add_inflight(-1);
      log_access({request_id, rpc, model_label, items, attention, code, latency, context->peer(),
                  status.ok() ? "" : status.error_message()});
    } catch (...) {
    }
    reactor->Finish(status);
  }

  /// A part finished: keep its images; the last part answers the request.
  void part_done(Job& part, const grpc::Status& status) noexcept {
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
};

/// A job for a new call (counts it in flight; its reactor is the context's default one).
std::shared_ptr<InferenceService::Job> make_job(Metrics& metrics,
                                                grpc::CallbackServerContext* context,
                                                const std::string& rpc);

}  // namespace kdeserve::server
