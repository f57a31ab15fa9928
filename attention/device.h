#pragma once
/// What this build and this machine offer for CUDA (the ATen paths run on CUDA tensors when
/// LibTorch itself has CUDA; custom kernels come later behind attention()'s dispatch).

#include <string>

namespace kdeserve::attention {

struct CudaInfo {
  /// Built with -DKDESERVE_WITH_CUDA=ON (nvcc-compiled parts linked in).
  bool compiled = false;
  /// CUDA runtime and driver versions as 1000·major + 10·minor (0 when unknown).
  int runtime_version = 0;
  int driver_version = 0;
  /// Visible CUDA devices (0 without a GPU or a driver).
  int device_count = 0;
  /// One line for logs, e.g. "CUDA runtime 13.0, 0 devices: no CUDA-capable device".
  std::string message;
};

/// Queries the CUDA runtime when compiled in; never throws.
CudaInfo cuda_info();

}  // namespace kdeserve::attention
