#pragma once

#include <cstdint>
#include <string_view>

namespace kdeserve::server {

/// FNV-1a's 64-bit offset basis: the hash of no bytes.
inline constexpr uint64_t kFnv1aOffset = 1469598103934665603ULL;

/// FNV-1a (64-bit) of bytes, continuing from `h`: the per-item attention seed of Classify, of
/// Generate items with z and no seed, and of Open Inference rows, so that a result depends only
/// on the item's own bytes.
inline uint64_t fnv1a(std::string_view bytes, uint64_t h = kFnv1aOffset) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

}  // namespace kdeserve::server
