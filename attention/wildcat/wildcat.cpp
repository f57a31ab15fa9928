#include "attention/wildcat/wildcat.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "attention/random.h"
#include "attention/wildcat/rp_cholesky.h"

namespace kdeserve::attention::wildcat {
namespace {

// compress_kv.py's ρ₂ of the newest temperature τ² = ρ₂·k_scale/q_scale.
constexpr double kRho2 = 3.94582;
// weighted attention: a denominator at or below this (relative to the query's shift) gives 0.
constexpr double kMinDenominator = 1e-20;
// Accelerated RPCholesky's proposals per round (at most the rank).
constexpr int64_t kProposalBlock = 128;

void check_options(const WildCatOptions& opt) {
  TORCH_CHECK(opt.num_bins() >= 1, "wildcat: num_bins must be >= 1, got ", opt.num_bins());
  TORCH_CHECK(opt.rank() >= opt.num_bins(), "wildcat: rank must be >= num_bins (at least one ",
              "pivot per bin), got rank ", opt.rank(), ", num_bins ", opt.num_bins());
  TORCH_CHECK(
      std::isfinite(opt.residual_floor()) && opt.residual_floor() >= 0 && opt.residual_floor() < 1,
      "wildcat: residual_floor must be in [0, 1), got ", opt.residual_floor());
}

// Pivots per bin: r padded up to a multiple of C, over C.
int64_t pivots_per_bin(const WildCatOptions& opt) {
  return (opt.rank() + opt.num_bins() - 1) / opt.num_bins();
}

double residual_floor(const WildCatOptions& opt, at::ScalarType dtype) {
  return opt.residual_floor() > 0 ? opt.residual_floor() : default_residual_floor(dtype);
}

}  // namespace

at::Tensor gumbel_noise(const AttentionCall& call, int64_t batch, int64_t heads, int64_t pivots,
                        int64_t nk, const at::TensorOptions& out) {
  const int64_t groups = batch * heads;
  at::Tensor u;
  if (call.injected.uniforms) {
    const at::Tensor& given = *call.injected.uniforms;
    const bool shared = given.dim() == 2 && given.size(0) == pivots && given.size(1) == nk;
    const bool per_head = given.dim() == 4 && given.size(0) == batch && given.size(1) == heads &&
                          given.size(2) == pivots && given.size(3) == nk;
    TORCH_CHECK(shared || per_head, "wildcat: injected uniforms must be [r/C, Nk] = [", pivots,
                ", ", nk, "] or [B, H, r/C, Nk], got ", given.sizes());
    u = given.to(at::kCPU, at::kDouble);
    TORCH_CHECK(u.gt(0).logical_and(u.lt(1)).all().item<bool>(),
                "wildcat: injected uniforms must lie in the open interval (0, 1)");
    u = shared ? u.unsqueeze(0).expand({groups, pivots, nk}) : u.reshape({groups, pivots, nk});
  } else {
    std::vector<at::Tensor> draws;
    draws.reserve(groups);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        at::Generator gen = stream_generator(call, b, h, Stream::kUniforms);
        draws.push_back(at::rand({pivots, nk}, gen, at::TensorOptions(at::kDouble)));
      }
    }
    // at::rand draws from [0, 1): move the 0 inside the open interval.
    u = at::stack(draws).clamp_min_(std::numeric_limits<double>::min());
  }
  return u.log().neg_().log_().neg_().to(out);
}

double default_residual_floor(at::ScalarType dtype) {
  const double eps = dtype == at::kDouble ? std::numeric_limits<double>::epsilon()
                                          : std::numeric_limits<float>::epsilon();
  return 1000 * eps;
}

double temperature_rho2() { return kRho2; }

namespace {

// The keys scaled by √β/τ (τ² = ρ₂ k_scale/q_scale, as compress_kv.py) and ‖k̃‖²: ks [P, n, D],
// sqd [P, n]. A zero k_scale (all keys equal) or q_scale (all queries 0) makes the kernel
// constant: the multiplier is then 0.
std::pair<at::Tensor, at::Tensor> scaled_keys(const at::Tensor& keys, const at::Tensor& q_scale,
                                              double scale) {
  const at::Tensor sqd_raw = keys.square().sum(2);     // [P, n]
  const at::Tensor k_scale = sqd_raw.amax(1).sqrt_();  // [P]
  const at::Tensor tau = (k_scale / q_scale).mul_(kRho2).sqrt_();
  const at::Tensor usable = k_scale.gt(0).logical_and(q_scale.gt(0));
  const at::Tensor mult =
      at::where(usable, std::sqrt(scale) / tau, at::zeros_like(tau)).unsqueeze(1);  // [P, 1]
  return {keys * mult.unsqueeze(2), sqd_raw * mult.square()};  // ‖k̃‖², as the reference
}

// Every key with weight 1 (n <= pivots).
Coreset every_key(const at::Tensor& keys, const at::Tensor& values, at::Tensor* key_weights) {
  const int64_t p = keys.size(0), n = keys.size(1);
  Coreset out;
  out.keys = keys;
  out.values = values;
  out.weights = at::ones({p, n}, keys.options());
  out.log_offsets = at::zeros({p, n}, keys.options());
  out.pivots = at::arange(n, keys.options().dtype(at::kLong)).unsqueeze(0).expand({p, n});
  if (key_weights != nullptr) {
    *key_weights = at::eye(n, keys.options()).unsqueeze(0).expand({p, n, n});
  }
  return out;
}

// The coreset from the pivots and the Gaussian kernel's Nyström weights W = K_SS⁻¹ G.
Coreset coreset_of(const at::Tensor& keys, const at::Tensor& values, const at::Tensor& sqd,
                   const Pivoted& c, at::Tensor* key_weights) {
  const int64_t p = keys.size(0), n = keys.size(1), dim = keys.size(2);
  const int64_t pivots = c.pivots.size(1);
  // Turned into exponential-kernel weights W_sl e^{(‖k̃_l‖² − ‖k̃_s‖²)/2}. That factor can
  // overflow (and multiply round-off by e^{Δ/2}) where key norms differ widely. Fix (§2.6.4),
  // exact in exact arithmetic:
  // 1. the column of each kept pivot is set to the unit vector it equals (K_SS⁻¹ K_SS = I),
  //    so the round-off of K_SS⁻¹ G there is never amplified;
  // 2. each row is max-shifted in log space, W'_sl = sign(W_sl) e^{log|W_sl| + ‖k̃_l‖²/2 − M_s}
  //    with M_s its largest exponent, and e^{M_s − ‖k̃_s‖²/2} becomes a logit offset.
  at::Tensor w = c.weights;  // [P, r, n]
  const at::Tensor unit = c.pivots.unsqueeze(2)
                              .eq(at::arange(n, c.pivots.options()))
                              .logical_and_(c.kept.unsqueeze(2));  // [P, r, n]
  w = at::where(unit.any(1, /*keepdim=*/true), unit.to(w.scalar_type()), w);
  const at::Tensor half = (sqd * 0.5).unsqueeze(1);  // [P, 1, n]
  const at::Tensor exponent = w.abs().log_().add_(half);
  at::Tensor top = exponent.amax(2, /*keepdim=*/true);        // [P, r, 1]
  top = at::where(top.isfinite(), top, at::zeros_like(top));  // a dropped pivot's row is 0
  w = w.sign().mul_(exponent.sub_(top).exp_());
  Coreset out;
  out.log_offsets = top.squeeze(2).sub_(sqd.gather(1, c.pivots).mul_(0.5));
  out.values = at::bmm(w, values);  // [P, r, Dv]
  out.weights = w.sum(2);           // [P, r]
  out.keys = keys.gather(1, c.pivots.unsqueeze(2).expand({p, pivots, dim}));
  out.pivots = c.pivots;
  if (key_weights != nullptr) *key_weights = w;
  return out;
}

}  // namespace

Coreset compress_bins(const at::Tensor& keys, const at::Tensor& values, const at::Tensor& q_scale,
                      double scale, int64_t pivots, const at::Tensor& gumbel, double floor,
                      at::Tensor* key_weights) {
  const int64_t p = keys.size(0), n = keys.size(1);
  if (n <= pivots) return every_key(keys, values, key_weights);
  TORCH_CHECK(
      gumbel.defined() && gumbel.size(0) == p && gumbel.size(1) == pivots && gumbel.size(2) == n,
      "wildcat: compress_bins needs gumbel [P, pivots, n]");
  const auto [ks, sqd] = scaled_keys(keys, q_scale, scale);
  return coreset_of(keys, values, sqd, rp_cholesky_sequential(ks, sqd, gumbel, pivots, floor),
                    key_weights);
}

Coreset compress_bins_accelerated(const at::Tensor& keys, const at::Tensor& values,
                                  const at::Tensor& q_scale, double scale, int64_t pivots,
                                  const std::vector<at::Generator>& generators, double floor,
                                  at::Tensor* key_weights) {
  const int64_t n = keys.size(1);
  if (n <= pivots) return every_key(keys, values, key_weights);
  const auto [ks, sqd] = scaled_keys(keys, q_scale, scale);
  const int64_t block = std::min(pivots, kProposalBlock);
  return coreset_of(keys, values, sqd,
                    rp_cholesky_accelerated(ks, sqd, pivots, floor, generators, block),
                    key_weights);
}

at::Tensor weighted_attention(const at::Tensor& q, const Coreset& coreset, double scale,
                              at::Tensor* denominator) {
  at::Tensor logits = at::bmm(q, coreset.keys.transpose(1, 2))
                          .mul_(scale)
                          .add_(coreset.log_offsets.unsqueeze(1));  // [G, Nq, S]
  logits.sub_(std::get<0>(logits.max(2, /*keepdim=*/true))).exp_();
  const at::Tensor den = at::bmm(logits, coreset.weights.unsqueeze(2));  // [G, Nq, 1]
  const at::Tensor num = at::bmm(logits, coreset.values);                // [G, Nq, Dv]
  if (denominator != nullptr) *denominator = den.squeeze(2);
  // Nyström weights can be negative, so den can be <= 0: such rows give 0 (then the clamp).
  return at::where(den.gt(kMinDenominator), num / den, at::zeros_like(num));
}

std::string exact_reason(const WildCatOptions& options, int64_t, int64_t num_keys) {
  check_options(options);
  const int64_t c = options.num_bins(), r_bin = pivots_per_bin(options);
  const int64_t largest = std::max(num_keys / c, num_keys % c);
  if (r_bin < largest) return {};
  return "rank/num_bins " + std::to_string(r_bin) + " >= the largest bin (" +
         std::to_string(largest) + " of Nk " + std::to_string(num_keys) + " keys in " +
         std::to_string(c) +
         " bins): every key is kept with weight 1, so WildCat is exact "
         "attention";
}

WildCatParts wildcat_parts(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           double scale, const WildCatOptions& options, const AttentionCall& call) {
  check_options(options);
  const int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2), dim = q.size(3);
  const int64_t nk = k.size(2), dv = v.size(3), groups = batch * heads;
  const int64_t bins = options.num_bins(), r_bin = pivots_per_bin(options);
  const int64_t width = nk / bins, rem = nk % bins;
  TORCH_CHECK(nq > 0, "wildcat_parts: needs at least one query (q_scale is their largest norm)");
  const double floor = residual_floor(options, q.scalar_type());
  const at::Tensor q3 = q.reshape({groups, nq, dim});
  const at::Tensor v3 = v.reshape({groups, nk, dv});
  at::Tensor k3 = k.reshape({groups, nk, dim});
  WildCatParts parts;
  parts.vmax = v3.amax(1);  // [G, Dv]
  parts.vmin = v3.amin(1);
  // Softmax is invariant to a shift of all keys; recentring shrinks the key norms.
  k3 = k3 - k3.mean(1, /*keepdim=*/true);
  const at::Tensor q_scale = q3.square().sum(2).sqrt_().amax(1);  // [G]
  const bool sampled = width > r_bin || rem > r_bin;
  const at::Tensor gumbel =
      sampled ? gumbel_noise(call, batch, heads, r_bin, nk, q.options()) : at::Tensor();

  std::vector<at::Tensor> keys, values, weights, offsets, pivots;
  const auto add = [&](const Coreset& c, int64_t bins_here, int64_t first_key, int64_t bin_width) {
    const int64_t per_bin = c.keys.size(1), size = bins_here * per_bin;
    keys.push_back(c.keys.reshape({groups, size, dim}));
    values.push_back(c.values.reshape({groups, size, dv}));
    weights.push_back(c.weights.reshape({groups, size}));
    offsets.push_back(c.log_offsets.reshape({groups, size}));
    const at::Tensor start =
        at::arange(bins_here, c.pivots.options()).mul_(bin_width).add_(first_key);
    pivots.push_back((c.pivots.reshape({groups, bins_here, per_bin}) + start.view({1, -1, 1}))
                         .reshape({groups, size}));
  };
  if (width > 0) {
    // The C regular bins are independent: one batch of G·C bins.
    const int64_t used = bins * width;
    const at::Tensor kb = k3.narrow(1, 0, used).reshape({groups * bins, width, dim});
    const at::Tensor vb = v3.narrow(1, 0, used).reshape({groups * bins, width, dv});
    const at::Tensor gb = width > r_bin ? gumbel.narrow(2, 0, used)
                                              .reshape({groups, r_bin, bins, width})
                                              .permute({0, 2, 1, 3})
                                              .reshape({groups * bins, r_bin, width})
                                        : at::Tensor();
    add(compress_bins(kb, vb, q_scale.repeat_interleave(bins), scale, r_bin, gb, floor), bins, 0,
        width);
  }
  if (rem > 0) {
    // Fix (§2.6.2): the remainder bin of each group takes that group's own q_scale.
    const int64_t first = bins * width;
    const at::Tensor gr = rem > r_bin ? gumbel.narrow(2, first, rem).contiguous() : at::Tensor();
    add(compress_bins(k3.narrow(1, first, rem), v3.narrow(1, first, rem), q_scale, scale, r_bin, gr,
                      floor),
        1, first, rem);
  }
  Coreset& all = parts.coreset;
  all.keys = at::cat(keys, 1);
  all.values = at::cat(values, 1);
  all.weights = at::cat(weights, 1);
  all.log_offsets = at::cat(offsets, 1);
  all.pivots = at::cat(pivots, 1);
  if (call.report != nullptr) call.report->coreset_size = all.keys.size(1);

  at::Tensor den;
  at::Tensor out = weighted_attention(q3, all, scale, &den);
  if (options.clamp_output()) {
    // Exact attention is a convex combination of the values, so it lies in [vmin, vmax].
    out = at::max(at::min(out, parts.vmax.unsqueeze(1)), parts.vmin.unsqueeze(1));
  }
  parts.denominator = den.view({batch, heads, nq});
  parts.vmax = parts.vmax.view({batch, heads, dv});
  parts.vmin = parts.vmin.view({batch, heads, dv});
  parts.output = out.view({batch, heads, nq, dv});
  return parts;
}

at::Tensor wildcat_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             double scale, const WildCatOptions& options,
                             const AttentionCall& call) {
  check_options(options);
  if (q.size(2) == 0) {
    if (call.report != nullptr) call.report->coreset_size = 0;
    return at::empty({q.size(0), q.size(1), 0, v.size(3)}, v.options());
  }
  return wildcat_parts(q, k, v, scale, options, call).output;
}

}  // namespace kdeserve::attention::wildcat
