#pragma once
/// Internals of the Inference service shared by service.cpp (handlers, validation) and
/// service_run.cpp (model loading, batch execution): the hosted model and the per-request job.
/// Not part of the server's interface.

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "server/batcher.h"
#include "server/call_accounting.h"
#include "server/engine/model_engine.h"
#include "server/logging.h"
#include "server/model_stats.h"
#include "server/shadow.h"
#include "server/request_validation.h"
#include "server/service.h"
#include "server/status.h"

namespace kdeserve::server {
namespace v1 = kdeserve::v1;
using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

/// The wire value of a mode (proto enum AttentionMode, same order from 1).
v1::AttentionMode to_proto(AttentionMode mode);
/// The mode of a wire value; nullopt for UNSPECIFIED and for values this server does not know
/// (a newer client's).
std::optional<AttentionMode> from_proto(v1::AttentionMode mode);

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
  ModelStatsRecorder stats;  // the Open Inference Protocol's ModelStatistics
  std::unique_ptr<ShadowSampler> shadow;  // set when config.shadow.fraction > 0
  std::atomic<size_t> admitted{0};        // requests admitted and not yet computed

  /// The mode a request runs: its own (UNSPECIFIED: the model's default). Throws
  /// INVALID_ARGUMENT (naming the allowed modes) for an unknown value or a mode the model's
  /// config does not allow; called before anything is decoded or computed.
  AttentionMode resolve(v1::AttentionMode requested) const {
    AttentionMode mode = config.default_attention;
    if (requested != v1::ATTENTION_MODE_UNSPECIFIED) {
      const std::optional<AttentionMode> known = from_proto(requested);
      if (!known) {
        throw_invalid("unknown attention mode " + std::to_string(static_cast<int>(requested)) +
                      " (allowed for model " + config.name + ": " +
                      join_modes(config.allowed_attention) + ")");
      }
      mode = *known;
    }
    for (AttentionMode a : config.allowed_attention) {
      if (a == mode) return mode;
    }
    throw_invalid("attention " + to_string(mode) + " is not allowed for model " + config.name +
                  " (allowed: " + join_modes(config.allowed_attention) + ")");
  }
};

/// One call's reactor: forwards cancellation to its job (so a queued or decoding request stops
/// and frees its slot at once) and accounts the call when gRPC is done with it.
class CallReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit CallReactor(std::shared_ptr<InferenceService::Job> job) {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = std::move(job);
  }
  void OnCancel() override;
  void OnDone() override;

 private:
  // gRPC runs OnCancel/OnDone on its own threads and hands the call over inside uninstrumented
  // code; the mutex makes that hand-off a visible happens-before (ThreadSanitizer, and any
  // reader of this code).
  std::mutex mutex_;
  std::shared_ptr<InferenceService::Job> job_;
};

struct InferenceService::Job {
  using Reservation = Batcher<std::shared_ptr<Job>>::Reservation;

  Metrics* metrics = nullptr;
  grpc::CallbackServerContext* context = nullptr;
  CallReactor* reactor = nullptr;  // null on a part; valid until finish()
  Hosted* hosted = nullptr;        // set once the model is known
  std::string rpc, model_label, request_id;
  bool server_level = false;  // an RPC about the server, not one model: no model label
  bool inference = false;     // an inference request: counted in its model's ModelStats
  AttentionMode mode = AttentionMode::kExact;
  bool mode_known = false;
  int64_t items = 0;
  Clock::time_point start = Clock::now();
  Clock::time_point deadline = Clock::time_point::max();
  std::atomic<bool> cancelled{false};  // OnCancel ran (client cancel or deadline)
  std::atomic<bool> finished{false};
  std::atomic<bool> done{false};  // on_done() ran: gRPC is done with the call (root only)
  std::mutex sent_mutex;   // orders everything before finish() before on_done()
  grpc::Status sent;       // what finish() answered (for the access log and metrics)
  Reservation reservation;  // queue slots and bytes, from admission until enqueued
  // Another protocol's call (the Open Inference Protocol: server/oip_service.h) runs as a
  // kdeserve.v1 job with its own request and response: `respond` turns the filled v1 response
  // into the call's answer just before finish() sends it (its error status instead, when it
  // fails), and `free_request` frees what the call received once the job holds what the model
  // needs. Unset for kdeserve.v1 calls: their response is the call's, and the request is freed
  // through the call's message allocator.
  std::function<grpc::Status()> respond;
  std::function<void()> free_request;
  // Classify
  const v1::ClassifyRequest* classify_request = nullptr;  // until decoded, then freed
  std::vector<RgbImage> images;  // uint8 [S, S, 3] each, resized and cropped
  std::vector<float> tensors;    // or: preprocessed float32 [n, 3, S, S] (no decoding)
  std::vector<uint64_t> seeds;   // one per item: attention entry seeds
  int64_t top_k = kDefaultTopK;  // 0: no ranking
  bool want_logits = false;      // run_classify keeps the batch's logits of this job in `logits`
  std::vector<float> logits;     // [n, classes]
  v1::ClassifyResponse* classify_response = nullptr;
  // Generate
  std::vector<float> z;               // [n, z_dim] row-major
  std::vector<ClassWeights> classes;  // n rows of (class id, weight)
  double truncation = kDefaultTruncation;
  v1::ImageFormat format = v1::IMAGE_FORMAT_PNG;
  v1::GenerateResponse* generate_response = nullptr;
  // A Generate request whose items use different truncations runs as one part per truncation
  // (the model takes one truncation per batch); each part is batched on its own, and the
  // request is admitted whole (all parts' slots at once) or not at all.
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

  /// The job whose call this is (itself, or a part's parent).
  Job& root() { return parent ? *parent : *this; }
  /// The client cancelled or the deadline passed: no more work is worth doing.
  bool dead() { return root().cancelled.load() || Clock::now() >= root().deadline; }
  /// Why a dead job is not answered, as its client sees it: the deadline (also when the
  /// client's own expiry cancelled the call just before the server's copy passed, see
  /// cancelled_call_code()) or a cancellation.
  DropReason death() {
    return cancelled_call_code(context->deadline()) == grpc::StatusCode::DEADLINE_EXCEEDED
               ? DropReason::kDeadline
               : DropReason::kCancelled;
  }

  /// Frees the call's request (its message allocator's, or free_request).
  void release_request();
  /// Answers the call exactly once and gives back what admission reserved. A part reports to
  /// its parent instead. The call is counted and logged in on_done(), when gRPC says what the
  /// client received.
  void finish(const grpc::Status& status) noexcept;
  /// A part finished: keep its images; the last part answers the request.
  void part_done(Job& part, const grpc::Status& status) noexcept;
  /// gRPC is done with the call: counts it once, with the code the client received.
  void on_done() noexcept;
};

/// A job for a new call (counts it in flight; its reactor is the context's default one).
std::shared_ptr<InferenceService::Job> make_job(Metrics& metrics,
                                                grpc::CallbackServerContext* context,
                                                const std::string& rpc);

}  // namespace kdeserve::server
