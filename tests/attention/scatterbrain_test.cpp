// ScatterBrain: the sparse + low-rank estimate against its dense definition (band and LSH
// supports), the exact limit, unbiasedness of the cosh features, finiteness, invariances, and
// parity with fly's SBLocalAttention (fixtures/scatterbrain_parity.safetensors).
#include "attention/scatterbrain/scatterbrain.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <memory>

#include "attention/attention.h"
#include "attention/common/random_features.h"
#include "attention/kdeformer/lsh.h"
#include "models/weights/safetensors.h"
#include "tests/attention/peer_test_util.h"
#include "tests/attention/test_util.h"
#include "tests/support/peak_memory.h"

namespace kdeserve::attention::scatterbrain {
namespace {

using kdeserve::testing::max_rel_diff;
using kdeserve::testing::naive_attention;
using kdeserve::testing::PeakMemoryScope;
using kdeserve::testing::seeded_call;
using kdeserve::testing::seeded_randn;
using kdeserve::testing::with_options;

// The reference's band as a dense mask [Nq, Nk]: −⌊w/2⌋ ≤ j − i < ⌈w/2⌉.
at::Tensor band_mask(int64_t nq, int64_t nk, int64_t w) {
  at::Tensor offset =
      at::arange(nk, at::kLong).unsqueeze(0) - at::arange(nq, at::kLong).unsqueeze(1);
  return (offset >= -(w / 2)) & (offset < (w + 1) / 2);
}

// Block of each sorted position when n positions are split into `blocks` balanced blocks.
at::Tensor balanced_block_of_sorted(const at::Tensor& order, int64_t blocks) {
  const int64_t n = order.size(0);
  at::Tensor block = at::empty({n}, at::kLong);
  for (int64_t j = 0; j < blocks; ++j) {
    for (int64_t p = j * n / blocks; p < (j + 1) * n / blocks; ++p) block[order[p]] = j;
  }
  return block;
}

// The LSH support as a dense mask [Nq, Nk] for one (entry, head), from hyperplanes [D, r].
at::Tensor lsh_mask(const at::Tensor& q, const at::Tensor& k, const at::Tensor& proj, int64_t w) {
  const int64_t nk = k.size(0), blocks = (nk + w - 1) / w;
  auto order = [&](const at::Tensor& x) {
    return kdeformer::hash_sort(
        kdeformer::bucket_ranks(x.unsqueeze(0), proj.unsqueeze(0), BucketOrder::kGray))[0];
  };
  at::Tensor qb = balanced_block_of_sorted(order(q), blocks);
  at::Tensor kb = balanced_block_of_sorted(order(k), blocks);
  return qb.unsqueeze(1).eq(kb.unsqueeze(0));
}

// The estimate from its definition, densely: exact e^{scale q·k} on the support, the cosh
// random-feature kernel φ(q)·φ(k) off it, normalised per query. One (entry, head), float64,
// directions w [m/2, D]; logits small enough that nothing overflows.
at::Tensor dense_scatterbrain(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              double scale, const at::Tensor& w, const at::Tensor& mask) {
  const double root = std::sqrt(scale);
  auto phi = [&](const at::Tensor& x) {
    at::Tensor xs = x.to(at::kDouble) * root;
    at::Tensor proj = at::matmul(xs, w.to(at::kDouble).t());
    return (at::cat({proj, -proj}, -1) - xs.square().sum(-1, true) / 2).exp() /
           std::sqrt(2.0 * static_cast<double>(w.size(0)));
  };
  at::Tensor low_rank = at::matmul(phi(q), phi(k).t());
  at::Tensor exact = at::matmul(q.to(at::kDouble), k.to(at::kDouble).t()).mul(scale).exp();
  at::Tensor a = at::where(mask, exact, low_rank);
  return at::matmul(a, v.to(at::kDouble)) / a.sum(-1, true);
}

TEST(ScatterBrain, BandMatchesTheDenseEstimatorOnOddSizesWithNqNeNkAndDvNeD) {
  const at::Tensor q = seeded_randn({2, 3, 21, 5}, 1) * 0.8,
                   k = seeded_randn({2, 3, 14, 5}, 2) * 0.8;
  const at::Tensor v = seeded_randn({2, 3, 14, 7}, 3);
  const at::Tensor w = seeded_randn({2, 3, 5, 5}, 4);
  AttentionCall call;
  call.injected.features = w;
  for (int64_t window : {1, 4, 7, 30, 40}) {
    const at::Tensor out = scatterbrain_attention(
        q, k, v, 0.45, ScatterBrainOptions().local_window(window).num_features(10), call);
    ASSERT_EQ(out.sizes(), (at::IntArrayRef{2, 3, 21, 7}));
    for (int64_t b = 0; b < 2; ++b) {
      for (int64_t h = 0; h < 3; ++h) {
        const at::Tensor expect =
            dense_scatterbrain(q[b][h], k[b][h], v[b][h], 0.45, w[b][h], band_mask(21, 14, window));
        EXPECT_LT(max_rel_diff(out[b][h], expect), 1e-12) << "w=" << window;
      }
    }
  }
}

// Several query blocks of the largest size (64) and windows up to and beyond it.
TEST(ScatterBrain, BandMatchesTheDenseEstimatorOnLongSequences) {
  const at::Tensor q = seeded_randn({1, 1, 150, 4}, 1) * 0.8;
  const at::Tensor k = seeded_randn({1, 1, 130, 4}, 2) * 0.8;
  const at::Tensor v = seeded_randn({1, 1, 130, 3}, 3);
  const at::Tensor w = seeded_randn({4, 4}, 4);
  AttentionCall call;
  call.injected.features = w;
  for (int64_t window : {3, 64, 70, 101}) {
    const at::Tensor out = scatterbrain_attention(
        q, k, v, 0.5, ScatterBrainOptions().local_window(window).num_features(8), call);
    const at::Tensor expect =
        dense_scatterbrain(q[0][0], k[0][0], v[0][0], 0.5, w, band_mask(150, 130, window));
    EXPECT_LT(max_rel_diff(out[0][0], expect), 1e-12) << "w=" << window;
  }
}

TEST(ScatterBrain, LshBlocksMatchTheDenseEstimatorAndAreReported) {
  const at::Tensor q = seeded_randn({1, 2, 19, 6}, 1) * 0.8,
                   k = seeded_randn({1, 2, 23, 6}, 2) * 0.8;
  const at::Tensor v = seeded_randn({1, 2, 23, 4}, 3);
  const at::Tensor w = seeded_randn({3, 6}, 4);
  const at::Tensor proj = seeded_randn({6, 3}, 5);
  AttentionReport report;
  AttentionCall call;
  call.injected.features = w;
  call.injected.projections = proj;
  call.report = &report;
  const auto opt = ScatterBrainOptions()
                       .support(SparseSupport::kLsh)
                       .local_window(5)
                       .num_features(6)
                       .num_projections(3);
  const at::Tensor out = scatterbrain_attention(q, k, v, 0.5, opt, call);
  for (int64_t h = 0; h < 2; ++h) {
    const at::Tensor expect =
        dense_scatterbrain(q[0][h], k[0][h], v[0][h], 0.5, w, lsh_mask(q[0][h], k[0][h], proj, 5));
    EXPECT_LT(max_rel_diff(out[0][h], expect), 1e-12);
  }
  EXPECT_EQ(report.num_blocks, 5);  // ⌈23 / 5⌉
  EXPECT_EQ(report.block_keys, 5);  // 23 keys in 5 balanced blocks: 4 or 5 each
  EXPECT_EQ(report.num_features, 6);
}

// The sparse part is exact: where the support holds every key, the estimate is exact attention
// whatever the features (computed through the merge, not the fallback).
TEST(ScatterBrain, ExactWhenTheSupportCoversAllKeys) {
  for (auto dtype : {at::kDouble, at::kFloat}) {
    const at::Tensor q = seeded_randn({2, 2, 11, 4}, 1, dtype) * 2,
                     k = seeded_randn({2, 2, 8, 4}, 2, dtype) * 2;
    const at::Tensor v = seeded_randn({2, 2, 8, 3}, 3, dtype);
    const at::Tensor exact = naive_attention(q, k, v, 0.5);
    const double tol = dtype == at::kDouble ? 1e-12 : 1e-5;
    // Band: ⌊w/2⌋ ≥ Nq − 1 = 10 and ⌈w/2⌉ ≥ Nk = 8.
    const auto band = ScatterBrainOptions().local_window(21).num_features(8);
    EXPECT_FALSE(exact_reason(band, 11, 8).empty());
    EXPECT_TRUE(exact_reason(ScatterBrainOptions().local_window(19), 11, 8).empty());  // ⌊19/2⌋ = 9
    EXPECT_LT(max_rel_diff(scatterbrain_attention(q, k, v, 0.5, band, seeded_call(1)), exact), tol);
    const auto lsh =
        ScatterBrainOptions().support(SparseSupport::kLsh).local_window(8).num_features(8);
    EXPECT_FALSE(exact_reason(lsh, 11, 8).empty());
    EXPECT_TRUE(exact_reason(ScatterBrainOptions(lsh).local_window(7), 11, 8).empty());
    EXPECT_LT(max_rel_diff(scatterbrain_attention(q, k, v, 0.5, lsh, seeded_call(1)), exact), tol);
    AttentionReport report;
    AttentionCall call;
    call.report = &report;
    const at::Tensor via_dispatch = attention(
        q, k, v, AttentionOptions().method(Method::kScatterBrain).scale(0.5).scatterbrain(band),
        call);
    EXPECT_EQ(report.ran, Method::kExact);
    EXPECT_NE(report.reason.find("band"), std::string::npos) << report.reason;
    EXPECT_LT(max_rel_diff(via_dispatch, exact), tol);
  }
}

// E[φ(q)·φ(k)] = exp(scale q·k) for the cosh map [ω·x̃, −ω·x̃] with orthogonal directions.
// Tolerance: 4 empirical standard errors over 4000 draws, and 10 % of the kernel.
TEST(ScatterBrain, CoshKernelEstimateIsUnbiased) {
  const int64_t dim = 4, directions = 8, draws = 4000;
  const double scale = 0.5;
  const at::Tensor q = seeded_randn({1, 3, dim}, 10), k = seeded_randn({1, 3, dim}, 11);
  const at::Tensor exact = (q * k).sum(-1).mul(scale).exp().squeeze(0);
  at::Generator gen = at::detail::createCPUGenerator(77);
  // directions a multiple of D: every 8 consecutive rows are whole, independent Haar blocks.
  const at::Tensor w = random_features::draw_directions(
                           draws * directions, dim, random_features::Directions::kOrthogonal, gen)
                           .view({draws, directions, dim});
  const at::Tensor a = random_features::log_features(q.expand({draws, 3, dim}), w, scale, true);
  const at::Tensor b = random_features::log_features(k.expand({draws, 3, dim}), w, scale, true);
  const at::Tensor estimates = (a + b).exp().mean(2);  // [draws, 3]
  testing::expect_unbiased_estimates(estimates.t(), exact);
}

TEST(ScatterBrain, ErrorShrinksAsFeaturesGrow) {
  testing::expect_error_shrinks_as_features_grow([](const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v, double scale, int64_t m,
                                                    const AttentionCall& call) {
    return scatterbrain_attention(q, k, v, scale,
                                  ScatterBrainOptions().local_window(8).num_features(m), call);
  });
}

TEST(ScatterBrain, FiniteAtLargeLogits) {
  for (auto dtype : {at::kFloat, at::kDouble}) {
    for (auto support : {SparseSupport::kBand, SparseSupport::kLsh}) {
      const at::Tensor q = seeded_randn({1, 2, 37, 16}, 1, dtype) * 10;
      const at::Tensor k = seeded_randn({1, 2, 29, 16}, 2, dtype) * 10;
      const at::Tensor v = seeded_randn({1, 2, 29, 3}, 3, dtype);
      const at::Tensor out = scatterbrain_attention(
          q, k, v, 1.0, ScatterBrainOptions().support(support).local_window(6), seeded_call(1));
      EXPECT_TRUE(at::isfinite(out).all().item<bool>()) << dtype;
    }
  }
}

TEST(ScatterBrain, Float32MatchesFloat64) {
  const at::Tensor q = seeded_randn({2, 2, 17, 8}, 1), k = seeded_randn({2, 2, 23, 8}, 2);
  const at::Tensor v = seeded_randn({2, 2, 23, 6}, 3);
  for (auto support : {SparseSupport::kBand, SparseSupport::kLsh}) {
    const auto opt = ScatterBrainOptions().support(support).local_window(5).num_features(16);
    testing::expect_float32_matches_float64(with_options(scatterbrain_attention, opt), q, k, v,
                                            0.35, 1e-4);
  }
}

TEST(ScatterBrain, DeterministicPerSeedAndEntriesAreIndependent) {
  const at::Tensor q = seeded_randn({2, 2, 12, 6}, 1), k = seeded_randn({2, 2, 10, 6}, 2);
  const at::Tensor v = seeded_randn({2, 2, 10, 5}, 3);
  for (auto support : {SparseSupport::kBand, SparseSupport::kLsh}) {
    const auto opt = ScatterBrainOptions().support(support).local_window(3).num_features(8);
    testing::expect_deterministic_and_entries_independent(with_options(scatterbrain_attention, opt),
                                                          q, k, v, 0.4);
  }
}

TEST(ScatterBrain, ValueShiftShiftsTheOutput) {
  const at::Tensor q = seeded_randn({1, 1, 9, 4}, 1), k = seeded_randn({1, 1, 12, 4}, 2);
  const at::Tensor v = seeded_randn({1, 1, 12, 3}, 3);
  testing::expect_value_shift_shifts_output(
      with_options(scatterbrain_attention, ScatterBrainOptions().local_window(4).num_features(8)),
      q, k, v, 0.5);
}

// No Nq × Nk tensor: the extra memory grows linearly in n and stays below n² bytes.
TEST(ScatterBrain, MemoryIsLinearInTheSequenceLength) {
  const int64_t m = 64, d = 64, w = 32;
  for (auto support : {SparseSupport::kBand, SparseSupport::kLsh}) {
    testing::expect_memory_linear_in_sequence_length(
        with_options(scatterbrain_attention,
                     ScatterBrainOptions().support(support).local_window(w).num_features(m)),
        [&](int64_t n) { return 8 * n * (2 * w + 64 + m + 2 * d) * 4; });
  }
}

TEST(ScatterBrain, RejectsBadOptions) {
  const at::Tensor q = seeded_randn({1, 1, 3, 2}, 1);
  EXPECT_THROW(scatterbrain_attention(q, q, q, 1.0, ScatterBrainOptions().num_features(7)),
               c10::Error);
  EXPECT_THROW(scatterbrain_attention(q, q, q, 1.0, ScatterBrainOptions().num_features(0)),
               c10::Error);
  EXPECT_THROW(exact_reason(ScatterBrainOptions().local_window(0), 3, 3), c10::Error);
  EXPECT_THROW(
      exact_reason(ScatterBrainOptions().support(SparseSupport::kLsh).num_projections(0), 3, 3),
      c10::Error);
  AttentionCall call;
  call.injected.features = seeded_randn({8, 2}, 2);  // m = 8 needs 4 directions
  EXPECT_THROW(scatterbrain_attention(q, q, q, 1.0, ScatterBrainOptions().num_features(8), call),
               c10::Error);
}

TEST(ScatterBrainParity, FlySbLocalAttention) {
  const models::SafetensorsFile file = models::SafetensorsFile::open(
      std::string(KDESERVE_PEER_FIXTURE_DIR) + "/scatterbrain_parity.safetensors");
  for (const std::string name : {"even", "odd", "wide"}) {
    const at::Tensor config = file.get(name + "_config");
    AttentionCall call;
    call.injected.features = file.get(name + "_features");
    const auto opt = ScatterBrainOptions()
                         .local_window(config[0].item<int64_t>())
                         .num_features(config[1].item<int64_t>());
    const at::Tensor out =
        scatterbrain_attention(file.get(name + "_q"), file.get(name + "_k"), file.get(name + "_v"),
                               file.get(name + "_scale").item<double>(), opt, call);
    const double diff = max_rel_diff(out, file.get(name + "_out"));
    std::cout << "fly SBLocalAttention, case " << name << ": max rel diff " << diff << "\n";
    EXPECT_LT(diff, 1e-12) << name;
  }
}

}  // namespace
}  // namespace kdeserve::attention::scatterbrain
