#include "attention/device.h"

namespace kdeserve::attention {

#ifdef KDESERVE_WITH_CUDA
// attention/cuda/runtime_info.cu
CudaInfo cuda_runtime_info();
CudaInfo cuda_info() { return cuda_runtime_info(); }
#else
CudaInfo cuda_info() {
  CudaInfo info;
  info.message = "built without CUDA (configure with -DKDESERVE_WITH_CUDA=ON)";
  return info;
}
#endif

}  // namespace kdeserve::attention
