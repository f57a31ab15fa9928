// The launch side of the fused CUDA kernel of KDEformer (fused_cuda_kernel.h): torch-free,
// compiled by nvcc only with KDESERVE_WITH_CUDA; the kernel's body is fused_cuda_device.cuh.
#include <cuda_runtime.h>

#include <string>

#include "attention/kdeformer/fused_cuda_device.cuh"
#include "attention/kdeformer/fused_cuda_kernel.h"

namespace kdeserve::attention::kdeformer::cuda_kernel {
namespace {

template <int kCols>
std::string launch_cols(const Problem& pb, cudaStream_t stream) {
  const int64_t chunks = chunks_per_block(pb), grid = grid_size(pb);
  if (grid <= 0) return {};
  if (grid > 0x7fffffffLL) return "kdeformer CUDA kernel: too many thread blocks";
  const int64_t bytes = shared_bytes(pb.dim, pb.dv);
  if (bytes > 48 * 1024) {
    const cudaError_t status =
        cudaFuncSetAttribute(device::fused_kernel<kCols>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (status != cudaSuccess) return cudaGetErrorString(status);
  }
  device::fused_kernel<kCols>
      <<<static_cast<unsigned>(grid), kThreads, static_cast<size_t>(bytes), stream>>>(pb, chunks);
  const cudaError_t status = cudaGetLastError();
  return status == cudaSuccess ? std::string() : std::string(cudaGetErrorString(status));
}

}  // namespace

std::string unsupported_reason(int64_t dim, int64_t dv) {
  int device = 0, limit = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
          cudaSuccess) {
    cudaGetLastError();
    return "the fused CUDA kernel could not read the device's shared memory size";
  }
  if (shared_bytes(dim, dv) > limit) {
    return "the fused CUDA kernel's tiles for D = " + std::to_string(dim) +
           ", Dv = " + std::to_string(dv) + " need " + std::to_string(shared_bytes(dim, dv)) +
           " bytes of shared memory, the device has " + std::to_string(limit);
  }
  return {};
}

std::string launch(const Problem& pb, void* stream) {
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (lane_columns(pb.dv)) {
    case 1:
      return launch_cols<1>(pb, s);
    case 2:
      return launch_cols<2>(pb, s);
    case 4:
      return launch_cols<4>(pb, s);
    default:
      return launch_cols<8>(pb, s);
  }
}

}  // namespace kdeserve::attention::kdeformer::cuda_kernel
