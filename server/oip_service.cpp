// The Open Inference Protocol's handlers: metadata and health from the hosted models, ModelInfer
// as an InferenceService job, Triton's configuration, statistics and repository index.
#include "server/oip_service.h"

#include <memory>
#include <utility>

#include "server/oip_tensors.h"
#include "server/request_validation.h"
#include "server/service_internal.h"

namespace kdeserve::server {

namespace {

using Hosted = InferenceService::Hosted;
using Job = InferenceService::Job;

// A unary call that needs no model: its job is counted and logged like every call.
template <typename Fill>
grpc::ServerUnaryReactor* answer(Metrics& metrics, grpc::CallbackServerContext* context,
                                 const char* rpc, bool server_level, Fill&& fill) {
  auto job = make_job(metrics, context, rpc);
  job->server_level = server_level;
  grpc::ServerUnaryReactor* reactor = job->reactor;
  try {
    fill(*job);
    job->finish(grpc::Status::OK);
  } catch (...) {
    job->finish(status_from_exception(std::current_exception(), rpc));
  }
  return reactor;
}

// The attention mode a request parameter names (UNSPECIFIED: none given).
v1::AttentionMode requested_mode(const std::optional<std::string>& name, const Hosted& h) {
  if (!name) return v1::ATTENTION_MODE_UNSPECIFIED;
  for (AttentionMode m : kAllAttentionModes) {
    if (to_string(m) == *name) return to_proto(m);
  }
  throw_invalid("parameter attention: unknown mode " + quote_client_string(*name) +
                " (allowed for model " + h.config.name + ": " +
                join_modes(h.config.allowed_attention) + ")");
}

void set_string(google::protobuf::Map<std::string, inference::InferParameter>* params,
                const std::string& key, const std::string& value) {
  (*params)[key].set_string_param(value);
}

// What every ModelInfer response says about how it was computed (as kdeserve.v1 responses do).
void fill_response(inference::ModelInferResponse* r, const Job& job, const std::string& id,
                   const std::string& plan, const v1::Timing& timing) {
  r->set_model_name(job.model_label);
  r->set_model_version(oip::kModelVersion);
  r->set_id(id);
  auto* params = r->mutable_parameters();
  set_string(params, "attention", to_string(job.mode));
  set_string(params, "attention_plan", plan);
  set_string(params, "request_id", job.request_id);
  (*params)["batch_size"].set_int64_param(timing.batch_size());
  (*params)["queue_seconds"].set_double_param(timing.queue_seconds());
  (*params)["compute_seconds"].set_double_param(timing.compute_seconds());
}

inference::DataType data_type(const std::string& datatype) {
  static const std::pair<const char*, inference::DataType> kTypes[] = {
      {"BOOL", inference::TYPE_BOOL},     {"UINT8", inference::TYPE_UINT8},
      {"UINT16", inference::TYPE_UINT16}, {"UINT32", inference::TYPE_UINT32},
      {"UINT64", inference::TYPE_UINT64}, {"INT8", inference::TYPE_INT8},
      {"INT16", inference::TYPE_INT16},   {"INT32", inference::TYPE_INT32},
      {"INT64", inference::TYPE_INT64},   {"FP16", inference::TYPE_FP16},
      {"FP32", inference::TYPE_FP32},     {"FP64", inference::TYPE_FP64},
      {"BYTES", inference::TYPE_STRING},  {"BF16", inference::TYPE_BF16}};
  for (const auto& [name, type] : kTypes) {
    if (datatype == name) return type;
  }
  return inference::TYPE_INVALID;
}

void fill_duration(inference::StatisticDuration* out, const DurationStat& d) {
  out->set_count(d.count);
  out->set_ns(d.ns);
}

void fill_statistics(inference::ModelStatistics* out, const std::string& name,
                     const ModelStats& s) {
  out->set_name(name);
  out->set_version(oip::kModelVersion);
  out->set_last_inference(s.last_inference_ms);
  out->set_inference_count(s.inference_count);
  out->set_execution_count(s.execution_count);
  auto* infer = out->mutable_inference_stats();
  fill_duration(infer->mutable_success(), s.success);
  fill_duration(infer->mutable_fail(), s.fail);
  fill_duration(infer->mutable_queue(), s.queue);
  fill_duration(infer->mutable_compute_infer(), s.compute);
  for (const auto& [size, d] : s.batches) {
    auto* b = out->add_batch_stats();
    b->set_batch_size(static_cast<uint64_t>(size));
    fill_duration(b->mutable_compute_infer(), d);
  }
}

constexpr const char* kNoRepositoryControl =
    "the models are fixed by the server's configuration (models[] in server.yaml) and loaded at "
    "start-up; they cannot be loaded or unloaded at run time";
constexpr const char* kNoSharedMemory =
    "shared-memory tensors are not supported: send the tensors in the request "
    "(raw_input_contents or contents)";

}  // namespace

OipService::OipService(InferenceService& inference, std::string version)
    : inference_(inference), version_(std::move(version)) {
  SetMessageAllocatorFor_ModelInfer(&infer_allocator_);
}

Hosted& OipService::find(const std::string& name, const std::string& version) {
  Hosted& h = inference_.find(name);
  if (!version.empty() && version != oip::kModelVersion) {
    throw_not_found("model " + h.config.name + " has no version " + quote_client_string(version) +
                    " (versions: " + oip::kModelVersion + ")");
  }
  return h;
}

grpc::ServerUnaryReactor* OipService::ServerLive(grpc::CallbackServerContext* context,
                                                 const inference::ServerLiveRequest*,
                                                 inference::ServerLiveResponse* response) {
  return answer(inference_.metrics_, context, "ServerLive", true,
                [&](Job&) { response->set_live(!inference_.stopping_.load()); });
}

grpc::ServerUnaryReactor* OipService::ServerReady(grpc::CallbackServerContext* context,
                                                  const inference::ServerReadyRequest*,
                                                  inference::ServerReadyResponse* response) {
  return answer(inference_.metrics_, context, "ServerReady", true,
                [&](Job&) { response->set_ready(inference_.ready()); });
}

grpc::ServerUnaryReactor* OipService::ModelReady(grpc::CallbackServerContext* context,
                                                 const inference::ModelReadyRequest* request,
                                                 inference::ModelReadyResponse* response) {
  return answer(inference_.metrics_, context, "ModelReady", false, [&](Job& job) {
    const Hosted& h = find(request->name(), request->version());
    job.model_label = h.config.name;
    response->set_ready(h.ready.load() && !inference_.stopping_.load());
  });
}

grpc::ServerUnaryReactor* OipService::ServerMetadata(grpc::CallbackServerContext* context,
                                                     const inference::ServerMetadataRequest*,
                                                     inference::ServerMetadataResponse* response) {
  return answer(inference_.metrics_, context, "ServerMetadata", true, [&](Job&) {
    response->set_name("kdeserve");
    response->set_version(version_);
    for (const char* e : {"classification", "model_configuration", "statistics", "parameters"}) {
      response->add_extensions(e);
    }
  });
}

grpc::ServerUnaryReactor* OipService::ModelMetadata(grpc::CallbackServerContext* context,
                                                    const inference::ModelMetadataRequest* request,
                                                    inference::ModelMetadataResponse* response) {
  return answer(inference_.metrics_, context, "ModelMetadata", false, [&](Job& job) {
    const Hosted& h = find(request->name(), request->version());
    job.model_label = h.config.name;
    response->set_name(h.config.name);
    response->add_versions(oip::kModelVersion);
    response->set_platform("kdeserve");
    auto add = [](auto* list, const oip::TensorSpec& t) {
      auto* m = list->Add();
      m->set_name(t.name);
      m->set_datatype(t.datatype);
      for (int64_t d : t.shape) m->add_shape(d);
    };
    for (const auto& t : oip::model_inputs(h.spec)) add(response->mutable_inputs(), t);
    for (const auto& t : oip::model_outputs(h.spec)) add(response->mutable_outputs(), t);
    auto& props = *response->mutable_properties();
    props["kind"] = h.spec.kind == ModelKind::kClassifier ? "classifier" : "generator";
    props["attention"] = to_string(h.config.default_attention);
    props["allowed_attention"] = join_modes(h.config.allowed_attention);
    if (h.ready.load()) props["attention_plan"] = h.engine->describe_plan(h.config.default_attention);
  });
}

grpc::ServerUnaryReactor* OipService::ModelConfig(grpc::CallbackServerContext* context,
                                                  const inference::ModelConfigRequest* request,
                                                  inference::ModelConfigResponse* response) {
  return answer(inference_.metrics_, context, "ModelConfig", false, [&](Job& job) {
    const Hosted& h = find(request->name(), request->version());
    job.model_label = h.config.name;
    auto* c = response->mutable_config();
    c->set_name(h.config.name);
    c->set_platform("kdeserve");
    c->set_backend("kdeserve");
    c->set_max_batch_size(static_cast<int32_t>(h.config.batching.max_items_per_request));
    const auto inputs = oip::model_inputs(h.spec);
    for (const auto& t : inputs) {
      auto* in = c->add_input();
      in->set_name(t.name);
      in->set_data_type(data_type(t.datatype));
      in->mutable_dims()->Add(t.shape.begin() + 1, t.shape.end());
      // Optional: not required, or one of several inputs of its group.
      const auto peers = std::count_if(inputs.begin(), inputs.end(),
                                       [&](const oip::TensorSpec& o) { return o.group == t.group; });
      in->set_optional(!t.required || peers > 1);
    }
    for (const auto& t : oip::model_outputs(h.spec)) {
      auto* out = c->add_output();
      out->set_name(t.name);
      out->set_data_type(data_type(t.datatype));
      out->mutable_dims()->Add(t.shape.begin() + 1, t.shape.end());
    }
    auto* batching = c->mutable_dynamic_batching();
    batching->add_preferred_batch_size(static_cast<int32_t>(h.config.batching.max_batch_size));
    batching->set_max_queue_delay_microseconds(
        static_cast<uint64_t>(h.config.batching.max_queue_delay_ms) * 1000);
  });
}

grpc::ServerUnaryReactor* OipService::ModelStatistics(
    grpc::CallbackServerContext* context, const inference::ModelStatisticsRequest* request,
    inference::ModelStatisticsResponse* response) {
  return answer(inference_.metrics_, context, "ModelStatistics", request->name().empty(),
                [&](Job& job) {
                  if (!request->name().empty()) {
                    Hosted& h = find(request->name(), request->version());
                    job.model_label = h.config.name;
                    fill_statistics(response->add_model_stats(), h.config.name,
                                    h.stats.snapshot());
                    return;
                  }
                  for (const auto& h : inference_.hosted_) {
                    fill_statistics(response->add_model_stats(), h->config.name,
                                    h->stats.snapshot());
                  }
                });
}

grpc::ServerUnaryReactor* OipService::RepositoryIndex(
    grpc::CallbackServerContext* context, const inference::RepositoryIndexRequest* request,
    inference::RepositoryIndexResponse* response) {
  return answer(inference_.metrics_, context, "RepositoryIndex", true, [&](Job&) {
    for (const auto& h : inference_.hosted_) {
      const bool ready = h->ready.load();
      if (request->ready() && !ready) continue;
      auto* m = response->add_models();
      m->set_name(h->config.name);
      m->set_version(oip::kModelVersion);
      m->set_state(ready ? "READY" : "UNAVAILABLE");
      if (!ready) m->set_reason(inference_.stopping_.load() ? "shutting down" : "loading");
    }
  });
}

grpc::ServerUnaryReactor* OipService::ModelInfer(grpc::CallbackServerContext* context,
                                                 const inference::ModelInferRequest* request,
                                                 inference::ModelInferResponse* response) {
  auto job = make_job(inference_.metrics_, context, "ModelInfer");
  job->inference = true;
  grpc::ServerUnaryReactor* reactor = job->reactor;
  try {
    Hosted& h = find(request->model_name(), request->model_version());
    job->model_label = h.config.name;
    job->hosted = &h;
    if (h.spec.kind == ModelKind::kClassifier) {
      start_classify(h, job, *request, response);
    } else {
      start_generate(h, job, *request, response);
    }
  } catch (...) {
    job->finish(status_from_exception(std::current_exception(), "ModelInfer"));
  }
  return reactor;
}

void OipService::start_classify(Hosted& h, const std::shared_ptr<Job>& job,
                                const inference::ModelInferRequest& request,
                                inference::ModelInferResponse* response) {
  oip::ClassifyInfer checked = oip::check_classify_infer(request, h.config, h.spec);
  job->items = checked.batch;
  job->mode = h.resolve(requested_mode(checked.attention, h));
  job->mode_known = true;
  if (!h.ready.load()) throw_unavailable("model " + h.config.name + " is not ready (loading)");
  struct State {
    std::vector<oip::RequestedOutput> outputs;
    std::string id;
    std::unique_ptr<v1::ClassifyRequest> request;  // IMAGE / PIXELS until decoded
    v1::ClassifyResponse response;                 // top-k (labels) and timing
  };
  auto state = std::make_shared<State>();
  state->outputs = std::move(checked.outputs);
  state->id = request.id();
  job->top_k = checked.top_k;
  job->want_logits = true;
  job->classify_response = &state->response;
  int64_t bytes = 0;
  if (checked.tensors.empty()) {
    state->request = std::make_unique<v1::ClassifyRequest>(std::move(checked.images));
    (void)check_classify_request(*state->request, h.config, h.spec);
    job->classify_request = state->request.get();
    job->free_request = [state] { state->request.reset(); };
    bytes = static_cast<int64_t>(state->request->ByteSizeLong());
  } else {
    job->tensors = std::move(checked.tensors);
    job->seeds = std::move(checked.tensor_seeds);
    bytes = static_cast<int64_t>(job->tensors.size() * sizeof(float));
  }
  const int64_t classes = h.spec.num_classes;
  Job* j = job.get();
  job->respond = [state, j, response, classes] {
    fill_response(response, *j, state->id, state->response.attention_plan(),
                  state->response.timing());
    oip::add_classify_outputs(response, state->outputs, j->logits, classes, state->response);
    return grpc::Status::OK;
  };
  // The job holds what the model needs: the call's message (`request`) is freed here.
  job->context->GetRpcAllocatorState()->FreeRequest();
  inference_.submit_classify(h, job, bytes);
}

void OipService::start_generate(Hosted& h, const std::shared_ptr<Job>& job,
                                const inference::ModelInferRequest& request,
                                inference::ModelInferResponse* response) {
  oip::GenerateInfer checked = oip::check_generate_infer(request, h.config, h.spec);
  job->items = checked.request.items_size();
  job->mode = h.resolve(requested_mode(checked.attention, h));
  job->mode_known = true;
  GenerateRequestCheck check = check_generate_request(checked.request, h.config, h.spec);
  job->format = check.format;
  if (!h.ready.load()) throw_unavailable("model " + h.config.name + " is not ready (loading)");
  struct State {
    std::vector<oip::RequestedOutput> outputs;
    std::string id;
  };
  auto state = std::make_shared<State>();
  state->outputs = std::move(checked.outputs);
  state->id = request.id();
  job->generate_response = &job->own_response;
  const int64_t side = h.spec.image_size;
  Job* j = job.get();
  job->respond = [state, j, response, side] {
    fill_response(response, *j, state->id, j->own_response.attention_plan(),
                  j->own_response.timing());
    oip::add_generate_outputs(response, state->outputs, j->own_response, side);
    return grpc::Status::OK;
  };
  job->context->GetRpcAllocatorState()->FreeRequest();
  inference_.submit_generate(h, job, std::move(check));
}

#define KDESERVE_OIP_UNIMPLEMENTED(Rpc, why)                                                   \
  grpc::ServerUnaryReactor* OipService::Rpc(grpc::CallbackServerContext* context,             \
                                            const inference::Rpc##Request*,                   \
                                            inference::Rpc##Response*) {                      \
    return answer(inference_.metrics_, context, #Rpc, true,                                   \
                  [](Job&) { throw_unimplemented(std::string(#Rpc " is not offered: ") + why); }); \
  }

KDESERVE_OIP_UNIMPLEMENTED(RepositoryModelLoad, kNoRepositoryControl)
KDESERVE_OIP_UNIMPLEMENTED(RepositoryModelUnload, kNoRepositoryControl)
KDESERVE_OIP_UNIMPLEMENTED(SystemSharedMemoryStatus, kNoSharedMemory)
KDESERVE_OIP_UNIMPLEMENTED(SystemSharedMemoryRegister, kNoSharedMemory)
KDESERVE_OIP_UNIMPLEMENTED(SystemSharedMemoryUnregister, kNoSharedMemory)
KDESERVE_OIP_UNIMPLEMENTED(CudaSharedMemoryStatus, kNoSharedMemory)
KDESERVE_OIP_UNIMPLEMENTED(CudaSharedMemoryRegister, kNoSharedMemory)
KDESERVE_OIP_UNIMPLEMENTED(CudaSharedMemoryUnregister, kNoSharedMemory)
KDESERVE_OIP_UNIMPLEMENTED(TraceSetting,
                           "kdeserve has no request tracing; see its access log and /metrics")
KDESERVE_OIP_UNIMPLEMENTED(LogSettings,
                           "the log level is set by the server's configuration (logging.level)")

#undef KDESERVE_OIP_UNIMPLEMENTED

}  // namespace kdeserve::server
