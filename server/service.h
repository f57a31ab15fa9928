#pragma once
/// The kdeserve.v1.Inference gRPC service (callback API): validation, dynamic batching per model
/// and attention mode, model execution, responses, metrics and the access log.

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "kdeserve/v1/inference.grpc.pb.h"
#include "server/config.h"
#include "server/executor.h"
#include "server/metrics.h"

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
  /// Stops the batchers after answering what they still hold. Idempotent.
  void shutdown();

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
  void submit(Hosted& hosted, const std::shared_ptr<Job>& job);

  ServerConfig config_;
  Metrics& metrics_;
  // Declared before hosted_ so it outlives the batchers that submit to it.
  ComputeExecutor compute_;
  std::vector<std::unique_ptr<Hosted>> hosted_;
  std::atomic<bool> ready_{false};
};

}  // namespace kdeserve::server
