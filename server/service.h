#pragma once
/// The kdeserve.v1.Inference gRPC service (callback API): validation, dynamic batching per model
/// and attention mode, model execution, responses, metrics and the access log.

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "kdeserve/v1/inference.grpc.pb.h"
#include "server/config.h"
#include "server/executor.h"
#include "server/message_allocator.h"
#include "server/request_validation.h"
#include "server/shadow.h"
#include "server/metrics.h"
#include "server/worker_pool.h"

namespace kdeserve::server {

class InferenceService final : public kdeserve::v1::Inference::CallbackService {
 public:
  /// Hosts config.models (not loaded yet: their RPCs answer UNAVAILABLE until load_models()).
  InferenceService(const ServerConfig& config, Metrics& metrics);
  ~InferenceService() override;

  /// Builds every model, runs one warm-up batch per allowed attention mode and starts its
  /// batcher. Throws (std::exception, LibTorchError) when a model cannot be loaded.
  void load_models();
  /// True once every model is loaded and warmed up, until draining or shutdown begins.
  bool ready() const { return ready_.load() && !draining_.load(); }
  /// Draining (after SIGTERM): still serving, but no longer ready (OIP ServerReady false, as
  /// the health service's "readiness").
  void begin_drain() { draining_ = true; }
  /// Stops admitting; decodes what was admitted, runs what is queued until `deadline`, answers
  /// what is left UNAVAILABLE and stops the batchers (a batch already running is waited for).
  /// Idempotent.
  void shutdown(std::chrono::steady_clock::time_point deadline =
                    std::chrono::steady_clock::time_point::max());

  grpc::ServerUnaryReactor* Classify(grpc::CallbackServerContext* context,
                                     const kdeserve::v1::ClassifyRequest* request,
                                     kdeserve::v1::ClassifyResponse* response) override;
  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const kdeserve::v1::GenerateRequest* request,
                                     kdeserve::v1::GenerateResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const kdeserve::v1::ListModelsRequest* request,
                                       kdeserve::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const kdeserve::v1::GetModelInfoRequest* request,
                                         kdeserve::v1::ModelInfo* response) override;

  struct Hosted;
  struct Job;

 private:
  // The Open Inference Protocol's service (server/oip_service.h) runs its calls as this
  // service's jobs: same models, batchers, admission, metrics and access log.
  friend class OipService;

  Hosted& find(const std::string& name);
  void fill_info(const Hosted& hosted, kdeserve::v1::ModelInfo* info) const;
  void run_classify(Hosted& hosted, std::vector<std::shared_ptr<Job>>& jobs);
  void run_generate(Hosted& hosted, std::vector<std::shared_ptr<Job>>& jobs);
  // Admission: reserves `slots` queue slots and `bytes` of a model's queue for a whole request,
  // or answers the job (RESOURCE_EXHAUSTED, UNAVAILABLE) and returns false.
  bool admit(Hosted& hosted, const std::shared_ptr<Job>& job, int64_t slots, int64_t bytes);
  // Queues admitted tasks (the job, or its parts); answers them when the batcher shut down.
  void enqueue(Hosted& hosted, const std::shared_ptr<Job>& job,
               std::vector<std::shared_ptr<Job>> tasks);
  // Admits a validated Classify job (job->classify_request set, or job->tensors filled) of
  // `bytes`, then decodes it on the decode pool (or queues it at once: tensors).
  void submit_classify(Hosted& hosted, const std::shared_ptr<Job>& job, int64_t bytes);
  // Builds a validated Generate job's items from `check` (z, seeds, one part per truncation),
  // admits the whole request and queues it. Its request is already freed.
  void submit_generate(Hosted& hosted, const std::shared_ptr<Job>& job,
                       GenerateRequestCheck check);
  // On the decode pool: decodes an admitted Classify's images, frees its request, queues it.
  void decode_and_enqueue(Hosted& hosted, const std::shared_ptr<Job>& job);
  // After a batch's responses: picks it for the shadow check (server/shadow.h) when it ran an
  // approximate method, and hands the check to the shadow worker.
  void after_batch(Hosted& hosted, const std::vector<std::shared_ptr<Job>>& jobs);
  // The shadow check of a batch, on the shadow worker (its computation on the compute thread):
  // skipped when requests wait or the budget is spent, stopped when requests arrive.
  void run_shadow(Hosted& hosted, const std::vector<std::shared_ptr<Job>>& jobs,
                  AttentionMode mode);
  // The shadow series of a loaded model at 0 (its plans give the approximated layer groups).
  void declare_shadow_metrics(const Hosted& hosted);
  // A request is admitted and not computed (any model), or compute work is queued.
  bool requests_waiting() const;
  // A batch, split in halves and recomputed when it fails, so a request whose input makes the
  // model fail fails alone and its batch-mates are answered.
  void run_isolated(Hosted& hosted, std::vector<std::shared_ptr<Job>>& jobs);

  ServerConfig config_;
  Metrics& metrics_;
  // Declared before hosted_ so it outlives the batchers that submit to it.
  ComputeExecutor compute_;
  std::vector<std::unique_ptr<Hosted>> hosted_;
  // Declared after hosted_ and compute_: stopped before the models and the compute thread go.
  ShadowWorker shadow_worker_;
  // Declared after hosted_: stopped (and destroyed) before the batchers it enqueues into.
  WorkerPool decode_pool_;
  FreeableMessageAllocator<kdeserve::v1::ClassifyRequest, kdeserve::v1::ClassifyResponse>
      classify_allocator_;
  FreeableMessageAllocator<kdeserve::v1::GenerateRequest, kdeserve::v1::GenerateResponse>
      generate_allocator_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> draining_{false};
};

}  // namespace kdeserve::server
