#include "server/engine/engine.h"

#include <ATen/Context.h>
#include <torch/version.h>

#include "attention/device.h"
#include "attention/threads.h"
#include "models/registry.h"
#include "server/engine/translate.h"

namespace kdeserve::server {

namespace km = kdeserve::models;
using engine_detail::translating;

std::vector<std::string> registered_model_names() {
  return translating([] { return km::model_names(); });
}

ModelSpec registered_model_spec(const std::string& name) {
  return translating([&] { return km::model_spec(name); });
}

// KDESERVE_TORCH_VERSION comes from CMake; when it could not read one, use the header's numbers.
std::string torch_version() {
  const std::string from_cmake = KDESERVE_TORCH_VERSION;
  if (!from_cmake.empty() && from_cmake != "unknown") return from_cmake;
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

int set_compute_threads(int n) {
  return translating([&] { return attention::set_num_threads(n); });
}

int hardware_threads() { return attention::hardware_threads(); }

bool cuda_available() {
  return translating([] { return at::hasCUDA(); });
}

std::string cuda_unavailable_reason() {
  if (cuda_available()) return {};
  const attention::CudaInfo info = attention::cuda_info();
  if (!info.compiled) {
    return "this kdeserve-server was built without CUDA (KDESERVE_WITH_CUDA=OFF): use the CUDA "
           "image (Dockerfile.cuda) or a build with -DKDESERVE_WITH_CUDA=ON";
  }
  return "no CUDA device is visible (" + info.message +
         "); on Docker run with --gpus, on Kubernetes request nvidia.com/gpu";
}

int64_t cuda_device_count() {
  return translating([] { return static_cast<int64_t>(at::getNumGPUs()); });
}

}  // namespace kdeserve::server
