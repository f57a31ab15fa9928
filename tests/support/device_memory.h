#pragma once
/// Peak extra memory of a scope on a CUDA device (LibTorch's caching allocator statistics), for
/// benchmarks on GPUs. In builds without CUDA, or for CPU devices, it reports 0.

#include <c10/core/Device.h>

#include <cstdint>

namespace kdeserve::testing {

class DevicePeakScope {
 public:
  /// Resets the device's peak statistic (CUDA devices only).
  explicit DevicePeakScope(c10::Device device);
  /// Bytes allocated at the peak since construction, minus those allocated at construction.
  int64_t peak_bytes() const;

 private:
  c10::Device device_;
  int64_t base_ = 0;
};

}  // namespace kdeserve::testing
