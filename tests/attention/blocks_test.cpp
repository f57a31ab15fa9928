// attention/common/blocks: block starts, the padded block layout and the permutation helpers
// shared by KDEformer, HyperAttention, Reformer and ScatterBrain.
#include "attention/common/blocks.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/attention/test_util.h"

namespace kdeserve::attention::common {
namespace {

using kdeserve::testing::seeded_randn;

at::Tensor longs(const std::vector<int64_t>& values) {
  return at::tensor(values, at::TensorOptions(at::kLong));
}

TEST(Blocks, StartsOfBalancedFixedAndProportionalSplits) {
  EXPECT_EQ(balanced_starts(10, 3), (std::vector<int64_t>{0, 3, 6, 10}));
  EXPECT_EQ(balanced_starts(2, 4), (std::vector<int64_t>{0, 0, 1, 1, 2}));
  EXPECT_EQ(fixed_starts(10, 4), (std::vector<int64_t>{0, 4, 8, 10}));
  EXPECT_EQ(fixed_starts(8, 4), (std::vector<int64_t>{0, 4, 8}));
  EXPECT_EQ(proportional_starts({0, 4, 8, 10}, 5), (std::vector<int64_t>{0, 2, 4, 5}));
  EXPECT_THROW(balanced_starts(3, 0), c10::Error);
  EXPECT_THROW(fixed_starts(3, 0), c10::Error);
}

// Blocks [0, 3), [3, 6), [6, 10) in rows of width 4: rows 3 and 7 are padding.
TEST(Blocks, LayoutPadsEveryBlockToTheWidestAndInvertsRows) {
  const BlockLayout l = block_layout({0, 3, 6, 10}, at::kCPU);
  EXPECT_EQ(l.blocks, 3);
  EXPECT_EQ(l.width, 4);
  EXPECT_EQ(l.rows(), 12);
  EXPECT_TRUE(l.padded());
  EXPECT_TRUE(l.position_of_row.equal(longs({0, 1, 2, 0, 3, 4, 5, 0, 6, 7, 8, 9})));
  EXPECT_TRUE(l.row_valid.equal(longs({1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1}).to(at::kBool)));
  EXPECT_TRUE(l.row_of_position.equal(longs({0, 1, 2, 4, 5, 6, 8, 9, 10, 11})));
  EXPECT_TRUE(l.block_of_position.equal(longs({0, 0, 0, 1, 1, 1, 2, 2, 2, 2})));
  // min_width widens every block; equal blocks without it are not padded.
  const BlockLayout wide = block_layout({0, 3, 6, 10}, at::kCPU, 6);
  EXPECT_EQ(wide.width, 6);
  EXPECT_TRUE(wide.row_of_position.equal(longs({0, 1, 2, 6, 7, 8, 12, 13, 14, 15})));
  const BlockLayout even = block_layout(fixed_starts(8, 4), at::kCPU);
  EXPECT_FALSE(even.padded());
  EXPECT_TRUE(even.row_valid.all().item<bool>());
  EXPECT_THROW(block_layout({0, 3, 2}, at::kCPU), c10::Error);
}

// With a per-group sort order: the item of each item's row is the item itself, its block is
// the block of its sorted position, and the rows hold the items in sorted order.
TEST(Blocks, ItemsRowsAndBlocksFollowEachGroupsOrder) {
  const int64_t groups = 3, n = 11;
  const at::Tensor order = seeded_randn({groups, n}, 7).argsort(/*dim=*/int64_t{1});  // [G, N]
  const BlockLayout l = block_layout(balanced_starts(n, 4), at::kCPU);
  const at::Tensor inverse = invert_permutation(order);
  EXPECT_TRUE(order.gather(1, inverse).equal(at::arange(n).expand({groups, n})));
  const at::Tensor rows = rows_of_items(l, order);      // [G, N]
  const at::Tensor items = items_of_rows(l, order);     // [G, R]
  const at::Tensor blocks = blocks_of_items(l, order);  // [G, N]
  EXPECT_EQ(items.sizes(), (at::IntArrayRef{groups, l.rows()}));
  EXPECT_TRUE(items.gather(1, rows).equal(at::arange(n).expand({groups, n})));
  EXPECT_TRUE(blocks.equal(rows.div(l.width, "floor")));
  EXPECT_TRUE(blocks.equal(at::take(l.block_of_position, inverse)));
  for (int64_t g = 0; g < groups; ++g) {
    EXPECT_TRUE(items[g].masked_select(l.row_valid).equal(order[g]));
  }
}

TEST(Blocks, GatherRowsSelectsWithinEachGroup) {
  const at::Tensor x = seeded_randn({2, 5, 3}, 1);
  const at::Tensor idx = longs({4, 0, 0, 2, 1, 3}).view({2, 3});
  const at::Tensor got = gather_rows(x, idx);
  EXPECT_EQ(got.sizes(), (at::IntArrayRef{2, 3, 3}));
  for (int64_t g = 0; g < 2; ++g) {
    EXPECT_TRUE(got[g].equal(x[g].index_select(0, idx[g])));
  }
}

}  // namespace
}  // namespace kdeserve::attention::common
