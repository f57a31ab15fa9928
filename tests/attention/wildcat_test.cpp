// WildCat (peers.md §2): limits, guards, invariances and parity with the reference
// (tests/attention/fixtures/wildcat_parity.safetensors, tools/peer_fixtures/gen_wildcat.py).
#include "attention/wildcat/wildcat.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <vector>

#include "attention/attention.h"
#include "models/weights/safetensors.h"
#include "tests/attention/test_util.h"

namespace kdeserve::attention::wildcat {
namespace {

using kdeserve::testing::max_rel_diff;
using kdeserve::testing::naive_attention;
using kdeserve::testing::seeded_randn;

WildCatOptions opts(int64_t rank, int64_t bins) {
  return WildCatOptions().rank(rank).num_bins(bins);
}

// Uniforms in (0, 1) of a seeded generator, any shape.
at::Tensor seeded_uniforms(at::IntArrayRef sizes, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::rand(sizes, gen, at::TensorOptions(at::kDouble)).clamp_(1e-12, 1 - 1e-12);
}

double relative_error(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).norm().item<double>() /
         b.to(at::kDouble).norm().item<double>();
}

TEST(WildCatOptions, BadOptionsAreRejected) {
  EXPECT_THROW(exact_reason(opts(3, 4), 8, 64), c10::Error);  // r < C
  EXPECT_THROW(exact_reason(opts(8, 0), 8, 64), c10::Error);  // C = 0
  EXPECT_THROW(exact_reason(opts(8, 2).residual_floor(-1), 8, 64), c10::Error);
  EXPECT_THROW(exact_reason(opts(8, 2).residual_floor(1), 8, 64), c10::Error);
  const at::Tensor x = seeded_randn({1, 1, 8, 4}, 1);
  EXPECT_THROW(wildcat_attention(x, x, x, 0.5, opts(3, 4)), c10::Error);
  EXPECT_NO_THROW(exact_reason(opts(4, 4), 8, 64));
}

TEST(WildCatOptions, ExactReasonNamesTheLargestBin) {
  EXPECT_TRUE(exact_reason(opts(96, 8), 4096, 1024).empty());  // 12 pivots for 128 keys
  EXPECT_FALSE(exact_reason(opts(64, 8), 4, 64).empty());      // 8 pivots for 8 keys
  EXPECT_TRUE(exact_reason(opts(56, 8), 4, 64).empty());       // 7 pivots for 8 keys
  // Nk = 11, C = 4: bins of 2 and a remainder of 3.
  EXPECT_TRUE(exact_reason(opts(8, 4), 4, 11).empty());
  EXPECT_FALSE(exact_reason(opts(12, 4), 4, 11).empty());
  // r = 7 is padded to 8 over C = 4: 2 pivots per bin of 2 keys.
  EXPECT_FALSE(exact_reason(opts(7, 4), 4, 8).empty());
  EXPECT_TRUE(exact_reason(opts(1, 1), 4, 2).empty());
}

// r/C at least the bin size (remainder included): every key kept with weight 1.
TEST(WildCatLimits, BinsNoLargerThanPivotsGiveExactAttention) {
  for (const auto& [nk, rank, bins] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {24, 24, 1}, {24, 24, 4}, {11, 12, 4}, {37, 40, 5}, {9, 9, 3}}) {
    ASSERT_FALSE(exact_reason(opts(rank, bins), 13, nk).empty());
    const at::Tensor q = seeded_randn({2, 2, 13, 6}, 10 + nk);
    const at::Tensor k = seeded_randn({2, 2, nk, 6}, 20 + nk);
    const at::Tensor v = seeded_randn({2, 2, nk, 5}, 30 + nk);
    AttentionReport report;
    AttentionCall call;
    call.report = &report;
    const at::Tensor out = wildcat_attention(q, k, v, 0.7, opts(rank, bins), call);
    EXPECT_LT(max_rel_diff(out, naive_attention(q, k, v, 0.7)), 1e-13) << nk << " " << bins;
    EXPECT_EQ(report.coreset_size, nk);
  }
}

TEST(WildCatLimits, DispatchFallsBackToExactAndSaysWhy) {
  const at::Tensor q = seeded_randn({1, 2, 9, 4}, 1), k = seeded_randn({1, 2, 16, 4}, 2);
  const at::Tensor v = seeded_randn({1, 2, 16, 3}, 3);
  AttentionReport report;
  AttentionCall call;
  call.report = &report;
  AttentionOptions options(Method::kWildCat);
  options.wildcat(opts(16, 4));
  const at::Tensor out = attention(q, k, v, options, call);
  EXPECT_EQ(report.ran, Method::kExact);
  EXPECT_NE(report.reason.find("exact"), std::string::npos) << report.reason;
  EXPECT_LT(max_rel_diff(out, naive_attention(q, k, v, 0.5)), 1e-12);
  options.wildcat(opts(8, 4));
  attention(q, k, v, options, call);
  EXPECT_EQ(report.ran, Method::kWildCat);
  EXPECT_EQ(report.coreset_size, 8);
}

// With as many pivots as keys, the Nyström reconstruction of the kernel is exact, so the
// weighted coreset reproduces exact attention up to round-off.
TEST(WildCatLimits, FullRankNystromIsExactAttention) {
  const int64_t p = 3, n = 10, dim = 12, dv = 4, nq = 7;
  const at::Tensor k = seeded_randn({p, n, dim}, 41).mul_(0.8);
  const at::Tensor kc = k - k.mean(1, true);
  const at::Tensor v = seeded_randn({p, n, dv}, 42);
  const at::Tensor q = seeded_randn({p, nq, dim}, 43);
  const double scale = 0.6;
  const at::Tensor q_scale = q.square().sum(2).sqrt().amax(1);
  const at::Tensor u = seeded_uniforms({p, n, n}, 44);
  const at::Tensor gumbel = u.log().neg().log().neg();
  const Coreset c = compress_bins(kc, v, q_scale, scale, n, gumbel, 1e-13);
  // Every key is a pivot once (the residual of a pivot is 0 afterwards).
  EXPECT_TRUE(std::get<0>(c.pivots.sort(1)).equal(at::arange(n, at::kLong).expand({p, n})));
  const at::Tensor out = weighted_attention(q, c, scale);
  const at::Tensor exact = naive_attention(q.unsqueeze(0), kc.unsqueeze(0), v.unsqueeze(0), scale);
  const double diff = max_rel_diff(out, exact[0]);
  std::cout << "r = Nk = " << n << ": max rel diff to exact = " << diff << "\n";
  EXPECT_LT(diff, 1e-9);
  // Fewer pivots: an approximation, measurably off.
  const Coreset c4 = compress_bins(kc, v, q_scale, scale, 4, gumbel.narrow(1, 0, 4), 1e-13);
  EXPECT_GT(max_rel_diff(weighted_attention(q, c4, scale), exact[0]), 1e-3);
}

// The output is clamped into the values' box; without the clamp it leaves it on this case.
TEST(WildCatGuards, ClampKeepsOutputsInsideValueRange) {
  int64_t outside = 0;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    const at::Tensor q = seeded_randn({2, 2, 64, 2}, 100 + seed).mul_(3.0);
    const at::Tensor k = seeded_randn({2, 2, 60, 2}, 200 + seed);
    const at::Tensor v = seeded_randn({2, 2, 60, 4}, 300 + seed);
    AttentionCall call;
    call.seed = seed;
    WildCatOptions o = opts(4, 1);
    const WildCatParts clamped = wildcat_parts(q, k, v, 1.0, o, call);
    const WildCatParts free = wildcat_parts(q, k, v, 1.0, o.clamp_output(false), call);
    const at::Tensor lo = v.amin(2, true), hi = v.amax(2, true);
    EXPECT_TRUE(clamped.output.ge(lo).logical_and(clamped.output.le(hi)).all().item<bool>());
    EXPECT_TRUE(clamped.vmin.equal(lo.squeeze(2)) && clamped.vmax.equal(hi.squeeze(2)));
    outside += free.output.lt(lo).logical_or(free.output.gt(hi)).sum().item<int64_t>();
    // The clamp is the only difference.
    EXPECT_TRUE(clamped.output.equal(at::max(at::min(free.output, hi), lo)));
  }
  std::cout << "coordinates outside [vmin, vmax] without the clamp: " << outside << "\n";
  EXPECT_GT(outside, 0);
}

// Nyström weights can be negative, so a denominator can be <= 0: those rows are 0 before the
// clamp (the reference's guard), never num/den.
TEST(WildCatGuards, NonPositiveDenominatorGivesZero) {
  int64_t guarded = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const at::Tensor q = seeded_randn({1, 1, 256, 2}, 500 + seed).mul_(3.0);
    const at::Tensor k = seeded_randn({1, 1, 60, 2}, 600 + seed);
    const at::Tensor v = seeded_randn({1, 1, 60, 3}, 700 + seed);
    AttentionCall call;
    call.seed = seed;
    const WildCatParts parts = wildcat_parts(q, k, v, 1.0, opts(4, 1).clamp_output(false), call);
    ASSERT_TRUE(parts.output.isfinite().all().item<bool>());
    const at::Tensor rows = parts.denominator.le(1e-20);  // [1, 1, Nq]
    const int64_t count = rows.sum().item<int64_t>();
    if (count == 0) continue;
    guarded += count;
    EXPECT_TRUE(parts.output.index({rows}).eq(0).all().item<bool>()) << seed;
    const WildCatParts clamped = wildcat_parts(q, k, v, 1.0, opts(4, 1), call);
    const at::Tensor zero = at::zeros_like(parts.vmin);
    const at::Tensor expected = at::max(at::min(zero, parts.vmax), parts.vmin);  // [1, 1, Dv]
    EXPECT_TRUE(clamped.output.index({rows}).eq(expected.view({1, -1})).all().item<bool>());
  }
  std::cout << "rows with den <= 1e-20: " << guarded << "\n";
  EXPECT_GT(guarded, 0);
}

TEST(WildCatGuards, FiniteAtLargeLogitsAndNearDuplicateKeys) {
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    // Logits of order 1e4.
    const at::Tensor q = seeded_randn({1, 2, 20, 8}, 1, dtype).mul_(40);
    const at::Tensor k = seeded_randn({1, 2, 50, 8}, 2, dtype).mul_(40);
    const at::Tensor v = seeded_randn({1, 2, 50, 6}, 3, dtype);
    at::Tensor out = wildcat_attention(q, k, v, 1.0, opts(8, 2));
    EXPECT_TRUE(out.isfinite().all().item<bool>()) << dtype;
    // Keys that are copies of four keys up to 1e-9: most pivots after the fourth have a
    // residual of round-off.
    const at::Tensor base = seeded_randn({1, 2, 4, 8}, 4, dtype);
    const at::Tensor dup =
        base.repeat({1, 1, 12, 1}) + seeded_randn({1, 2, 48, 8}, 5, dtype) * 1e-9;
    const at::Tensor vd = seeded_randn({1, 2, 48, 6}, 6, dtype);
    const at::Tensor qd = seeded_randn({1, 2, 20, 8}, 7, dtype);
    for (const double floor : {0.0, 1e-12}) {
      out = wildcat_attention(qd, dup, vd, 0.5, opts(10, 1).residual_floor(floor));
      EXPECT_TRUE(out.isfinite().all().item<bool>()) << dtype << " floor " << floor;
    }
    // With four distinct keys, 10 pivots capture the kernel: close to exact attention.
    out = wildcat_attention(qd, dup, vd, 0.5, opts(10, 1));
    EXPECT_LT(max_rel_diff(out, naive_attention(qd, dup, vd, 0.5)), 1e-3) << dtype;
  }
}

// One key far out: it is the first pivot, and the exponential-kernel factor
// e^{(‖k̃_l‖² − ‖k̃_s‖²)/2} of a later, ordinary pivot overflows unless it is max-shifted (its
// Gaussian weight underflows to 0, so unshifted it gives 0·inf).
TEST(WildCatGuards, FiniteWithAnOutlierKey) {
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    const at::Tensor q = seeded_randn({1, 1, 16, 8}, 1, dtype).mul_(5);
    at::Tensor k = seeded_randn({1, 1, 40, 8}, 2, dtype);
    k[0][0][7].mul_(300);
    const at::Tensor v = seeded_randn({1, 1, 40, 3}, 3, dtype);
    for (const int64_t bins : {1, 2}) {
      const at::Tensor out = wildcat_attention(q, k, v, 1.0, opts(16 * bins, bins));
      EXPECT_TRUE(out.isfinite().all().item<bool>()) << dtype << " bins " << bins;
      const double err = relative_error(out, naive_attention(q, k, v, 1.0));
      std::cout << dtype << " bins " << bins << ": relative error " << err << "\n";
      // 16 pivots for bins of 20 keys track exact attention (40 keys in one bin do not: the
      // peaked logits here make the kernel nearly diagonal).
      if (bins == 2) {
        EXPECT_LT(err, 0.2) << dtype;
      }
    }
  }
}

TEST(WildCatShapes, Float32MatchesFloat64) {
  const at::Tensor q = seeded_randn({2, 2, 17, 8}, 11), k = seeded_randn({2, 2, 40, 8}, 12);
  const at::Tensor v = seeded_randn({2, 2, 40, 5}, 13);
  AttentionCall call;
  call.injected.uniforms = seeded_uniforms({2, 2, 3, 40}, 14);
  const at::Tensor o64 = wildcat_attention(q, k, v, 0.4, opts(12, 4), call);
  const at::Tensor o32 = wildcat_attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat),
                                           0.4, opts(12, 4), call);
  EXPECT_EQ(o32.scalar_type(), at::kFloat);
  EXPECT_EQ(o64.scalar_type(), at::kDouble);
  EXPECT_LT(max_rel_diff(o32, o64), 1e-4);
}

// Nq ≠ Nk, Dv ≠ D, odd sizes and remainder bins (BigGAN-like shapes, scaled down).
TEST(WildCatShapes, OddSizesAndRemainderBins) {
  struct Case {
    int64_t nq, nk, dim, dv, rank, bins, coreset;
  };
  for (const Case& c : std::vector<Case>{{40, 24, 8, 12, 6, 3, 6},   // exact division
                                         {33, 37, 5, 9, 10, 5, 12},  // remainder 2 = r/C: exact
                                         {21, 11, 3, 7, 8, 8, 9},    // remainder 3 > r/C = 1
                                         {19, 29, 4, 2, 7, 3, 11},   // r padded to 9, rem 2
                                         {1, 5, 2, 3, 8, 8, 1}}) {   // Nk < C: one remainder bin
    const at::Tensor q = seeded_randn({2, 3, c.nq, c.dim}, c.nq);
    const at::Tensor k = seeded_randn({2, 3, c.nk, c.dim}, c.nk + 100);
    const at::Tensor v = seeded_randn({2, 3, c.nk, c.dv}, c.dv + 200);
    AttentionReport report;
    AttentionCall call;
    call.report = &report;
    const WildCatParts parts = wildcat_parts(q, k, v, 0.5, opts(c.rank, c.bins), call);
    ASSERT_EQ(parts.output.sizes(), (std::vector<int64_t>{2, 3, c.nq, c.dv}));
    EXPECT_TRUE(parts.output.isfinite().all().item<bool>());
    EXPECT_EQ(report.coreset_size, c.coreset) << c.nk << " " << c.bins;
    // Pivots are keys of their own bin: regular bins in order, then the remainder.
    const int64_t r_bin = (c.rank + c.bins - 1) / c.bins, width = c.nk / c.bins;
    const at::Tensor piv = parts.coreset.pivots;
    const int64_t per_bin = std::min(width, r_bin);
    for (int64_t s = 0; s < c.coreset; ++s) {
      const int64_t bin = width > 0 ? std::min(s / per_bin, c.bins) : c.bins;
      const int64_t lo = bin * width, hi = bin < c.bins ? lo + width : c.nk;
      const at::Tensor col = piv.select(1, s);
      EXPECT_TRUE(col.ge(lo).logical_and(col.lt(hi)).all().item<bool>()) << s;
    }
  }
}

// Fix of the reference's remainder bug: the remainder bin uses its own entry's q_scale. The
// remainder's coreset equals compress_bins on that bin alone with that q_scale.
TEST(WildCatShapes, RemainderBinUsesItsOwnQueryScale) {
  const int64_t nk = 11, bins = 4, r_bin = 1, rem = 3;  // bins of 2, remainder of 3
  const at::Tensor q =
      seeded_randn({3, 1, 6, 4}, 1) * at::tensor({0.5, 2.0, 8.0}, at::kDouble).view({3, 1, 1, 1});
  const at::Tensor k = seeded_randn({3, 1, nk, 4}, 2), v = seeded_randn({3, 1, nk, 2}, 3);
  AttentionCall call;
  call.injected.uniforms = seeded_uniforms({3, 1, r_bin, nk}, 4);
  const WildCatParts parts = wildcat_parts(q, k, v, 0.5, opts(4, bins), call);
  const at::Tensor k3 = k.view({3, nk, 4}), kc = k3 - k3.mean(1, true);
  const at::Tensor q_scale = q.view({3, 6, 4}).square().sum(2).sqrt().amax(1);
  const at::Tensor g = call.injected.uniforms->view({3, r_bin, nk})
                           .narrow(2, 8, rem)
                           .log()
                           .neg()
                           .log()
                           .neg()
                           .contiguous();
  const Coreset c = compress_bins(kc.narrow(1, 8, rem), v.view({3, nk, 2}).narrow(1, 8, rem),
                                  q_scale, 0.5, r_bin, g, 1e-13);
  EXPECT_TRUE(parts.coreset.pivots.narrow(1, 4, 1).equal(c.pivots + 8));
  EXPECT_LT(max_rel_diff(parts.coreset.values.narrow(1, 4, 1), c.values), 1e-15);
  EXPECT_LT(max_rel_diff(parts.coreset.weights.narrow(1, 4, 1), c.weights), 1e-15);
}

TEST(WildCatRandomness, BatchEntriesAndHeadsAreIndependent) {
  const at::Tensor q = seeded_randn({3, 2, 15, 6}, 1), k = seeded_randn({3, 2, 45, 6}, 2);
  const at::Tensor v = seeded_randn({3, 2, 45, 4}, 3);
  AttentionCall call;
  call.seed = 9;
  call.entry_seeds = {11, 22, 33};
  const at::Tensor all = wildcat_attention(q, k, v, 0.5, opts(9, 3), call);
  for (int64_t b = 0; b < 3; ++b) {
    AttentionCall one;
    one.seed = 9;
    one.entry_seeds = {call.entry_seeds[b]};
    const at::Tensor single = wildcat_attention(q.narrow(0, b, 1), k.narrow(0, b, 1),
                                                v.narrow(0, b, 1), 0.5, opts(9, 3), one);
    EXPECT_TRUE(single.equal(all.narrow(0, b, 1))) << b;
  }
  // Changing one entry's data leaves the others unchanged.
  at::Tensor k2 = k.clone();
  k2[1].mul_(3);
  const at::Tensor changed = wildcat_attention(q, k2, v, 0.5, opts(9, 3), call);
  EXPECT_TRUE(changed[0].equal(all[0]) && changed[2].equal(all[2]));
  EXPECT_FALSE(changed[1].equal(all[1]));
}

TEST(WildCatRandomness, DeterministicPerSeedAndInjectable) {
  const at::Tensor q = seeded_randn({1, 2, 12, 5}, 1), k = seeded_randn({1, 2, 60, 5}, 2);
  const at::Tensor v = seeded_randn({1, 2, 60, 3}, 3);
  AttentionCall a;
  a.seed = 5;
  const WildCatParts p1 = wildcat_parts(q, k, v, 0.5, opts(6, 2), a);
  const WildCatParts p2 = wildcat_parts(q, k, v, 0.5, opts(6, 2), a);
  EXPECT_TRUE(p1.output.equal(p2.output));
  AttentionCall b;
  b.seed = 6;
  EXPECT_FALSE(wildcat_parts(q, k, v, 0.5, opts(6, 2), b).coreset.pivots.equal(p1.coreset.pivots));
  // Shared [r/C, Nk] uniforms equal the same uniforms given per (entry, head).
  AttentionCall shared, per_head;
  shared.injected.uniforms = seeded_uniforms({3, 60}, 7);
  per_head.injected.uniforms = shared.injected.uniforms->expand({1, 2, 3, 60});
  EXPECT_TRUE(wildcat_attention(q, k, v, 0.5, opts(6, 2), shared)
                  .equal(wildcat_attention(q, k, v, 0.5, opts(6, 2), per_head)));
  // Bad injections are rejected: wrong shape, a 1 (would force a pivot with residual 0), a 0.
  AttentionCall bad;
  bad.injected.uniforms = seeded_uniforms({2, 60}, 7);
  EXPECT_THROW(wildcat_attention(q, k, v, 0.5, opts(6, 2), bad), c10::Error);
  for (const double edge : {0.0, 1.0}) {
    at::Tensor u = seeded_uniforms({3, 60}, 7);
    u[1][4] = edge;
    bad.injected.uniforms = u;
    EXPECT_THROW(wildcat_attention(q, k, v, 0.5, opts(6, 2), bad), c10::Error) << edge;
  }
}

// Softmax is invariant to shifting every key (WildCat recentres them) and the output moves
// with a shift of the values (up to the clamp box, which moves too).
TEST(WildCatInvariance, KeyShiftAndValueShift) {
  const at::Tensor q = seeded_randn({1, 1, 14, 4}, 1), k = seeded_randn({1, 1, 36, 4}, 2);
  const at::Tensor v = seeded_randn({1, 1, 36, 3}, 3);
  AttentionCall call;
  call.injected.uniforms = seeded_uniforms({2, 36}, 4);
  const at::Tensor base = wildcat_attention(q, k, v, 0.5, opts(4, 2), call);
  const at::Tensor shift = at::tensor({3.0, -2.0, 0.5, 1.0}, at::kDouble);
  EXPECT_LT(max_rel_diff(wildcat_attention(q, k + shift, v, 0.5, opts(4, 2), call), base), 1e-12);
  EXPECT_LT(max_rel_diff(wildcat_attention(q, k, v + 2.0, 0.5, opts(4, 2), call) - 2.0, base),
            1e-12);
}

// On smooth keys (a curve in R^D) the error falls as r grows (mean over seeds).
TEST(WildCatAccuracy, ErrorDecreasesWithRank) {
  const int64_t nk = 128, nq = 64, dim = 4;
  const at::Tensor t = at::linspace(0, 1, nk, at::kDouble).unsqueeze(1);
  const at::Tensor freq = at::tensor({1.0, 2.0, 3.0, 0.5}, at::kDouble);
  const at::Tensor k = at::sin(t * freq * 3.0).mul(1.5).view({1, 1, nk, dim});
  const at::Tensor v =
      at::cat({at::cos(t * 4.0), t.square(), at::sin(t * 7.0)}, 1).view({1, 1, nk, 3});
  const at::Tensor q = seeded_randn({1, 1, nq, dim}, 1);
  const at::Tensor exact = naive_attention(q, k, v, 1.0);
  std::vector<double> errors;
  for (const int64_t rank : {2, 4, 8, 16, 32}) {
    double sum = 0;
    for (uint64_t seed = 0; seed < 6; ++seed) {
      AttentionCall call;
      call.seed = seed;
      sum += relative_error(wildcat_attention(q, k, v, 1.0, opts(rank, 1), call), exact);
    }
    errors.push_back(sum / 6);
    std::cout << "r = " << rank << ": mean relative error " << errors.back() << "\n";
  }
  for (size_t i = 1; i < errors.size(); ++i) EXPECT_LT(errors[i], errors[i - 1]) << i;
  EXPECT_LT(errors.back(), 1e-3);
}

// Parity with the reference forward pass on its injected uniforms (fixture, float64).
TEST(WildCatParity, MatchesReferenceFixture) {
  const models::SafetensorsFile file = models::SafetensorsFile::open(std::string(KDESERVE_PEER_FIXTURE_DIR) + "/wildcat_parity.safetensors");
  for (const std::string name : {"c1", "c4", "c3pad"}) {
    const at::Tensor settings = file.get(name + "_settings");
    const auto s = [&](int i) { return settings[i].item<int64_t>(); };
    const double scale = file.get(name + "_scale").item<double>();
    const at::Tensor q = file.get(name + "_q"), k = file.get(name + "_k"),
                     v = file.get(name + "_v");
    AttentionCall call;
    call.injected.uniforms = file.get(name + "_uniforms");
    AttentionReport report;
    call.report = &report;
    const WildCatParts parts = wildcat_parts(q, k, v, scale, opts(s(6), s(7)), call);
    const double out_diff = max_rel_diff(parts.output, file.get(name + "_out"));
    // The reference keeps the e^{offset} inside W; the port moves it into the logits.
    const at::Tensor factor = parts.coreset.log_offsets.exp().view({s(0), s(1), -1});
    const double values_diff =
        max_rel_diff(parts.coreset.values.view({s(0), s(1), -1, s(5)}) * factor.unsqueeze(3),
                     file.get(name + "_coreset_values"));
    const double weights_diff = max_rel_diff(parts.coreset.weights.view({s(0), s(1), -1}) * factor,
                                             file.get(name + "_coreset_weights"));
    const double keys_diff = max_rel_diff(parts.coreset.keys.view({s(0), s(1), -1, s(4)}),
                                          file.get(name + "_coreset_keys"));
    std::cout << name << ": max rel diff out " << out_diff << ", W·V " << values_diff << ", W·1 "
              << weights_diff << ", keys " << keys_diff << "\n";
    EXPECT_EQ(report.coreset_size, file.get(name + "_coreset_keys").size(2));
    EXPECT_LT(out_diff, 1e-12) << name;
    EXPECT_LT(values_diff, 1e-12) << name;
    EXPECT_LT(weights_diff, 1e-12) << name;
    EXPECT_LT(keys_diff, 1e-14) << name;
  }
}

}  // namespace
}  // namespace kdeserve::attention::wildcat
