#pragma once
// What the preprocessing tests share: skipping when a ../shared file is missing, reading a file.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>

#include "tests/support/shared_data.h"

/// Declares `var` as the path of ../shared/`relative`, or skips the test saying it is missing.
#define KDESERVE_SHARED_OR_SKIP(var, relative)                                       \
  const std::string var = kdeserve::testing::shared_file(relative);                  \
  if (var.empty()) {                                                                 \
    GTEST_SKIP() << "shared file " << (relative) << " is missing (looked in "        \
                 << kdeserve::testing::shared_dir() << "; set KDESERVE_SHARED_DIR)"; \
  }

/// The bytes of a file (a test failure when it cannot be opened).
inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}
