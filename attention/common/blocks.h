#pragma once
/// Block layout of sorted items, shared by KDEformer, HyperAttention, Reformer and ScatterBrain
/// (peers.md §3, §4, §6). N items (queries or keys) are sorted per (entry, head), e.g. by their
/// LSH bucket; the sorted positions are cut into consecutive blocks, block j holding positions
/// [start[j], start[j+1]), and each block is laid out in `width` rows (the largest block, or
/// more), so that the blocks of all groups become one batched matrix product. Rows past the end
/// of a block are padding: they point at position 0 and are marked not valid.
///
/// Shapes: G = groups (batch · heads), N = items, R = blocks · width padded rows.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace kdeserve::attention::common {

/// The layout of N sorted positions in `blocks` blocks of `width` rows. The same for every group.
struct BlockLayout {
  int64_t blocks = 1;
  int64_t width = 0;             ///< rows per block: ≥ the largest block
  at::Tensor position_of_row;    ///< [R] int64: sorted position of each row (padding → 0)
  at::Tensor row_valid;          ///< [R] bool: the row holds a position
  at::Tensor row_of_position;    ///< [N] int64: row of each sorted position
  at::Tensor block_of_position;  ///< [N] int64: block of each sorted position
  /// Rows: blocks · width.
  int64_t rows() const { return blocks * width; }
  /// Whether any row is padding (some block is narrower than `width`).
  bool padded() const { return rows() != row_of_position.numel(); }
};

/// Block starts of the balanced split of n positions into `blocks` blocks: start[j] = ⌊j·n/blocks⌋,
/// so block sizes differ by at most one (all equal when blocks divides n). → blocks + 1 entries.
std::vector<int64_t> balanced_starts(int64_t n, int64_t blocks);

/// Block starts of blocks of `size` positions, the last one shorter: start[j] = min(j·size, n).
/// → ⌈n/size⌉ + 1 entries.
std::vector<int64_t> fixed_starts(int64_t n, int64_t size);

/// Starts of `n` positions split in proportion to the blocks of `reference` (over
/// reference.back() positions): start[j] = reference[j] · n / reference.back(). Gives queries
/// the share of each key block.
std::vector<int64_t> proportional_starts(const std::vector<int64_t>& reference, int64_t n);

/// Layout of the blocks [start[j], start[j+1]) (start non-decreasing, start[0] = 0, N =
/// start.back()), each padded to width = max(largest block, min_width). Tensors on `device`.
BlockLayout block_layout(const std::vector<int64_t>& start, at::Device device,
                         int64_t min_width = 0);

/// Inverse of a batch of permutations: inv[g, perm[g, i]] = i. perm [G, N] int64 → [G, N].
at::Tensor invert_permutation(const at::Tensor& perm);

/// Rows of x [G, N, C] selected per group by idx [G, R] (indices into N) → [G, R, C].
at::Tensor gather_rows(const at::Tensor& x, const at::Tensor& idx);

/// Original item of each padded row: order [G, N] (order[g, p] = item at sorted position p) →
/// [G, R] (padding rows → the item at position 0).
at::Tensor items_of_rows(const BlockLayout& layout, const at::Tensor& order);

/// Padded row of each original item: order [G, N] as above → [G, N].
at::Tensor rows_of_items(const BlockLayout& layout, const at::Tensor& order);

/// Block of each original item: order [G, N] as above → [G, N].
at::Tensor blocks_of_items(const BlockLayout& layout, const at::Tensor& order);

}  // namespace kdeserve::attention::common
