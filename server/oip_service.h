#pragma once
/// The Open Inference Protocol (KServe v2, Triton's gRPC API): inference.GRPCInferenceService
/// on the same port as kdeserve.v1. Its ModelInfer calls run as InferenceService jobs (the same
/// validation order, admission, batcher, compute thread, metrics with rpc="ModelInfer" and
/// access log), so OIP and kdeserve.v1 requests of a model are batched together. The tensor
/// contract is in deploy/README.md; server/oip_tensors.h checks and encodes the tensors.

#include <string>

#include "inference/grpc_service.grpc.pb.h"
#include "server/message_allocator.h"
#include "server/service.h"

namespace kdeserve::server {

class OipService final : public inference::GRPCInferenceService::CallbackService {
 public:
  /// Serves `inference`'s models; `version` is the server version ServerMetadata reports.
  OipService(InferenceService& inference, std::string version);

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;
  grpc::ServerUnaryReactor* ModelConfig(grpc::CallbackServerContext* context,
                                        const inference::ModelConfigRequest* request,
                                        inference::ModelConfigResponse* response) override;
  grpc::ServerUnaryReactor* ModelStatistics(grpc::CallbackServerContext* context,
                                            const inference::ModelStatisticsRequest* request,
                                            inference::ModelStatisticsResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* context,
                                            const inference::RepositoryIndexRequest* request,
                                            inference::RepositoryIndexResponse* response) override;

  // Triton extensions this server does not offer: UNIMPLEMENTED, with the reason.
  // (ModelStreamInfer is not in the service: gRPC answers it UNIMPLEMENTED. A bidi reactor that
  // finishes at once races inside gRPC 1.51's handler, as ThreadSanitizer showed.)
  grpc::ServerUnaryReactor* RepositoryModelLoad(
      grpc::CallbackServerContext* context, const inference::RepositoryModelLoadRequest* request,
      inference::RepositoryModelLoadResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelUnload(
      grpc::CallbackServerContext* context, const inference::RepositoryModelUnloadRequest* request,
      inference::RepositoryModelUnloadResponse* response) override;
  grpc::ServerUnaryReactor* SystemSharedMemoryStatus(
      grpc::CallbackServerContext* context,
      const inference::SystemSharedMemoryStatusRequest* request,
      inference::SystemSharedMemoryStatusResponse* response) override;
  grpc::ServerUnaryReactor* SystemSharedMemoryRegister(
      grpc::CallbackServerContext* context,
      const inference::SystemSharedMemoryRegisterRequest* request,
      inference::SystemSharedMemoryRegisterResponse* response) override;
  grpc::ServerUnaryReactor* SystemSharedMemoryUnregister(
      grpc::CallbackServerContext* context,
      const inference::SystemSharedMemoryUnregisterRequest* request,
      inference::SystemSharedMemoryUnregisterResponse* response) override;
  grpc::ServerUnaryReactor* CudaSharedMemoryStatus(
      grpc::CallbackServerContext* context,
      const inference::CudaSharedMemoryStatusRequest* request,
      inference::CudaSharedMemoryStatusResponse* response) override;
  grpc::ServerUnaryReactor* CudaSharedMemoryRegister(
      grpc::CallbackServerContext* context,
      const inference::CudaSharedMemoryRegisterRequest* request,
      inference::CudaSharedMemoryRegisterResponse* response) override;
  grpc::ServerUnaryReactor* CudaSharedMemoryUnregister(
      grpc::CallbackServerContext* context,
      const inference::CudaSharedMemoryUnregisterRequest* request,
      inference::CudaSharedMemoryUnregisterResponse* response) override;
  grpc::ServerUnaryReactor* TraceSetting(grpc::CallbackServerContext* context,
                                         const inference::TraceSettingRequest* request,
                                         inference::TraceSettingResponse* response) override;
  grpc::ServerUnaryReactor* LogSettings(grpc::CallbackServerContext* context,
                                        const inference::LogSettingsRequest* request,
                                        inference::LogSettingsResponse* response) override;

 private:
  // The hosted model of an OIP name and version (NOT_FOUND otherwise).
  InferenceService::Hosted& find(const std::string& name, const std::string& version);
  void start_classify(InferenceService::Hosted& hosted,
                      const std::shared_ptr<InferenceService::Job>& job,
                      const inference::ModelInferRequest& request,
                      inference::ModelInferResponse* response);
  void start_generate(InferenceService::Hosted& hosted,
                      const std::shared_ptr<InferenceService::Job>& job,
                      const inference::ModelInferRequest& request,
                      inference::ModelInferResponse* response);

  InferenceService& inference_;
  std::string version_;
  FreeableMessageAllocator<inference::ModelInferRequest, inference::ModelInferResponse>
      infer_allocator_;
};

}  // namespace kdeserve::server
