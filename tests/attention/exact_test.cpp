// Exact attention against the naive float64 oracle: accuracy, overflow, chunking, memory.
#include <gtest/gtest.h>

#include "attention/attention.h"
#include "attention/exact.h"
#include "tests/attention/test_util.h"
#include "tests/support/peak_memory.h"

namespace kdeserve::attention {
namespace {

using kdeserve::testing::max_rel_diff;
using kdeserve::testing::naive_attention;
using kdeserve::testing::PeakMemoryScope;
using kdeserve::testing::seeded_randn;

TEST(ExactAttention, Float32MatchesNaiveFloat64) {
  const at::Tensor q = seeded_randn({2, 3, 130, 32}, 11, at::kFloat);
  const at::Tensor k = seeded_randn({2, 3, 97, 32}, 12, at::kFloat);
  const at::Tensor v = seeded_randn({2, 3, 97, 24}, 13, at::kFloat);
  const at::Tensor out = attention(q, k, v);
  EXPECT_EQ(out.scalar_type(), at::kFloat);
  EXPECT_LT(max_rel_diff(out, naive_attention(q, k, v, 1 / std::sqrt(32.0))), 1e-5);
}

TEST(ExactAttention, Float64MatchesNaiveTo1e12) {
  const at::Tensor q = seeded_randn({2, 2, 150, 16}, 14);
  const at::Tensor k = seeded_randn({2, 2, 120, 16}, 15);
  const at::Tensor v = seeded_randn({2, 2, 120, 40}, 16);
  EXPECT_LT(max_rel_diff(attention(q, k, v), naive_attention(q, k, v, 0.25)), 1e-12);
}

TEST(ExactAttention, NoOverflowAtLogitsOf1e4) {
  // Logits up to ~1e4: exp overflows without the max-shift even in float64.
  const at::Tensor q = seeded_randn({1, 1, 64, 8}, 17).mul_(40.0);
  const at::Tensor k = seeded_randn({1, 1, 64, 8}, 18).mul_(40.0);
  const at::Tensor v = seeded_randn({1, 1, 64, 8}, 19);
  ASSERT_GT(at::matmul(q, k.transpose(-2, -1)).abs().max().item<double>(), 5e3);
  const at::Tensor out = attention(q, k, v, AttentionOptions().scale(1.0));
  EXPECT_TRUE(at::isfinite(out).all().item<bool>());
  EXPECT_LT(max_rel_diff(out, naive_attention(q, k, v, 1.0)), 1e-10);
  // float32: finite; its logits carry ~1e4 · 2^-24 absolute rounding, so only a loose match.
  const at::Tensor out32 =
      attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), AttentionOptions().scale(1.0));
  EXPECT_TRUE(at::isfinite(out32).all().item<bool>());
  EXPECT_LT(max_rel_diff(out32, out), 1e-2);
}

TEST(ExactAttention, ChunkingDoesNotChangeTheResult) {
  const at::Tensor q = seeded_randn({2, 2, 101, 8}, 20);
  const at::Tensor k = seeded_randn({2, 2, 33, 8}, 21);
  const at::Tensor v = seeded_randn({2, 2, 33, 3}, 22);
  const at::Tensor whole = exact_attention(q, k, v, 0.3);
  for (int64_t elements : {1, 100, 4 * 33 * 7, 4 * 33 * 101}) {
    const at::Tensor chunked = exact_attention(q, k, v, 0.3, ExactOptions().max_chunk_elements(elements));
    EXPECT_LT(max_rel_diff(chunked, whole), 1e-14) << elements;
  }
}

TEST(ExactAttention, EmptyQueries) {
  const at::Tensor out = attention(at::randn({1, 2, 0, 4}), at::randn({1, 2, 3, 4}),
                                   at::randn({1, 2, 3, 5}));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{1, 2, 0, 5}));
}

TEST(ExactAttention, PeakMemoryIsChunkTimesKeysNotQueriesTimesKeys) {
  const int64_t n = 8192;
  const at::Tensor q = at::randn({1, 1, n, 32});
  const at::Tensor v = at::randn({1, 1, n, 32});
  const int64_t chunk_elements = int64_t{1} << 20;
  PeakMemoryScope scope;
  const at::Tensor out =
      exact_attention(q, q, v, 0.1, ExactOptions().max_chunk_elements(chunk_elements));
  const int64_t full_matrix = n * n * 4;  // 256 MiB
  const int64_t bound = 2 * chunk_elements * 4 + 4 * n * 32 * 4;
  EXPECT_LT(scope.peak_bytes(), bound) << "full matrix would be " << full_matrix;
  EXPECT_LT(scope.peak_bytes(), full_matrix / 16);
}

}  // namespace
}  // namespace kdeserve::attention
