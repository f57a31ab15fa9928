#include "tests/support/shared_data.h"

#include <cstdlib>
#include <filesystem>

namespace kdeserve::testing {

std::string shared_dir() {
  if (const char* env = std::getenv("KDESERVE_SHARED_DIR"); env != nullptr && *env != '\0') {
    return env;
  }
  return std::string(KDESERVE_SOURCE_DIR) + "/../shared";
}

std::string shared_file(const std::string& relative) {
  const std::string path = shared_dir() + "/" + relative;
  return std::filesystem::exists(path) ? path : std::string();
}

}  // namespace kdeserve::testing
