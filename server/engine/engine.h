#pragma once
/// The server's LibTorch engine, process-wide part: the model registry as the service sees it,
/// the compute threads, CUDA visibility and the LibTorch version.
///
/// server/engine/ is the only part of the server that includes LibTorch (and the models); its
/// headers are plain C++ so that the gRPC side (service, status mapping, metrics, logging, main)
/// compiles without LibTorch's include directories. Those hold the PyPI wheel's own protobuf and
/// fmt headers, which generated gRPC code and spdlog must never see. Every LibTorch error
/// (c10::Error) leaves the engine as a LibTorchError (server/errors.h).

#include <cstdint>
#include <string>
#include <vector>

#include "models/model_spec.h"

namespace kdeserve::server {

/// What a hosted model does and is (models/model_spec.h: torch-free, shared with the models).
using ModelKind = models::ModelKind;
using ModelSpec = models::ModelSpec;

/// Every registered model name (models::model_names()).
std::vector<std::string> registered_model_names();

/// The spec of a registered model. Throws LibTorchError listing the names when unknown.
ModelSpec registered_model_spec(const std::string& name);

/// The LibTorch version the server was built against, e.g. "2.11.0" (from CMake, else from
/// LibTorch's version header).
std::string torch_version();

/// Sets LibTorch's intra-op threads (and BLIS's, attention/threads.h) to n ≥ 1; call at start-up
/// before any tensor math. Returns the count LibTorch reports afterwards.
int set_compute_threads(int n);

/// All hardware threads of the machine (at least 1).
int hardware_threads();

/// True when this LibTorch has CUDA support and sees a GPU (at::hasCUDA()).
bool cuda_available();

/// CUDA devices LibTorch sees (0 without CUDA).
int64_t cuda_device_count();

/// Why CUDA cannot be used (empty when cuda_available()): this build has no CUDA
/// (KDESERVE_WITH_CUDA=OFF), or it has, and the CUDA runtime sees no device (with its message,
/// e.g. no NVIDIA driver in the container).
std::string cuda_unavailable_reason();

}  // namespace kdeserve::server
