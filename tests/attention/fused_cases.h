#pragma once
/// The shapes both fused KDEformer kernels (CPU: kdeformer_fused_test.cpp, CUDA:
/// kdeformer_fused_cuda_test.cpp) are checked against the ATen oracle on: any n, Nq ≠ Nk,
/// Dv ≠ D, odd head dims, empty query blocks, more samples than keys, one sample.

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "attention/call.h"
#include "attention/options.h"
#include "tests/attention/test_util.h"

namespace kdeserve::attention::kdeformer::fused_cases {

struct Case {
  std::string name;
  int64_t batch, heads, nq, nk, dim, dv;
  int64_t bucket, samples;
  double scale;
};

inline std::vector<Case> cases() {
  return {
      {"square", 2, 2, 128, 128, 16, 16, 16, 24, 0.25},
      {"uneven_blocks", 1, 3, 203, 203, 8, 8, 16, 40, 0.35},
      {"nq_ne_nk", 2, 1, 150, 97, 12, 12, 16, 24, 0.3},
      {"dv_ne_d", 1, 2, 96, 130, 8, 5, 16, 16, 0.4},
      {"wide_values", 1, 1, 300, 260, 64, 256, 64, 128, 1.0 / 8},
      {"odd_dims", 2, 1, 77, 91, 7, 3, 9, 13, 0.5},
      {"few_queries", 1, 2, 3, 100, 8, 8, 16, 24, 0.35},
      {"samples_exceed_keys", 1, 1, 40, 33, 8, 8, 8, 80, 0.35},
      {"one_sample", 1, 1, 64, 64, 8, 8, 8, 1, 0.35},
  };
}

using kdeserve::testing::seeded_randn;

struct Inputs {
  at::Tensor q, k, v;
};

inline Inputs inputs(const Case& c, uint64_t seed, double logit_gain = 1.0) {
  Inputs in;
  in.q = seeded_randn({c.batch, c.heads, c.nq, c.dim}, seed, at::kFloat) * logit_gain;
  in.k = seeded_randn({c.batch, c.heads, c.nk, c.dim}, seed + 1, at::kFloat);
  in.v = seeded_randn({c.batch, c.heads, c.nk, c.dv}, seed + 2, at::kFloat);
  return in;
}

/// The call the kernels and their oracle share: seed and per-entry seeds 100 + b.
inline AttentionCall seeded_call(const Case& c, uint64_t seed) {
  AttentionCall call;
  call.seed = seed;
  call.entry_seeds.assign(c.batch, 0);
  for (int64_t b = 0; b < c.batch; ++b) call.entry_seeds[b] = 100 + b;
  return call;
}

/// The case's bucket size with the given residual and sample size.
inline KdeformerOptions options_of(const Case& c, Residual residual, int64_t samples) {
  return KdeformerOptions().bucket_size(c.bucket).sample_size(samples).residual(residual);
}

/// One implementation's check against its oracle: the case, the options, the seed, the logit
/// gain and the tolerance (each test file runs its kernel and the oracle with them).
using OracleCheck =
    std::function<void(const Case& c, const KdeformerOptions& options, uint64_t seed,
                       double logit_gain, double tolerance)>;

/// The sampled residual on every case, without samples and with the case's: 2e-5.
inline void check_sampled_cases(const OracleCheck& check, uint64_t seed) {
  for (const Case& c : cases()) {
    for (int64_t m : {int64_t{0}, c.samples}) {
      check(c, options_of(c, Residual::kSampled, m), seed += 10, 1.0, 2e-5);
    }
  }
}

/// The control variate on every case, without samples and with them, clamped or not: 5e-5.
inline void check_control_variate_cases(const OracleCheck& check, uint64_t seed) {
  for (const Case& c : cases()) {
    for (int64_t m : {int64_t{0}, c.samples}) {
      for (bool clamp : {false, true}) {
        check(c, options_of(c, Residual::kControlVariate, m).clamp_output(clamp), seed += 10,
              1.0, 5e-5);
      }
    }
  }
}

/// Both bucket orders, both samplings and r ∈ {1, 4, 9} on the uneven-blocks case: 2e-5.
inline void check_every_knob(const OracleCheck& check, uint64_t seed) {
  const Case c = cases()[1];
  for (BucketOrder order : {BucketOrder::kGray, BucketOrder::kReference}) {
    for (Sampling sampling : {Sampling::kValueNorm, Sampling::kUniform}) {
      for (int64_t r : {1, 4, 9}) {
        const KdeformerOptions opt = options_of(c, Residual::kSampled, c.samples)
                                         .bucket_order(order)
                                         .sampling(sampling)
                                         .num_projections(r)
                                         .power_iterations(5)
                                         .clamp_output(true);
        check(c, opt, seed += 10, 1.0, 2e-5);
      }
    }
  }
}

/// Logits in the hundreds (gain 60) on the square case, both residuals: one max-shift per query
/// keeps both finite; the logits carry float32 rounding of relative size 1e-7, so e^{s − c}
/// agrees to 1e-7 · |s|: 2e-3.
inline void check_large_logits(const OracleCheck& check, uint64_t seed) {
  const Case c = cases()[0];
  for (Residual residual : {Residual::kSampled, Residual::kControlVariate}) {
    check(c, options_of(c, residual, c.samples), seed, 60.0, 2e-3);
  }
}

}  // namespace kdeserve::attention::kdeformer::fused_cases
