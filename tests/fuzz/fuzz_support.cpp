// LLVMFuzzerInitialize of every fuzz target: KDESERVE_FUZZ_WRITE_SEEDS=DIR writes the target's
// generated seeds into DIR and exits instead of fuzzing.
#include "tests/fuzz/fuzz_support.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  const char* dir = std::getenv("KDESERVE_FUZZ_WRITE_SEEDS");
  if (dir == nullptr || *dir == '\0') return 0;
  int count = 0;
  for (const auto& seed : kdeserve::fuzz::generated_seeds()) {
    const std::string path = std::string(dir) + "/" + seed.name;
    std::ofstream out(path, std::ios::binary);
    out.write(seed.bytes.data(), static_cast<std::streamsize>(seed.bytes.size()));
    if (!out.flush()) {
      std::fprintf(stderr, "cannot write the seed %s\n", path.c_str());
      std::exit(1);
    }
    ++count;
  }
  std::printf("wrote %d generated seed(s) into %s\n", count, dir);
  std::exit(0);
}
