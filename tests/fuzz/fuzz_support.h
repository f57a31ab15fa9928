#pragma once
/// What every libFuzzer target of tests/fuzz shares (kdeserve_add_fuzzer compiles
/// fuzz_support.cpp into each): the seeds it generates and the check that fails a run.
///
/// A target defines LLVMFuzzerTestOneInput() and generated_seeds(). Its ctest
/// (tests/fuzz/run_fuzzer.sh) first runs it with KDESERVE_FUZZ_WRITE_SEEDS=DIR, which writes
/// generated_seeds() into DIR and exits, then fuzzes with DIR and the CORPUS folders as seeds.
/// Plain C++: a target includes the headers of what it fuzzes itself.

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace kdeserve::fuzz {

/// One seed input: a file name (no directories) and its bytes.
struct Seed {
  std::string name;
  std::string bytes;
};

/// The seeds the target makes by code (valid inputs of each kind it parses). Defined by every
/// target; may return none when its CORPUS folders have enough.
std::vector<Seed> generated_seeds();

}  // namespace kdeserve::fuzz

/// Fails the run when `condition` is false: prints the message and aborts, so libFuzzer saves
/// the input as a crash artifact. For properties the code under test promises beyond not
/// crashing (a shape, a round trip).
#define KDESERVE_FUZZ_CHECK(condition, message)                                                  \
  do {                                                                                           \
    if (!(condition)) {                                                                          \
      std::fprintf(stderr, "%s:%d: fuzz check failed: %s: %s\n", __FILE__, __LINE__, #condition, \
                   std::string(message).c_str());                                                \
      std::abort();                                                                              \
    }                                                                                            \
  } while (false)
