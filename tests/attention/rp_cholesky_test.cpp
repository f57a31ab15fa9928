// Accelerated RPCholesky (attention/wildcat/rp_cholesky.h) against its definition: the Nyström
// weights of its pivots equal K_SS⁻¹ K_S,: computed directly, the pivots are distinct, the
// ordered pivot pairs follow sequential RPCholesky's exact distribution, a low-rank kernel
// stops at its rank, float32 and large norms stay finite, and each bin's draws come from its
// own generator only.
#include "attention/wildcat/rp_cholesky.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "attention/wildcat/wildcat.h"
#include "tests/attention/test_util.h"

namespace kdeserve::attention::wildcat {
namespace {

using kdeserve::testing::max_rel_diff;
using kdeserve::testing::seeded_randn;

std::vector<at::Generator> generators(int64_t count, uint64_t seed) {
  std::vector<at::Generator> g;
  for (int64_t i = 0; i < count; ++i) g.push_back(at::detail::createCPUGenerator(seed + i));
  return g;
}

at::Tensor gaussian_kernel(const at::Tensor& ks) {  // [P, n, D] → [P, n, n]
  return at::cdist(ks, ks).square().mul(-0.5).exp();
}

TEST(RpCholeskyAccelerated, WeightsAreTheNystromWeightsOfItsPivots) {
  const at::Tensor ks = seeded_randn({3, 300, 6}, 701).mul_(0.7);
  const at::Tensor sqd = ks.square().sum(2);
  for (int64_t block : {1, 7, 40}) {
    const Pivoted c = rp_cholesky_accelerated(ks, sqd, 40, 1e-12, generators(3, 11), block);
    ASSERT_EQ(c.pivots.sizes(), (at::IntArrayRef{3, 40}));
    EXPECT_TRUE(c.kept.all().item<bool>()) << "a full-rank kernel fills every slot";
    const at::Tensor k = gaussian_kernel(ks);
    for (int64_t g = 0; g < 3; ++g) {
      const at::Tensor s = c.pivots[g];
      const std::vector<int64_t> v(s.data_ptr<int64_t>(), s.data_ptr<int64_t>() + 40);
      EXPECT_EQ(std::set<int64_t>(v.begin(), v.end()).size(), 40u) << "distinct pivots";
      const at::Tensor k_ss = k[g].index_select(0, s).index_select(1, s);
      const at::Tensor direct = at::linalg_solve(k_ss, k[g].index_select(0, s));
      EXPECT_LT(max_rel_diff(c.weights[g], direct), 1e-6) << "block " << block << " bin " << g;
    }
  }
}

// P(first = i, second = j) of sequential RPCholesky on the exponential kernel's residual
// diagonal res_j e^{‖k̃_j‖²}: w_i / Σw, then w'_j / Σw' with res' = res − K_ij² (res = 1).
std::map<std::pair<int64_t, int64_t>, double> pair_law(const at::Tensor& ks2) {  // [n, D]
  const int64_t n = ks2.size(0);
  const at::Tensor k = gaussian_kernel(ks2.unsqueeze(0))[0];
  const at::Tensor e = ks2.square().sum(1).exp();
  std::map<std::pair<int64_t, int64_t>, double> law;
  const double total = e.sum().item<double>();
  for (int64_t i = 0; i < n; ++i) {
    const at::Tensor res = 1 - k[i].square();
    const at::Tensor w = res * e;
    const double second_total = w.sum().item<double>();
    for (int64_t j = 0; j < n; ++j) {
      if (j == i) continue;
      law[{i, j}] = e[i].item<double>() / total * w[j].item<double>() / second_total;
    }
  }
  return law;
}

TEST(RpCholeskyAccelerated, PivotPairsFollowSequentialRpCholesky) {
  // 5 keys, 2 of them close (a proposal after its neighbour is mostly rejected): 20 000 bins of
  // the same keys, each its own generator, are 20 000 independent draws of the first two pivots.
  at::Tensor keys = at::tensor({0.0, 0.0, 0.9, 0.1, 0.95, 0.15, -0.6, 0.8, 0.3, -1.1},
                               at::kDouble).view({5, 2});
  const int64_t bins = 20000;
  const at::Tensor ks = keys.unsqueeze(0).expand({bins, 5, 2}).contiguous();
  const at::Tensor sqd = ks.square().sum(2);
  const Pivoted c = rp_cholesky_accelerated(ks, sqd, 2, 1e-12, generators(bins, 1000), 4);
  std::map<std::pair<int64_t, int64_t>, double> seen;
  const auto p = c.pivots.accessor<int64_t, 2>();
  for (int64_t b = 0; b < bins; ++b) seen[{p[b][0], p[b][1]}] += 1.0 / bins;
  double worst = 0;  // in standard deviations of a frequency
  for (const auto& [pair, prob] : pair_law(keys)) {
    const double sd = std::sqrt(prob * (1 - prob) / bins);
    worst = std::max(worst, std::abs(seen[pair] - prob) / sd);
    EXPECT_LT(std::abs(seen[pair] - prob), 5 * sd + 1e-12)
        << "pair (" << pair.first << ", " << pair.second << "): " << seen[pair] << " vs " << prob;
  }
  std::cout << "figures: largest deviation " << worst << " sd over 20 ordered pairs\n";
}

TEST(RpCholeskyAccelerated, ALowRankKernelStopsAtItsRank) {
  // 3 distinct keys, each repeated: rank 3, so 3 slots are kept and the rest dropped.
  const at::Tensor base = seeded_randn({3, 4}, 711);
  const at::Tensor ks = base.repeat({20, 1}).unsqueeze(0);  // [1, 60, 4]
  const Pivoted c = rp_cholesky_accelerated(ks, ks.square().sum(2), 10, 1e-10, generators(1, 5), 8);
  EXPECT_EQ(c.kept.sum().item<int64_t>(), 3);
  EXPECT_TRUE(c.weights.isfinite().all().item<bool>());
  const at::Tensor dropped = c.weights[0].index_select(0, c.kept[0].logical_not().nonzero().view(-1));
  EXPECT_TRUE(dropped.eq(0).all().item<bool>());
  // The kept pivots reproduce the kernel exactly: K ≈ K_:,S W.
  const at::Tensor k = gaussian_kernel(ks)[0];
  const at::Tensor approx = k.index_select(1, c.pivots[0]).matmul(c.weights[0]);
  EXPECT_LT(max_rel_diff(approx, k), 1e-8);
}

TEST(RpCholeskyAccelerated, Float32AndLargeNormsStayFinite) {
  const at::Tensor ks = seeded_randn({2, 500, 16}, 721).mul_(3.0).to(at::kFloat);
  const Pivoted c = rp_cholesky_accelerated(ks, ks.square().sum(2), 64, 1e-4, generators(2, 9), 32);
  EXPECT_TRUE(c.weights.isfinite().all().item<bool>());
  EXPECT_EQ(c.weights.scalar_type(), at::kFloat);
}

TEST(RpCholeskyAccelerated, EachBinDrawsFromItsOwnGeneratorOnly) {
  const at::Tensor ks = seeded_randn({3, 200, 5}, 731);
  const at::Tensor sqd = ks.square().sum(2);
  std::vector<at::Generator> gens = generators(3, 21);
  const Pivoted all = rp_cholesky_accelerated(ks, sqd, 30, 1e-12, gens, 16);
  const Pivoted again = rp_cholesky_accelerated(ks, sqd, 30, 1e-12, generators(3, 21), 16);
  EXPECT_TRUE(all.pivots.equal(again.pivots)) << "same seeds, same pivots";
  const Pivoted one = rp_cholesky_accelerated(ks.narrow(0, 1, 1), sqd.narrow(0, 1, 1), 30, 1e-12,
                                              {at::detail::createCPUGenerator(22)}, 16);
  EXPECT_TRUE(one.pivots[0].equal(all.pivots[1])) << "bin 1 alone draws what it drew beside others";
}

TEST(CompressBinsAccelerated, EveryKeyWhenTheRankCoversThem) {
  const at::Tensor k = seeded_randn({2, 12, 4}, 741);
  const at::Tensor v = seeded_randn({2, 12, 3}, 742);
  const Coreset c = compress_bins_accelerated(k, v, at::ones({2}, at::kDouble), 1.0, 12,
                                              generators(2, 1), 1e-12);
  EXPECT_TRUE(c.values.equal(v));
  EXPECT_TRUE(c.weights.eq(1).all().item<bool>());
}

}  // namespace
}  // namespace kdeserve::attention::wildcat
