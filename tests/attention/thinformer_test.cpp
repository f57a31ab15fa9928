// Thinformer (KH-Compress(g) + attention over the coreset): sizes, the walk, the symmetrisation,
// limits, numerics, batch independence, and parity with microsoft/thinformer f5b1f260
// (fixtures/thinformer_parity.safetensors, written by tools/peer_fixtures/gen_thinformer.py).
#include "attention/thinformer/thinformer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <memory>
#include <set>
#include <vector>

#include "attention/attention.h"
#include "tests/attention/test_util.h"
#include "tests/support/peak_memory.h"
#ifdef KDESERVE_PEER_FIXTURE_DIR
#include "models/weights/safetensors.h"
#endif

namespace kdeserve::attention::thinformer {
namespace {

using kdeserve::testing::max_rel_diff;
using kdeserve::testing::naive_attention;
using kdeserve::testing::PeakMemoryScope;
using kdeserve::testing::seeded_randn;

ThinformerOptions strided(int64_t g) { return ThinformerOptions().g(g); }
ThinformerOptions padded(int64_t g) { return ThinformerOptions().g(g).strided_prethinning(false); }

// Exact softmax attention of q over the keys `idx` [B, H, m] (−1 slots skipped), float64.
at::Tensor attention_over(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          double scale, const at::Tensor& idx) {
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, at::kDouble);
  for (int64_t b = 0; b < q.size(0); ++b) {
    for (int64_t h = 0; h < q.size(1); ++h) {
      at::Tensor keep = idx[b][h].masked_select(idx[b][h] >= 0);
      out[b][h] = naive_attention(q[b][h], k[b][h].index_select(0, keep),
                                  v[b][h].index_select(0, keep), scale);
    }
  }
  return out;
}

TEST(Thinformer, PlansOfTheProtocols) {
  const ThinformerPlan t2t1 = thinformer_plan(strided(2), 3136);
  EXPECT_EQ(t2t1.length, 1024);
  EXPECT_EQ(t2t1.stride, 3);
  EXPECT_EQ(t2t1.rounds, 3);
  EXPECT_EQ(t2t1.slots, 128);
  const ThinformerPlan t2t2 = thinformer_plan(strided(4), 784);
  EXPECT_EQ(t2t2.length, 256);
  EXPECT_EQ(t2t2.rounds, 0);
  EXPECT_EQ(t2t2.slots, 256);
  const ThinformerPlan glove = thinformer_plan(strided(2), 8192);
  EXPECT_EQ(glove.length, 4096);
  EXPECT_EQ(glove.stride, 2);
  EXPECT_EQ(glove.slots, 256);
  EXPECT_EQ(glove.pairs, 4096 - 256);
  const ThinformerPlan pad = thinformer_plan(padded(2), 3136);
  EXPECT_EQ(pad.length, 4096);
  EXPECT_EQ(pad.stride, 1);
  EXPECT_EQ(pad.rounds, 4);
  EXPECT_EQ(pad.slots, 256);
}

// Size 2^g·√n0, distinct original keys; strided keys are multiples of the stride; padded
// coresets hold ⌊Nk/2^R⌋ … ⌈Nk/2^R⌉ keys followed by pad slots.
TEST(Thinformer, CoresetIsASubsetOfTheKeysOfSize2gRootN) {
  for (const bool pad : {false, true}) {
    for (const int64_t nk : {77, 200, 1000, 1024}) {
      for (const int64_t g : {0, 1, 2}) {
        const ThinformerOptions opt = pad ? padded(g) : strided(g);
        const ThinformerPlan plan = thinformer_plan(opt, nk);
        EXPECT_EQ(plan.slots, (int64_t{1} << g) * static_cast<int64_t>(std::sqrt(plan.length)));
        const at::Tensor k = seeded_randn({2, 2, nk, 5}, nk + g);
        const at::Tensor v = seeded_randn({2, 2, nk, 3}, nk + g + 100);
        AttentionCall call;
        call.seed = static_cast<uint64_t>(nk * 10 + g);
        const at::Tensor idx = thinformer_coreset(k, v, 0.4, opt, call);
        ASSERT_EQ(idx.sizes(), (at::IntArrayRef{2, 2, plan.slots}));
        for (int64_t b = 0; b < 4; ++b) {
          const at::Tensor row = idx.view({4, -1})[b];
          const at::Tensor real = row.masked_select(row >= 0);
          const int64_t n = real.numel();
          EXPECT_EQ(std::get<0>(at::_unique(real)).numel(), n) << "duplicates, nk=" << nk;
          EXPECT_LT(real.max().item<int64_t>(), nk);
          if (!pad) {
            EXPECT_EQ(n, plan.slots);
            EXPECT_TRUE(at::equal(real.remainder(plan.stride), at::zeros_like(real)));
            EXPECT_LT(real.max().item<int64_t>(), plan.length * plan.stride);
          } else {
            EXPECT_GE(n, nk >> plan.rounds) << "nk=" << nk << " g=" << g;
            EXPECT_LE(n, (nk + (int64_t{1} << plan.rounds) - 1) >> plan.rounds);
            EXPECT_TRUE(at::equal(row.narrow(0, n, plan.slots - n),
                                  at::full({plan.slots - n}, -1, row.options())))
                << "pads must trail";
          }
        }
      }
    }
  }
}

// One round (R = 1): exactly one point of each consecutive pair (2j, 2j+1) is kept.
TEST(Thinformer, WalkKeepsExactlyOneOfEachPair) {
  const ThinformerOptions opt = strided(2);  // n0 = 64 = 4^3: one round, buckets of 64
  ASSERT_EQ(thinformer_plan(opt, 64).rounds, 1);
  const at::Tensor k = seeded_randn({3, 2, 64, 6}, 1);
  const at::Tensor v = seeded_randn({3, 2, 64, 4}, 2);
  const at::Tensor idx = thinformer_coreset(k, v, 0.5, opt);
  const at::Tensor pair = idx.div(2, "floor");
  const at::Tensor expected = at::arange(32, idx.options()).expand({3, 2, 32});
  EXPECT_TRUE(at::equal(std::get<0>(pair.sort(2)), expected));
}

// The coin of a round takes the complement of every choice of that round.
TEST(Thinformer, SymmetrisationCoinTakesTheComplement) {
  const at::Tensor k = seeded_randn({1, 2, 64, 6}, 3);
  const at::Tensor v = seeded_randn({1, 2, 64, 4}, 4);
  AttentionCall call;
  call.injected.uniforms = at::rand({32}, at::detail::createCPUGenerator(5), at::kDouble);
  call.injected.coins = at::zeros({1}, at::kLong);
  const at::Tensor heads_up = thinformer_coreset(k, v, 0.5, strided(2), call);
  call.injected.coins = at::ones({1}, at::kLong);
  const at::Tensor flipped = thinformer_coreset(k, v, 0.5, strided(2), call);
  const at::Tensor all = std::get<0>(at::cat({heads_up, flipped}, 2).sort(2));
  EXPECT_TRUE(at::equal(all, at::arange(64, all.options()).expand({1, 2, 64})));
  // symmetrize(false) is the coin-0 halving.
  AttentionCall plain = call;
  plain.injected.coins.reset();
  EXPECT_TRUE(
      at::equal(thinformer_coreset(k, v, 0.5, strided(2).symmetrize(false), plain), heads_up));
  EXPECT_THROW(thinformer_coreset(k, v, 0.5, strided(2).symmetrize(false), call), c10::Error);
}

// The walk against a direct implementation with explicit feature vectors ψ_j.
TEST(Thinformer, WalkFollowsTheSelfBalancingRule) {
  const int64_t n = 5, h = 24, dim = 7;
  const at::Tensor psi = seeded_randn({n, h, dim}, 6);
  const at::Tensor diff = at::bmm(psi, psi.transpose(1, 2));
  const at::Tensor signs = seeded_randn({n, h}, 7).mul_(0.8);
  const at::Tensor swaps = halving_swaps(diff, signs);
  for (int64_t b = 0; b < n; ++b) {
    at::Tensor sum = psi[b][0].clone();
    double running_max = 0;
    EXPECT_FALSE(swaps[b][0].item<bool>());
    for (int64_t j = 0; j < h; ++j) {
      const double norm = psi[b][j].norm().item<double>();
      running_max = std::max(running_max, norm);
      if (j == 0) continue;
      const double alpha = at::dot(sum, psi[b][j]).item<double>();
      const bool swap = signs[b][j].item<double>() * norm * running_max <= alpha;
      EXPECT_EQ(swaps[b][j].item<bool>(), swap) << "bucket " << b << " pair " << j;
      sum = swap ? sum - psi[b][j] : sum + psi[b][j];
    }
  }
}

// One round (n0 = 64 = 4^3, g = 2) written out: the pair kernel
// exp(β⟨k,k'⟩ − max β‖k‖²)·(⟨v,v'⟩ + max|v|²) with zero rows for pads, its pair differences, and
// U = L(2u − 1) with L = 0.5 + log(2/(δ_h·64)), δ_h = 0.5/(64·1·64). Expected kept slot 2j +
// swap_j.
at::Tensor one_round_by_hand(const at::Tensor& k2, const at::Tensor& v2, double beta,
                             const at::Tensor& u) {
  const int64_t nk = k2.size(0);
  const at::Tensor kp = at::constant_pad_nd(k2, {0, 0, 0, 64 - nk});
  const at::Tensor vp = at::constant_pad_nd(v2, {0, 0, 0, 64 - nk});
  const at::Tensor real = (at::arange(64, at::kLong) < nk).to(at::kDouble);
  const double shift = (k2.square().sum(1) * beta).max().item<double>();
  const double b2 = std::pow(v2.abs().max().item<double>(), 2);
  const at::Tensor kernel = (at::matmul(kp, kp.t()) * beta - shift).exp() *
                            (at::matmul(vp, vp.t()) + b2) * real.unsqueeze(0) * real.unsqueeze(1);
  EXPECT_TRUE(at::isfinite(kernel).all().item<bool>());
  const at::Tensor half = kernel.slice(1, 0, 64, 2) - kernel.slice(1, 1, 64, 2);
  const at::Tensor diff = (half.slice(0, 0, 64, 2) - half.slice(0, 1, 64, 2)).unsqueeze(0);
  const double delta_h = 0.5 / 64 / 1 / 64;
  const double l = 0.5 + std::log(2.0 / (delta_h * 64));
  const at::Tensor swaps = halving_swaps(diff, (u * 2 - 1).mul_(l).unsqueeze(0));
  EXPECT_GT(swaps.sum().item<int64_t>(), 0);
  const at::Tensor slot = swaps[0].to(at::kLong) + at::arange(0, 64, 2, at::kLong);
  return at::where(slot < nk, slot, at::full_like(slot, -1));
}

TEST(Thinformer, OneRoundIsTheWalkOnThePairKernel) {
  const at::Tensor u = at::rand({32}, at::detail::createCPUGenerator(27), at::kDouble);
  AttentionCall call;
  call.injected.uniforms = u;
  call.injected.coins = at::zeros({1}, at::kLong);
  // Strided (n0 = Nk = 64) at logits ~800, where an unshifted kernel overflows.
  const at::Tensor k = seeded_randn({1, 1, 64, 8}, 25).mul_(10);
  const at::Tensor v = seeded_randn({1, 1, 64, 3}, 26).add_(0.5);
  EXPECT_TRUE(at::equal(thinformer_coreset(k, v, 1.0, strided(2), call)[0][0],
                        one_round_by_hand(k[0][0], v[0][0], 1.0, u)));
  // Padded (Nk = 45 → 64): the pads' kernel rows are 0 (a plain zero key would still have a
  // feature e^−shift·b²).
  const at::Tensor kp = seeded_randn({1, 1, 45, 8}, 28).mul_(0.3);
  const at::Tensor vp = seeded_randn({1, 1, 45, 3}, 29).add_(0.5);
  EXPECT_TRUE(at::equal(thinformer_coreset(kp, vp, 0.5, padded(2), call)[0][0],
                        one_round_by_hand(kp[0][0], vp[0][0], 0.5, u)));
}

// Pads are zero-feature points: with Nk = 3 padded to 4 (g = 0, one bucket), the mixed pair
// (x_2, pad) has r_1² = K_22. A zero key with a live kernel row would give K_22 − e^−shift·b²
// instead; u is placed between the two thresholds so only the masked kernel keeps x_2.
TEST(Thinformer, PadsHaveZeroFeatures) {
  const at::Tensor k = at::tensor({0.0, 0.0, 1.2, 0.0, 0.1, 0.2}, at::kDouble).view({1, 1, 3, 2});
  const at::Tensor v = at::tensor({1.0, 0.5, 0.9}, at::kDouble).view({1, 1, 3, 1});
  const at::Tensor k2 = k[0][0], v2 = v[0][0];
  const double shift = k2.square().sum(1).max().item<double>();
  const double b2 = std::pow(v2.abs().max().item<double>(), 2);
  const at::Tensor kernel = (at::matmul(k2, k2.t()) - shift).exp() * (at::matmul(v2, v2.t()) + b2);
  auto K = [&](int i, int j) { return kernel[i][j].item<double>(); };
  const double c = std::exp(-shift) * b2;
  const double r0 = std::sqrt(K(0, 0) - 2 * K(0, 1) + K(1, 1));
  const double alpha = K(0, 2) - K(1, 2);
  const double a_zero = std::sqrt(K(2, 2)) * std::max(r0, std::sqrt(K(2, 2)));
  const double a_live = std::sqrt(K(2, 2) - c) * std::max(r0, std::sqrt(K(2, 2) - c));
  ASSERT_GT(alpha, 0);
  const double u_scaled = 2 * alpha / (a_zero + a_live);  // a_live·U < α < a_zero·U
  const double l = 0.5 + std::log(2.0 / (0.5 / 4 / 1 / 4 * 4));
  ASSERT_LT(u_scaled, l);
  AttentionCall call;
  call.injected.uniforms = at::tensor({0.5, (u_scaled + l) / (2 * l)}, at::kDouble);
  call.injected.coins = at::zeros({1}, at::kLong);
  const at::Tensor idx = thinformer_coreset(k, v, 1.0, padded(0), call);
  EXPECT_TRUE(at::equal(idx, at::tensor({0, 2}, at::kLong).view({1, 1, 2}))) << idx;
}

// The device path (ATen ops vectorised over buckets) takes the same decisions as the CPU loop.
TEST(Thinformer, VectorisedWalkMatchesTheLoop) {
  for (const auto dtype : {at::kDouble, at::kFloat}) {
    const at::Tensor psi = seeded_randn({9, 32, 5}, 30, dtype);
    const at::Tensor diff = at::bmm(psi, psi.transpose(1, 2));
    const at::Tensor signs = seeded_randn({9, 32}, 31, dtype);
    const at::Tensor loop = halving_swaps(diff, signs);
    EXPECT_TRUE(at::equal(halving_swaps_vectorised(diff, signs), loop));
    EXPECT_GT(loop.sum().item<int64_t>(), 0);
  }
}

// A near-duplicate pair gives D_jj < 0 by round-off; √ of it must not stop later swaps (the
// reference's NaN threshold compares false forever after).
TEST(Thinformer, NegativeDiagonalRoundOffIsClamped) {
  // ψ_0 = ψ_2 = e_0, ψ_1 ≈ 0 with D_11 = −1e-17, ψ_3 = e_1.
  at::Tensor diff = at::zeros({1, 4, 4}, at::kDouble);
  diff[0][0][0] = 1.0;
  diff[0][0][2] = diff[0][2][0] = diff[0][2][2] = 1.0;
  diff[0][1][1] = -1e-17;
  diff[0][3][3] = 1.0;
  const at::Tensor signs = at::tensor({0.0, 0.3, 0.5, 0.2}, at::kDouble).view({1, 4});
  const at::Tensor swaps = halving_swaps(diff, signs);
  // Pair 2: α = ⟨ψ_0 ± ψ_1, ψ_2⟩ = 1 ≥ 0.5·1·1, so x_5 is kept.
  EXPECT_TRUE(swaps[0][2].item<bool>());
  // Pair 1: threshold 0.3·0·1 = 0 ≤ α = 0.
  EXPECT_TRUE(swaps[0][1].item<bool>());
}

TEST(Thinformer, NearDuplicatePairsStayFinite) {
  at::Tensor k = seeded_randn({1, 2, 128, 8}, 8);
  at::Tensor v = seeded_randn({1, 2, 128, 8}, 9);
  // Odd points duplicate their even neighbours up to 1e-9.
  k.slice(2, 1, 128, 2).copy_(k.slice(2, 0, 128, 2) + 1e-9 * seeded_randn({1, 2, 64, 8}, 10));
  v.slice(2, 1, 128, 2).copy_(v.slice(2, 0, 128, 2));
  const at::Tensor q = seeded_randn({1, 2, 40, 8}, 11);
  for (const auto& opt : {strided(1), padded(1), strided(2)}) {
    const at::Tensor out = thinformer_attention(q, k, v, 0.5, opt);
    EXPECT_TRUE(at::isfinite(out).all().item<bool>());
    const at::Tensor idx = thinformer_coreset(k, v, 0.5, opt);
    EXPECT_LT(max_rel_diff(out, attention_over(q, k, v, 0.5, idx)), 1e-12);
  }
}

// Sizes where the coreset is every key are exact attention (and reported so); strided
// pre-thinning without halving drops keys, so it runs: a strided subsample.
TEST(Thinformer, LimitsAndExactReason) {
  EXPECT_FALSE(exact_reason(strided(2), 10, 16).empty());  // n0 = 16 < 64, nothing dropped
  EXPECT_TRUE(exact_reason(strided(2), 10, 50).empty());   // stride 3 drops keys
  EXPECT_FALSE(exact_reason(padded(2), 10, 10).empty());   // pad to 16 < 64: no round
  EXPECT_TRUE(exact_reason(padded(2), 10, 50).empty());    // pad to 64: one round
  EXPECT_TRUE(exact_reason(strided(0), 10, 4).empty());    // g = 0, n0 = 4: one round
  const at::Tensor q = seeded_randn({2, 2, 12, 4}, 12);
  const at::Tensor k = seeded_randn({2, 2, 50, 4}, 13);
  const at::Tensor v = seeded_randn({2, 2, 50, 6}, 14);
  for (const bool pad : {false, true}) {
    const int64_t nk = pad ? 50 : 16;
    auto options = AttentionOptions(Method::kThinformer).scale(0.7);
    options.thinformer(pad ? padded(3) : strided(2));
    AttentionReport report;
    AttentionCall call;
    call.report = &report;
    const at::Tensor out = attention(q, k.narrow(2, 0, nk), v.narrow(2, 0, nk), options, call);
    EXPECT_EQ(report.ran, Method::kExact);
    EXPECT_NE(report.reason.find("thinformer"), std::string::npos);
    EXPECT_LT(max_rel_diff(out, naive_attention(q, k.narrow(2, 0, nk), v.narrow(2, 0, nk), 0.7)),
              1e-12);
  }
  // Strided, no round: attention over keys 0, 3, …, 45.
  const at::Tensor out = thinformer_attention(q, k, v, 0.7, strided(2));
  const at::Tensor sub = at::arange(0, 48, 3, at::kLong);
  EXPECT_LT(
      max_rel_diff(out, naive_attention(q, k.index_select(2, sub), v.index_select(2, sub), 0.7)),
      1e-12);
}

// The output is the self-normalised exact softmax over the coreset, for odd sizes, Nq ≠ Nk,
// Dv ≠ D, in float64 and float32; the report names the coreset size.
TEST(Thinformer, AttentionOverTheCoresetAtAnySize) {
  for (const auto dtype : {at::kDouble, at::kFloat}) {
    for (const bool pad : {false, true}) {
      for (const int64_t nk : {1, 2, 3, 5, 17, 63, 65, 255, 257, 1000}) {
        const at::Tensor q = seeded_randn({2, 3, 37, 8}, nk, dtype);
        const at::Tensor k = seeded_randn({2, 3, nk, 8}, nk + 1, dtype);
        const at::Tensor v = seeded_randn({2, 3, nk, 20}, nk + 2, dtype);
        auto options = AttentionOptions(Method::kThinformer).scale(0.35);
        options.thinformer(pad ? padded(1) : strided(1));
        AttentionReport report;
        AttentionCall call;
        call.seed = 99;
        call.report = &report;
        const at::Tensor out = attention(q, k, v, options, call);
        ASSERT_EQ(out.sizes(), (at::IntArrayRef{2, 3, 37, 20}));
        EXPECT_EQ(out.scalar_type(), dtype);
        EXPECT_TRUE(at::isfinite(out).all().item<bool>());
        if (report.ran != Method::kThinformer) continue;
        const at::Tensor idx = thinformer_coreset(k, v, 0.35, options.thinformer(), call);
        const int64_t real = (idx >= 0).sum(2).max().item<int64_t>();
        EXPECT_EQ(report.coreset_size, real);
        EXPECT_LT(max_rel_diff(out, attention_over(q.to(at::kDouble), k.to(at::kDouble),
                                                   v.to(at::kDouble), 0.35, idx)),
                  dtype == at::kDouble ? 1e-12 : 1e-5)
            << "nk=" << nk << " pad=" << pad;
      }
    }
  }
}

TEST(Thinformer, FiniteAtLargeLogits) {
  for (const auto dtype : {at::kDouble, at::kFloat}) {
    const at::Tensor q = seeded_randn({1, 2, 50, 16}, 15, dtype).mul_(30);
    const at::Tensor k = seeded_randn({1, 2, 300, 16}, 16, dtype).mul_(30);
    const at::Tensor v = seeded_randn({1, 2, 300, 16}, 17, dtype).mul_(1e3);
    for (const auto& opt : {strided(1), padded(1)}) {
      const at::Tensor out = thinformer_attention(q, k, v, 1.0, opt);  // logits ~ 1e4
      EXPECT_TRUE(at::isfinite(out).all().item<bool>());
      const at::Tensor idx = thinformer_coreset(k, v, 1.0, opt);
      EXPECT_LT(max_rel_diff(out, attention_over(q.to(at::kDouble), k.to(at::kDouble),
                                                 v.to(at::kDouble), 1.0, idx)),
                dtype == at::kDouble ? 1e-12 : 1e-3);
    }
  }
}

// An entry's output depends on its own seed only, not on its position or batch-mates; the same
// call twice gives the same bits; another seed another coreset.
TEST(Thinformer, BatchIndependentAndDeterministic) {
  const at::Tensor q = seeded_randn({3, 2, 20, 6}, 18);
  const at::Tensor k = seeded_randn({3, 2, 300, 6}, 19);
  const at::Tensor v = seeded_randn({3, 2, 300, 5}, 20);
  for (const auto& opt : {strided(1), padded(1)}) {
    AttentionCall batch;
    batch.seed = 7;
    batch.entry_seeds = {8, 9, 5};
    const at::Tensor all = thinformer_attention(q, k, v, 0.5, opt, batch);
    EXPECT_TRUE(at::equal(all, thinformer_attention(q, k, v, 0.5, opt, batch)));
    AttentionCall single;
    single.seed = 7;
    single.entry_seeds = {9};
    const at::Tensor one = thinformer_attention(q.narrow(0, 1, 1), k.narrow(0, 1, 1),
                                                v.narrow(0, 1, 1), 0.5, opt, single);
    EXPECT_TRUE(at::equal(all.narrow(0, 1, 1), one));
    AttentionCall other = batch;
    other.seed = 70;
    EXPECT_FALSE(at::equal(thinformer_coreset(k, v, 0.5, opt, other),
                           thinformer_coreset(k, v, 0.5, opt, batch)));
  }
}

// kSharedUpstream draws one coin per round for the whole batch (upstream), the default one per
// (entry, head): two identical entries with the same injected uniforms always agree under the
// shared coin, and disagree (complement, R = 1) for some seeds under per-entry coins.
TEST(Thinformer, SharedCoinsCoupleTheBatch) {
  const at::Tensor k = seeded_randn({1, 1, 64, 4}, 32).expand({2, 2, 64, 4}).contiguous();
  const at::Tensor v = seeded_randn({1, 1, 64, 3}, 33).expand({2, 2, 64, 3}).contiguous();
  int64_t disagreements = 0;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    AttentionCall call;
    call.seed = seed;
    call.entry_seeds = {1, 2};
    call.injected.uniforms = at::rand({32}, at::detail::createCPUGenerator(seed), at::kDouble);
    const at::Tensor shared =
        thinformer_coreset(k, v, 0.5, strided(2).coins(ThinformerCoins::kSharedUpstream), call)
            .view({4, 32});
    for (int64_t i = 1; i < 4; ++i) EXPECT_TRUE(at::equal(shared[i], shared[0]));
    const at::Tensor own = thinformer_coreset(k, v, 0.5, strided(2), call).view({4, 32});
    for (int64_t i = 1; i < 4; ++i) disagreements += at::equal(own[i], own[0]) ? 0 : 1;
  }
  EXPECT_GT(disagreements, 0);
}

// With the symmetrisation, each point of a pair survives a round with probability ½: every key
// of the padded variant (and every pre-thinned key of the strided one) is in the coreset with
// probability 2^−R (here ½ and ¼). 600 seeds: tolerance 5 binomial standard deviations (≤ 0.1).
TEST(Thinformer, EveryKeyKeepsItsChance) {
  const int64_t nk = 50, seeds = 600;
  const at::Tensor k = seeded_randn({1, 1, nk, 4}, 21);
  const at::Tensor v = seeded_randn({1, 1, nk, 3}, 22);
  for (const auto& opt : {padded(2), strided(0)}) {
    const ThinformerPlan plan = thinformer_plan(opt, nk);
    ASSERT_EQ(plan.rounds, opt.strided_prethinning() ? 2 : 1);
    at::Tensor counts = at::zeros({nk + 1}, at::kLong);
    for (int64_t s = 0; s < seeds; ++s) {
      AttentionCall call;
      call.seed = static_cast<uint64_t>(s);
      counts.index_add_(0, thinformer_coreset(k, v, 0.5, opt, call).flatten().add(1),
                        at::ones({plan.slots}, at::kLong));
    }
    const at::Tensor freq = counts.narrow(0, 1, nk).to(at::kDouble) / seeds;
    const double p = 1.0 / static_cast<double>(int64_t{1} << plan.rounds);
    for (int64_t j = 0; j < nk; ++j) {
      const bool candidate =
          !opt.strided_prethinning() || (j % plan.stride == 0 && j < plan.length * plan.stride);
      EXPECT_NEAR(freq[j].item<double>(), candidate ? p : 0.0, 5 * std::sqrt(p * (1 - p) / seeds))
          << "key " << j;
    }
  }
}

TEST(Thinformer, RejectsBadOptionsAndInjections) {
  const at::Tensor k = seeded_randn({1, 2, 64, 4}, 23);
  const at::Tensor v = seeded_randn({1, 2, 64, 4}, 24);
  EXPECT_THROW(exact_reason(ThinformerOptions().g(-1), 1, 64), c10::Error);
  EXPECT_THROW(exact_reason(ThinformerOptions().g(31), 1, 64), c10::Error);
  EXPECT_THROW(exact_reason(ThinformerOptions().delta(0), 1, 64), c10::Error);
  EXPECT_THROW(exact_reason(ThinformerOptions().delta(1.5), 1, 64), c10::Error);
  AttentionCall call;
  call.injected.uniforms = at::rand({31}, at::kDouble);
  EXPECT_THROW(thinformer_coreset(k, v, 0.5, strided(2), call), c10::Error);
  call.injected.uniforms = at::rand({32}, at::kDouble).add_(1);
  EXPECT_THROW(thinformer_coreset(k, v, 0.5, strided(2), call), c10::Error);
  call.injected.uniforms = at::rand({1, 2, 32}, at::kDouble);
  call.injected.coins = at::zeros({2}, at::kLong);
  EXPECT_THROW(thinformer_coreset(k, v, 0.5, strided(2), call), c10::Error);
  call.injected.coins = at::zeros({1, 2, 1}, at::kLong);
  EXPECT_NO_THROW(thinformer_coreset(k, v, 0.5, strided(2), call));
}

// No Nq × Nk tensor: BigGAN-like shapes (Nq 4096, Nk 1024) with a padded variant over 4096
// queries × 4096 keys stay far below the dense score matrix.
TEST(Thinformer, PeakMemoryBelowDenseScores) {
  const int64_t n = 4096;
  const at::Tensor q = at::randn({1, 1, n, 32});
  const at::Tensor v = at::randn({1, 1, n, 32});
  for (const auto& opt : {strided(2), padded(2)}) {
    PeakMemoryScope scope;
    const at::Tensor out = thinformer_attention(q, q, v, 0.2, opt);
    const int64_t peak = scope.peak_bytes();
    EXPECT_LT(peak, n * n * 4 / 8) << "peak " << peak;
  }
}

#ifdef KDESERVE_PEER_FIXTURE_DIR
class ThinformerParity : public ::testing::TestWithParam<const char*> {};

TEST_P(ThinformerParity, MatchesReferenceWithInjectedRandomness) {
  const auto file = models::SafetensorsFile::open(std::string(KDESERVE_PEER_FIXTURE_DIR) + "/thinformer_parity.safetensors");
  const std::string c = GetParam();
  const at::Tensor settings = file.get(c + "_settings");  // g, scale, stride, rounds
  const auto g = static_cast<int64_t>(settings[0].item<double>());
  const double scale = settings[1].item<double>();
  const at::Tensor q = file.get(c + "_q"), k = file.get(c + "_k"), v = file.get(c + "_v");
  AttentionCall call;
  if (settings[3].item<double>() > 0) {
    call.injected.uniforms = file.get(c + "_uniforms");
    call.injected.coins = file.get(c + "_coins");
  }
  const ThinformerOptions opt = strided(g);
  EXPECT_EQ(thinformer_plan(opt, k.size(2)).stride,
            static_cast<int64_t>(settings[2].item<double>()));
  const at::Tensor idx = thinformer_coreset(k, v, scale, opt, call);
  EXPECT_TRUE(at::equal(idx, file.get(c + "_coreset"))) << idx << file.get(c + "_coreset");
  const at::Tensor out = thinformer_attention(q, k, v, scale, opt, call);
  const double diff = max_rel_diff(out, file.get(c + "_out"));
  std::cout << "case " << c << ": max|out − reference| / max|reference| = " << diff << "\n";
  EXPECT_LT(diff, 1e-12);
}

INSTANTIATE_TEST_SUITE_P(Fixture, ThinformerParity, ::testing::Values("a", "b", "c", "d"));
#endif

}  // namespace
}  // namespace kdeserve::attention::thinformer
