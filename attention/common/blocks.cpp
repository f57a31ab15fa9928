#include "attention/common/blocks.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace kdeserve::attention::common {

std::vector<int64_t> balanced_starts(int64_t n, int64_t blocks) {
  TORCH_CHECK(blocks >= 1, "balanced_starts: blocks must be >= 1, got ", blocks);
  std::vector<int64_t> start(blocks + 1);
  for (int64_t j = 0; j <= blocks; ++j) start[j] = j * n / blocks;
  return start;
}

std::vector<int64_t> fixed_starts(int64_t n, int64_t size) {
  TORCH_CHECK(size >= 1, "fixed_starts: size must be >= 1, got ", size);
  const int64_t blocks = (n + size - 1) / size;
  std::vector<int64_t> start(blocks + 1);
  for (int64_t j = 0; j <= blocks; ++j) start[j] = std::min(j * size, n);
  return start;
}

std::vector<int64_t> proportional_starts(const std::vector<int64_t>& reference, int64_t n) {
  const int64_t total = reference.back();
  TORCH_CHECK(total >= 1, "proportional_starts: the reference blocks hold no position");
  std::vector<int64_t> start(reference.size());
  for (size_t j = 0; j < reference.size(); ++j) start[j] = reference[j] * n / total;
  return start;
}

BlockLayout block_layout(const std::vector<int64_t>& start, at::Device device, int64_t min_width) {
  TORCH_CHECK(start.size() >= 2 && start.front() == 0, "block_layout: needs starts from 0");
  BlockLayout layout;
  layout.blocks = static_cast<int64_t>(start.size()) - 1;
  layout.width = min_width;
  for (int64_t j = 0; j < layout.blocks; ++j) {
    TORCH_CHECK(start[j + 1] >= start[j], "block_layout: starts must be non-decreasing");
    layout.width = std::max(layout.width, start[j + 1] - start[j]);
  }
  const int64_t rows = layout.rows(), n = start.back();
  at::Tensor position_of_row = at::zeros({rows}, at::kLong);
  at::Tensor row_valid = at::zeros({rows}, at::kBool);
  at::Tensor row_of_position = at::empty({n}, at::kLong);
  at::Tensor block_of_position = at::empty({n}, at::kLong);
  int64_t* por = position_of_row.data_ptr<int64_t>();
  bool* valid = row_valid.data_ptr<bool>();
  int64_t* rop = row_of_position.data_ptr<int64_t>();
  int64_t* bop = block_of_position.data_ptr<int64_t>();
  for (int64_t j = 0; j < layout.blocks; ++j) {
    for (int64_t p = start[j]; p < start[j + 1]; ++p) {
      const int64_t row = j * layout.width + (p - start[j]);
      por[row] = p;
      valid[row] = true;
      rop[p] = row;
      bop[p] = j;
    }
  }
  layout.position_of_row = position_of_row.to(device);
  layout.row_valid = row_valid.to(device);
  layout.row_of_position = row_of_position.to(device);
  layout.block_of_position = block_of_position.to(device);
  return layout;
}

at::Tensor invert_permutation(const at::Tensor& perm) {
  at::Tensor iota = at::arange(perm.size(1), perm.options()).expand_as(perm);
  return at::empty_like(perm).scatter_(1, perm, iota);
}

at::Tensor gather_rows(const at::Tensor& x, const at::Tensor& idx) {
  const int64_t groups = x.size(0), n = x.size(1), c = x.size(2);
  at::Tensor offsets = at::arange(groups, idx.options()).mul_(n).unsqueeze(1);  // [G, 1]
  // embedding() is ATen's fast row gather (several times index_select's speed on CPU).
  return at::embedding(x.reshape({groups * n, c}), (idx + offsets).flatten())
      .view({groups, idx.size(1), c});
}

at::Tensor items_of_rows(const BlockLayout& layout, const at::Tensor& order) {
  return order.gather(1,
                      layout.position_of_row.unsqueeze(0).expand({order.size(0), layout.rows()}));
}

at::Tensor rows_of_items(const BlockLayout& layout, const at::Tensor& order) {
  return at::take(layout.row_of_position, invert_permutation(order));
}

at::Tensor blocks_of_items(const BlockLayout& layout, const at::Tensor& order) {
  return at::take(layout.block_of_position, invert_permutation(order));
}

}  // namespace kdeserve::attention::common
