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
  /// True once every model is loaded and warmed up.
  bool ready() const { return ready_.load(); }
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
  // On the decode pool: decodes an admitted Classify's images, frees its request, queues it.
  void decode_and_enqueue(Hosted& hosted, const std::shared_ptr<Job>& job);
  // A batch, split in halves and recomputed when it fails, so a request whose input makes the
  // model fail fails alone and its batch-mates are answered.
  void run_isolated(Hosted& hosted, std::vector<std::shared_ptr<Job>>& jobs);

  ServerConfig config_;
  Metrics& metrics_;
  // Declared before hosted_ so it outlives the batchers that submit to it.
  ComputeExecutor compute_;
  std::vector<std::unique_ptr<Hosted>> hosted_;
  // Declared after hosted_: stopped (and destroyed) before the batchers it enqueues into.
  WorkerPool decode_pool_;
  FreeableMessageAllocator<kdeserve::v1::ClassifyRequest, kdeserve::v1::ClassifyResponse>
      classify_allocator_;
  FreeableMessageAllocator<kdeserve::v1::GenerateRequest, kdeserve::v1::GenerateResponse>
      generate_allocator_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> stopping_{false};
};

}  // namespace kdeserve::server
