#include "attention/random.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

namespace kdeserve::attention {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t mix_seed(uint64_t a, uint64_t b) { return splitmix64(a ^ splitmix64(b)); }

at::Generator stream_generator(const AttentionCall& call, int64_t entry, int64_t head,
                               Stream stream) {
  TORCH_CHECK(call.entry_seeds.empty() || entry < static_cast<int64_t>(call.entry_seeds.size()),
              "attention: entry_seeds has ", call.entry_seeds.size(), " seeds, entry ", entry,
              " requested");
  const uint64_t entry_seed = call.entry_seeds.empty() ? 0 : call.entry_seeds[entry];
  uint64_t seed = mix_seed(call.seed, entry_seed);
  seed = mix_seed(seed, static_cast<uint64_t>(head));
  seed = mix_seed(seed, static_cast<uint64_t>(stream));
  return at::detail::createCPUGenerator(seed);
}

}  // namespace kdeserve::attention
