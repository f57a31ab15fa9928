#include "tests/support/peak_memory.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <torch/version.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

// LibTorch 2.3 made Allocator::allocate non-const and added the pure virtual copy_data.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#define KDESERVE_ALLOCATE_CONST
#else
#define KDESERVE_ALLOCATE_CONST const
#endif

namespace kdeserve::testing {
namespace {

constexpr size_t kHeader = 64;  // keeps the 64-byte alignment LibTorch's CPU allocator gives

std::atomic<int64_t> g_current{0};
std::atomic<int64_t> g_peak{0};

void raise_peak(int64_t now) {
  int64_t seen = g_peak.load(std::memory_order_relaxed);
  while (now > seen && !g_peak.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
  }
}

void counting_delete(void* ptr) {
  if (ptr == nullptr) return;
  char* base = static_cast<char*>(ptr) - kHeader;
  int64_t bytes;
  std::memcpy(&bytes, base, sizeof(bytes));
  g_current.fetch_sub(bytes, std::memory_order_relaxed);
  std::free(base);
}

struct CountingAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) KDESERVE_ALLOCATE_CONST override {
    void* base = nullptr;
    if (posix_memalign(&base, kHeader, n + kHeader) != 0) throw std::bad_alloc();
    const int64_t bytes = static_cast<int64_t>(n);
    std::memcpy(base, &bytes, sizeof(bytes));
    raise_peak(g_current.fetch_add(bytes, std::memory_order_relaxed) + bytes);
    void* data = static_cast<char*>(base) + kHeader;
    return {data, data, &counting_delete, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &counting_delete; }
  // Pure virtual from LibTorch 2.3 on; a plain member before.
  void copy_data(void* dest, const void* src, size_t count) const {
    std::memcpy(dest, src, count);
  }
};

}  // namespace

void PeakMemory::install() {
  static std::once_flag once;
  std::call_once(once, [] {
    static CountingAllocator allocator;
    c10::SetAllocator(c10::DeviceType::CPU, &allocator, /*priority=*/100);
  });
}

int64_t PeakMemory::current() { return g_current.load(std::memory_order_relaxed); }
int64_t PeakMemory::peak() { return g_peak.load(std::memory_order_relaxed); }
void PeakMemory::reset_peak() { g_peak.store(current(), std::memory_order_relaxed); }

PeakMemoryScope::PeakMemoryScope() {
  PeakMemory::install();
  PeakMemory::reset_peak();
  base_ = PeakMemory::current();
}

int64_t PeakMemoryScope::peak_bytes() const { return PeakMemory::peak() - base_; }

}  // namespace kdeserve::testing
