// CUDA runtime queries for attention/device.h; compiled by nvcc only with KDESERVE_WITH_CUDA.
#include <cuda_runtime.h>

#include <string>

#include "attention/device.h"

namespace kdeserve::attention {

CudaInfo cuda_runtime_info() {
  CudaInfo info;
  info.compiled = true;
  cudaRuntimeGetVersion(&info.runtime_version);
  cudaDriverGetVersion(&info.driver_version);
  const cudaError_t status = cudaGetDeviceCount(&info.device_count);
  if (status != cudaSuccess) info.device_count = 0;
  info.message = "CUDA runtime " + std::to_string(info.runtime_version / 1000) + "." +
                 std::to_string(info.runtime_version % 1000 / 10) + ", " +
                 std::to_string(info.device_count) + " device(s)";
  if (status != cudaSuccess) {
    info.message += std::string(": ") + cudaGetErrorString(status);
    cudaGetLastError();  // clear the sticky-free error so later runtime calls start clean
  }
  return info;
}

}  // namespace kdeserve::attention
