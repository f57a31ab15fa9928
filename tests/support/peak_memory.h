#pragma once
/// Process-wide accounting of CPU tensor memory, for memory tests and benchmark peak-memory
/// figures. install() wraps LibTorch's CPU allocator; tensors allocated afterwards are counted.

#include <cstdint>

namespace kdeserve::testing {

class PeakMemory {
 public:
  /// Installs the counting allocator (idempotent; thread-safe).
  static void install();
  /// Bytes of CPU tensor storage currently allocated through the counting allocator.
  static int64_t current();
  /// Highest current() since the last reset_peak().
  static int64_t peak();
  /// Sets peak() to current().
  static void reset_peak();
};

/// Peak extra bytes of a scope: construct before the work, read peak_bytes() after.
class PeakMemoryScope {
 public:
  PeakMemoryScope();
  /// peak() − current() at construction.
  int64_t peak_bytes() const;

 private:
  int64_t base_;
};

}  // namespace kdeserve::testing
