#pragma once
// Checks shared by the peer methods' tests (Performer, ScatterBrain, HyperAttention, Reformer):
// determinism per seed, batch independence, value shift, dtypes, error against features, memory.
// Each takes the method as a callable attend(q, k, v, scale, call) → [B, H, Nq, Dv].

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>

#include "attention/call.h"
#include "tests/attention/test_util.h"
#include "tests/support/peak_memory.h"

namespace kdeserve::testing {

/// A method under test: attend(q, k, v, scale, call).
using Attend = std::function<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        double, const attention::AttentionCall&)>;

/// method(q, k, v, scale, options, call) with `options` bound, as an Attend.
template <typename Options>
Attend with_options(at::Tensor (*method)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         double, const Options&, const attention::AttentionCall&),
                    const Options& options) {
  return [method, options](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           double scale, const attention::AttentionCall& call) {
    return method(q, k, v, scale, options, call);
  };
}

/// A call seeded with `seed`, no injection.
inline attention::AttentionCall seeded_call(uint64_t seed) {
  attention::AttentionCall call;
  call.seed = seed;
  return call;
}

/// Self-attention on x, v [3, 2, N, ·] (scale 1): the same for the same seed, different for
/// another; negating the values of (entry 1, head 1) changes only that head; entry 0 alone with
/// entry seed 5 equals the same entry at batch position 2 with the same entry seed.
inline void expect_deterministic_and_batch_independent(const Attend& attend, const at::Tensor& x,
                                                       const at::Tensor& v) {
  attention::AttentionCall call;
  call.seed = 99;
  const at::Tensor a = attend(x, x, v, 1.0, call);
  EXPECT_TRUE(a.equal(attend(x, x, v, 1.0, call)));
  call.seed = 100;
  EXPECT_FALSE(a.equal(attend(x, x, v, 1.0, call)));
  call.seed = 99;
  at::Tensor v2 = v.clone();
  v2[1][1].neg_();
  const at::Tensor changed = attend(x, x, v2, 1.0, call);
  EXPECT_TRUE(changed[0].equal(a[0]));
  EXPECT_TRUE(changed[2].equal(a[2]));
  EXPECT_TRUE(changed[1][0].equal(a[1][0]));
  EXPECT_FALSE(changed[1][1].equal(a[1][1]));
  call.entry_seeds = {5};
  const at::Tensor alone =
      attend(x.narrow(0, 0, 1), x.narrow(0, 0, 1), v.narrow(0, 0, 1), 1.0, call);
  const at::Tensor xm = at::cat({x.narrow(0, 1, 2), x.narrow(0, 0, 1)});
  const at::Tensor vm = at::cat({v.narrow(0, 1, 2), v.narrow(0, 0, 1)});
  call.entry_seeds = {8, 9, 5};
  EXPECT_TRUE(attend(xm, xm, vm, 1.0, call)[2].equal(alone[0]));
}

/// q, k, v of two entries (entry seeds 21, 22, seed 9): deterministic per seed, another seed
/// changes the output, entry 1 alone equals its slice, and redrawing entry 0's queries leaves
/// entry 1 unchanged (both within 1e-14).
inline void expect_deterministic_and_entries_independent(const Attend& attend, const at::Tensor& q,
                                                         const at::Tensor& k, const at::Tensor& v,
                                                         double scale) {
  attention::AttentionCall call;
  call.seed = 9;
  call.entry_seeds = {21, 22};
  const at::Tensor out = attend(q, k, v, scale, call);
  EXPECT_TRUE(out.equal(attend(q, k, v, scale, call)));
  attention::AttentionCall other = call;
  other.seed = 10;
  EXPECT_FALSE(out.equal(attend(q, k, v, scale, other)));
  attention::AttentionCall alone = call;
  alone.entry_seeds = {22};
  const at::Tensor one = attend(q.slice(0, 1), k.slice(0, 1), v.slice(0, 1), scale, alone);
  EXPECT_LT(max_rel_diff(one, out.slice(0, 1)), 1e-14);
  const at::Tensor q2 = q.clone();
  q2[0].normal_();
  EXPECT_LT(max_rel_diff(attend(q2, k, v, scale, call).slice(0, 1), out.slice(0, 1)), 1e-14);
}

/// Unbiasedness of a kernel estimator: estimates [P, draws] (independent draws) of P pairs whose
/// exact kernel values are exact [P]. Each pair's mean lies within 4 empirical standard errors of
/// the mean and within 10 % of the exact value.
inline void expect_unbiased_estimates(const at::Tensor& estimates, const at::Tensor& exact) {
  const at::Tensor mean = estimates.mean(1);
  const at::Tensor stderr_ = estimates.std(1) / std::sqrt(static_cast<double>(estimates.size(1)));
  for (int64_t i = 0; i < estimates.size(0); ++i) {
    const double e = exact[i].item<double>(), got = mean[i].item<double>();
    std::cout << "pair " << i << ": exact " << e << ", mean " << got << " ± "
              << stderr_[i].item<double>() << "\n";
    EXPECT_LT(std::abs(got - e), 4 * stderr_[i].item<double>()) << "pair " << i;
    EXPECT_LT(std::abs(got - e), 0.1 * e) << "pair " << i;
  }
}

/// Adding 5 to every value adds 5 to the output (within 1e-12; seed 2).
inline void expect_value_shift_shifts_output(const Attend& attend, const at::Tensor& q,
                                             const at::Tensor& k, const at::Tensor& v,
                                             double scale) {
  const at::Tensor out = attend(q, k, v, scale, seeded_call(2));
  const at::Tensor shifted = attend(q, k, v + 5.0, scale, seeded_call(2));
  EXPECT_LT((shifted - 5.0 - out).abs().max().item<double>(), 1e-12);
}

/// The float32 run (seed 4) returns float32 within `tolerance` of the float64 run.
inline void expect_float32_matches_float64(const Attend& attend, const at::Tensor& q,
                                           const at::Tensor& k, const at::Tensor& v, double scale,
                                           double tolerance) {
  const at::Tensor o64 = attend(q, k, v, scale, seeded_call(4));
  const at::Tensor o32 =
      attend(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), scale, seeded_call(4));
  EXPECT_EQ(o32.scalar_type(), at::kFloat);
  EXPECT_LT(max_rel_diff(o32, o64), tolerance);
}

/// Random-feature estimators: the mean relative Frobenius error against exact attention over
/// 4 seeds, on q, k ~ 0.5·N(0, I_8), 64 keys, halves at least per 16× features (m = 16, 256,
/// 4096; the 1/√m rate predicts a factor 4) and ends below 0.05. attend_m(…, m, call).
inline void expect_error_shrinks_as_features_grow(
    const std::function<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                                   int64_t, const attention::AttentionCall&)>& attend_m) {
  const at::Tensor q = seeded_randn({1, 1, 64, 8}, 1) * 0.5,
                   k = seeded_randn({1, 1, 64, 8}, 2) * 0.5;
  const at::Tensor v = seeded_randn({1, 1, 64, 4}, 3);
  const double scale = 1.0 / std::sqrt(8.0);
  const at::Tensor exact = naive_attention(q, k, v, scale);
  double previous = 1e9;
  for (int64_t m : {16, 256, 4096}) {
    double err = 0;
    for (uint64_t seed = 0; seed < 4; ++seed) {
      const at::Tensor out = attend_m(q, k, v, scale, m, seeded_call(seed));
      err += ((out - exact).norm() / exact.norm()).item<double>() / 4;
    }
    std::cout << "m=" << m << ": mean relative Frobenius error " << err << "\n";
    EXPECT_LT(err, previous / 2) << "m=" << m;
    previous = err;
  }
  EXPECT_LT(previous, 0.05);
}

/// No Nq × Nk tensor: self-attention on n = 8192 and 16384 (D = Dv = 64, scale 0.125, default
/// call) allocates below bound(n) bytes and below n² bytes, and at most 2.5× more for 2× n.
inline void expect_memory_linear_in_sequence_length(const Attend& attend,
                                                    const std::function<int64_t(int64_t)>& bound) {
  const int64_t d = 64;
  int64_t previous = 0;
  for (int64_t n : {8192, 16384}) {
    const at::Tensor q = at::randn({1, 1, n, d}), v = at::randn({1, 1, n, d});
    PeakMemoryScope scope;
    const at::Tensor out = attend(q, q, v, 0.125, attention::AttentionCall{});
    const int64_t peak = scope.peak_bytes();
    std::cout << "n=" << n << ": peak extra " << peak / 1e6 << " MB\n";
    EXPECT_LT(peak, bound(n)) << "n=" << n;
    EXPECT_LT(peak, n * n) << "n=" << n;  // any Nq × Nk tensor, even of bools, is n² bytes
    if (previous > 0) {
      EXPECT_LT(static_cast<double>(peak) / previous, 2.5);
    }
    previous = peak;
  }
}

}  // namespace kdeserve::testing
