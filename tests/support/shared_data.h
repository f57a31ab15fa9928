#pragma once
/// Locating the read-only shared/ folder (specs, data, fixtures) from tests and benchmarks.

#include <string>

namespace kdeserve::testing {

/// $KDESERVE_SHARED_DIR if set, else <repository>/../shared.
std::string shared_dir();

/// shared_dir() + "/" + relative; empty string when that file does not exist.
std::string shared_file(const std::string& relative);

}  // namespace kdeserve::testing
