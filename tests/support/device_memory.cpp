#include "tests/support/device_memory.h"

#ifdef KDESERVE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace kdeserve::testing {

#ifdef KDESERVE_WITH_CUDA
namespace {
namespace alloc = c10::cuda::CUDACachingAllocator;
// Index 0 of the stat arrays aggregates every pool.
int64_t allocated(c10::DeviceIndex d) { return alloc::getDeviceStats(d).allocated_bytes[0].current; }
int64_t peak(c10::DeviceIndex d) { return alloc::getDeviceStats(d).allocated_bytes[0].peak; }
}  // namespace

DevicePeakScope::DevicePeakScope(c10::Device device) : device_(device) {
  if (!device_.is_cuda()) return;
  alloc::resetPeakStats(device_.index());
  base_ = allocated(device_.index());
}

int64_t DevicePeakScope::peak_bytes() const {
  return device_.is_cuda() ? peak(device_.index()) - base_ : 0;
}
#else
DevicePeakScope::DevicePeakScope(c10::Device device) : device_(device) {}
int64_t DevicePeakScope::peak_bytes() const { return 0; }
#endif

}  // namespace kdeserve::testing
