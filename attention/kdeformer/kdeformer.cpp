#include "attention/kdeformer/kdeformer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

#include "attention/common/blocks.h"
#include "attention/kdeformer/coreset_far_field.h"
#include "attention/kdeformer/coreset_fit.h"
#include "attention/kdeformer/far_field.h"
#include "attention/kdeformer/lsh.h"
#include "attention/kdeformer/sampling.h"

namespace kdeserve::attention::kdeformer {
namespace {

using common::BlockLayout;
using common::gather_rows;

// Balanced partition of n hash-sorted positions into `blocks` diagonal blocks (the reference's
// equal split when blocks divides n; otherwise sizes differ by at most one).
BlockLayout make_layout(int64_t n, int64_t blocks, at::Device device) {
  return common::block_layout(common::balanced_starts(n, blocks), device);
}

// Everything of one estimate in the padded, hash-sorted query layout [G, R = blocks·width].
struct Estimate {
  BlockLayout qlayout, klayout;
  at::Tensor q_row_of_query;  // [G, Nq] padded row of each original query
  at::Tensor key_block;       // [G, Nk] block of each original key
  at::Tensor shift;           // [G, R]
  at::Tensor block_num, block_den, res_num, res_den;  // [G, R, Dv] / [G, R]; undefined if absent
  at::Tensor probabilities, samples;                  // [G, Nk], [G, m]; undefined if m = 0
  // Control variate only. Folded (kdeformer_attention): block_* hold Σ_blk (e − f), ff_* the far
  // field over every key. Split (kdeformer_parts): block_* hold Σ_blk e, ff_* the far field over
  // the off-block keys only. den_floor [G, R] is a lower bound of the true denominator.
  at::Tensor ff_num, ff_den, den_floor;
  at::Tensor value_min, value_max;  // [G, 1, Dv] when clamp_output
  at::Tensor exact_rows, exact_out;  // [G, t], [G, t, Dv]: rows computed exactly (coreset fit)
};

// α_i (1 + s − s̄_i) for logits s [G, R, C]; entries where s = −inf (masked) get 0.
at::Tensor far_field_weights(const at::Tensor& s, const at::Tensor& mean_logit,
                             const at::Tensor& alpha) {
  at::Tensor f = (s - mean_logit.unsqueeze(2)).add_(1).mul_(alpha.unsqueeze(2));
  return f.masked_fill_(s.isneginf(), 0);
}

Estimate estimate(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                  const KdeformerOptions& opt, const AttentionCall& call, bool split) {
  const int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2), dim = q.size(3);
  const int64_t nk = k.size(2), dv = v.size(3), groups = batch * heads;
  const int64_t m = opt.sample_size();
  const bool heavy = opt.heavy();
  // Both far-field residuals share the control variate; kMassCalibrated keeps only its mass.
  const bool calibrated = opt.residual() == Residual::kMassCalibrated;
  // The fitted far field: the control variate's far field as the coreset fit's baseline.
  const bool fitted_ff = opt.residual() == Residual::kFittedFarField;
  const bool cv = opt.residual() == Residual::kControlVariate || calibrated || fitted_ff;
  // The coreset far field spends sample_size on coreset keys instead of samples.
  const bool coreset = opt.residual() == Residual::kCoreset || fitted_ff;
  const int64_t drawn = coreset ? 0 : m;
  split = split || calibrated;  // it rescales the off-block far field on its own
  const double neg_inf = -std::numeric_limits<double>::infinity();
  at::Tensor q3 = q.reshape({groups, nq, dim});
  at::Tensor k3 = k.reshape({groups, nk, dim});
  at::Tensor v3 = v.reshape({groups, nk, dv});
  Estimate e;

  // Alg. 3 step 1: angular LSH, Hamming-ordered bucket ranks, stable sort, diagonal blocks.
  at::Tensor q_order, k_order;
  int64_t blocks = 1;
  if (heavy) {
    at::Tensor proj = lsh_projections(batch, heads, dim, opt.num_projections(), q.scalar_type(),
                                      q.device(), call);  // [G, D, r]
    q_order = hash_sort(bucket_ranks(q3, proj, opt.bucket_order()));  // [G, Nq]
    k_order = hash_sort(bucket_ranks(k3, proj, opt.bucket_order()));  // [G, Nk]
    blocks = (nk + opt.bucket_size() - 1) / opt.bucket_size();
    e.klayout = make_layout(nk, blocks, q.device());
    e.qlayout = make_layout(nq, blocks, q.device());
    e.q_row_of_query = common::rows_of_items(e.qlayout, q_order);  // [G, Nq]
    e.key_block = common::blocks_of_items(e.klayout, k_order);     // [G, Nk]
  } else {
    e.qlayout = make_layout(nq, 1, q.device());
    e.q_row_of_query = e.qlayout.row_of_position.unsqueeze(0).expand({groups, nq});
    e.key_block = at::zeros({groups, nk}, q.options().dtype(at::kLong));
  }
  const int64_t qwidth = e.qlayout.width, rows = blocks * qwidth;

  // Queries in padded sorted rows, scaled: [G, R, D].
  at::Tensor q_rows = heavy ? common::items_of_rows(e.qlayout, q_order)
                            : e.qlayout.position_of_row.unsqueeze(0).expand({groups, rows});
  at::Tensor qs = gather_rows(q3, q_rows).mul_(scale);

  at::Tensor s_blk, v_blk, s_res, v_res, w_res, k_rows;
  at::Tensor row_max;  // [G, R]
  if (heavy) {
    const int64_t kwidth = e.klayout.width;
    // Keys of each block in sorted order; padded slots are masked below.
    k_rows = common::items_of_rows(e.klayout, k_order);  // [G, blocks·kwidth]
    // Keys transposed and contiguous: BLAS-friendly for the batched products below.
    at::Tensor k_blk_t = gather_rows(k3, k_rows).view({groups * blocks, kwidth, dim})
                             .transpose(1, 2).contiguous();  // [G·blocks, D, kwidth]
    v_blk = gather_rows(v3, k_rows).view({groups * blocks, kwidth, dv});
    s_blk = at::bmm(qs.view({groups * blocks, qwidth, dim}), k_blk_t);
    if (e.klayout.padded()) {
      s_blk.view({groups, blocks, qwidth, kwidth})
          .masked_fill_(e.klayout.row_valid.logical_not().view({1, blocks, 1, kwidth}), neg_inf);
    }
    row_max = s_blk.amax(2).view({groups, rows});
  }

  CoresetFarField cf;
  if (coreset) {
    const at::Tensor q_scale = q3.square().sum(2).sqrt_().amax(1);  // [G]
    cf = coreset_far_field(qs, q_scale, k3, v3, k_rows,
                           e.klayout.padded() ? e.klayout.row_valid : at::Tensor(), blocks,
                           scale, m, batch, heads, opt.coreset_pivots(), call,
                           /*off_values=*/!fitted_ff);
    row_max = at::maximum(row_max, cf.logits.amax(2));
  }

  // Alg. 3 step 2: residual A − A_spar estimated from m importance-sampled keys.
  if (drawn > 0) {
    ResidualSamples drawn_samples = draw_residual_samples(v3, batch, heads, opt, call);
    e.probabilities = std::move(drawn_samples.probabilities);
    e.samples = std::move(drawn_samples.indices);  // [G, m]
    w_res = std::move(drawn_samples.weights);
    at::Tensor k_res_t = gather_rows(k3, e.samples).transpose(1, 2).contiguous();  // [G, D, m]
    v_res = gather_rows(v3, e.samples);             // [G, m, Dv]
    s_res = at::bmm(qs, k_res_t);                   // [G, R, m]
    if (heavy) {
      // A sample's block comes from its sorted position; pairs inside the same diagonal block
      // are already exact in A_spar. Only qwidth entries per sample are masked, so they are
      // addressed directly: flat index of (g, row = block·qwidth + t, s) in s_res [G, R, m].
      at::Tensor sample_block = e.key_block.gather(1, e.samples);  // [G, m]
      at::Tensor first = at::arange(groups, sample_block.options()).mul_(rows * m).unsqueeze(1) +
                         sample_block.mul(qwidth * m) + at::arange(m, sample_block.options());
      at::Tensor within = at::arange(qwidth, sample_block.options()).mul_(m);  // [qwidth]
      s_res.view({-1}).index_fill_(0, (first.unsqueeze(2) + within).flatten(), neg_inf);
    }
    at::Tensor res_max = s_res.amax(2);  // [G, R]
    row_max = row_max.defined() ? at::maximum(row_max, res_max) : res_max;
  }

  // One shift per query for both parts, so e^{s − c} never overflows and cancels in num/den.
  e.shift = row_max;
  at::Tensor c = row_max.unsqueeze(2);  // [G, R, 1]
  at::Tensor alpha, mean_logit;
  if (cv) {
    FarField ff = far_field_moments(qs, k3, v3);
    // α_i = e^{s̄_i + σ²_i/2 − c_i}, the Gaussian-logit mean of e^{s_ij − c_i}, capped at 1: the
    // mean of e^{s − c} over keys is ≤ 1 whenever c bounds their logits, as the LSH block max is
    // meant to. Any α keeps the estimate unbiased; the cap keeps it finite.
    alpha = at::clamp_max(ff.exponent - row_max, 0).exp_();
    mean_logit = ff.mean_logit;
    e.ff_num = ff.num_all.mul_(alpha.unsqueeze(2));
    e.ff_den = alpha * static_cast<double>(nk);
  }
  at::Tensor res_floor;  // [G, R] max over the off-block samples of e^{s − c}
  if (drawn > 0) {
    at::Tensor f_res = cv ? far_field_weights(s_res, mean_logit, alpha) : at::Tensor();
    at::Tensor p_res = s_res.sub_(c).exp_();  // [G, R, m]
    if (cv) {
      res_floor = p_res.amax(2);
      p_res.sub_(f_res);
    }
    if (!calibrated) e.res_num = at::bmm(p_res, v_res.mul_(w_res.unsqueeze(2)));
    e.res_den = at::bmm(p_res, w_res.unsqueeze(2)).squeeze(2);
  }
  if (heavy) {
    at::Tensor s_rows = s_blk.view({groups, rows, -1});
    at::Tensor f_blk = cv ? far_field_weights(s_rows, mean_logit, alpha) : at::Tensor();
    at::Tensor p_blk = s_rows.sub_(c).exp_();  // [G, R, kwidth]
    e.block_den = p_blk.sum(2);
    if (cv) e.den_floor = e.block_den.clone();
    if (cv && split) {
      at::Tensor f_v = at::bmm(f_blk.view({groups * blocks, qwidth, -1}), v_blk);
      e.ff_num.sub_(f_v.view({groups, rows, dv}));
      e.ff_den.sub_(f_blk.sum(2));
    } else if (cv) {
      // Folded: Σ_blk (e − f) v + Σ_all f v = Σ_blk e v + Σ_off f v with one product.
      p_blk.sub_(f_blk);
      e.block_den.sub_(f_blk.sum(2));
    }
    e.block_num = at::bmm(p_blk.view({groups * blocks, qwidth, -1}), v_blk).view({groups, rows, dv});
  }
  if (coreset) {
    at::Tensor p_cs = cf.logits.sub_(c).exp_();  // [G, R, S]
    // The fitted far field corrects the far field's off-block sums (block_* hold Σ_blk (e − f),
    // ff_* Σ_all f: together Σ_blk e + Σ_off f), the coreset its Nyström ones.
    at::Tensor off =
        fitted_ff ? at::cat({e.ff_num, e.ff_den.unsqueeze(2)}, 2)
                  : at::bmm(p_cs.view({groups * blocks, qwidth, -1}), cf.off_values)
                        .view({groups, rows, dv + 1});
    if (opt.coreset_fit_rows() > 0) {
      CoresetFit fit = fit_coreset_values(p_cs, off, e.block_num, e.block_den, row_max, qs, k3,
                                          v3, e.q_row_of_query, opt.coreset_fit_rows(), batch,
                                          heads, call);
      off = apply_coreset_fit(off, p_cs, e.block_den, fit.delta);
      e.exact_rows = std::move(fit.rows);
      e.exact_out = std::move(fit.exact);
    }
    e.ff_num = off.narrow(2, 0, dv);
    e.ff_den = off.select(2, dv);
    // D ≥ Σ_blk e and D ≥ e^{β q·k_s − c} for every key s: Nyström weights can be negative, so
    // the coreset's off-block mass can be too, and the floor keeps D̂ positive. (With the far
    // field, block_den holds Σ_blk (e − f); den_floor already holds Σ_blk e.)
    e.den_floor = at::maximum(fitted_ff ? e.den_floor : e.block_den,
                              cf.real_max.sub_(row_max).exp_());
  }
  if (cv) {
    // D ≥ Σ_blk e + max over off-block samples of e: disjoint keys, positive terms.
    if (res_floor.defined()) {
      e.den_floor = e.den_floor.defined() ? e.den_floor.add_(res_floor) : res_floor;
    }
  }
  if (calibrated && e.res_den.defined()) {
    // The samples' unbiased off-block mass D̂_off = Σ_off f + Σ_s w (e − f), at least 0, rescales
    // the far field's off-block numerator: N̂_off = Σ_off f v · D̂_off / Σ_off f.
    at::Tensor mass = (e.ff_den + e.res_den).clamp_min_(0);
    at::Tensor ratio = at::where(e.ff_den > 0, mass / e.ff_den, at::ones_like(mass));
    e.ff_num.mul_(ratio.unsqueeze(2));
    e.ff_den = mass;
    e.res_den = at::Tensor();
  }
  if (opt.clamp_output()) {
    std::tie(e.value_min, e.value_max) = at::aminmax(v3, 1, /*keepdim=*/true);
  }
  return e;
}

// Padded rows [G, R, C] → original query order [G, Nq, C].
at::Tensor to_queries(const at::Tensor& x, const at::Tensor& row_of_query) {
  const bool vector = x.dim() == 2;
  at::Tensor x3 = vector ? x.unsqueeze(2) : x;
  at::Tensor out = gather_rows(x3, row_of_query);
  return vector ? out.squeeze(2) : out;
}

// a += b where both exist; the defined one otherwise. a is the estimate's own temporary.
at::Tensor add_defined_(at::Tensor a, const at::Tensor& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return a.add_(b);
}

// The estimate in padded rows [G, R, Dv]: (Σ numerators) / (Σ denominators), the denominator
// raised to its lower bound (control variate) and the result clamped to the values' range.
// Consumes the estimate's tensors (in place).
at::Tensor combine(Estimate& e) {
  at::Tensor num = add_defined_(add_defined_(e.block_num, e.res_num), e.ff_num);  // [G, R, Dv]
  at::Tensor den = add_defined_(add_defined_(e.block_den, e.res_den), e.ff_den);  // [G, R]
  if (e.den_floor.defined()) den = at::maximum_out(den, den, e.den_floor);
  at::Tensor out = num.div_(den.unsqueeze(2));
  if (e.value_min.defined()) out.clamp_(e.value_min, e.value_max);
  if (e.exact_rows.defined()) {
    out.scatter_(1, e.exact_rows.unsqueeze(2).expand_as(e.exact_out), e.exact_out);
  }
  return out;
}

void fill_report(const Estimate& e, const KdeformerOptions& opt, const AttentionCall& call) {
  if (call.report == nullptr) return;
  call.report->num_blocks = opt.heavy() ? e.klayout.blocks : 0;
  call.report->block_keys = opt.heavy() ? e.klayout.width : 0;
  const bool coreset =
      opt.residual() == Residual::kCoreset || opt.residual() == Residual::kFittedFarField;
  call.report->sample_size = coreset ? 0 : opt.sample_size();
  if (coreset) call.report->coreset_size = std::min(opt.sample_size(), e.key_block.size(1));
  if (e.exact_rows.defined()) call.report->coreset_fit_rows = e.exact_rows.size(1);
}

}  // namespace

void check_options(const KdeformerOptions& opt) {
  TORCH_CHECK(opt.bucket_size() >= 1, "kdeformer: bucket_size must be >= 1, got ",
              opt.bucket_size());
  TORCH_CHECK(opt.sample_size() >= 0, "kdeformer: sample_size must be >= 0, got ",
              opt.sample_size());
  TORCH_CHECK(opt.num_projections() >= 1 && opt.num_projections() <= kMaxProjections,
              "kdeformer: num_projections must be in [1, ", kMaxProjections, "], got ",
              opt.num_projections());
  TORCH_CHECK(opt.power_iterations() >= 1, "kdeformer: power_iterations must be >= 1, got ",
              opt.power_iterations());
  TORCH_CHECK(opt.heavy() || opt.sample_size() > 0,
              "kdeformer: without the heavy block part, sample_size must be > 0");
  TORCH_CHECK(opt.residual() == Residual::kSampled || opt.heavy(),
              "kdeformer: the ", to_string(opt.residual()),
              " residual needs the heavy block part");
  TORCH_CHECK(opt.calibration_rows() >= 0, "kdeformer: calibration_rows must be >= 0, got ",
              opt.calibration_rows());
  TORCH_CHECK(opt.coreset_fit_rows() >= 0, "kdeformer: coreset_fit_rows must be >= 0, got ",
              opt.coreset_fit_rows());
  const bool coreset =
      opt.residual() == Residual::kCoreset || opt.residual() == Residual::kFittedFarField;
  TORCH_CHECK(opt.coreset_fit_rows() == 0 || coreset,
              "kdeformer: coreset_fit_rows needs the coreset or fitted_far_field residual, got ",
              to_string(opt.residual()));
  TORCH_CHECK(!coreset || opt.sample_size() >= 1, "kdeformer: the ", to_string(opt.residual()),
              " residual needs sample_size (its coreset keys) >= 1");
  TORCH_CHECK(opt.residual() != Residual::kFittedFarField || opt.coreset_fit_rows() >= 1,
              "kdeformer: the fitted_far_field residual needs coreset_fit_rows >= 1");
}

at::Tensor kdeformer_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               double scale, const KdeformerOptions& options,
                               const AttentionCall& call) {
  check_options(options);
  const int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2), dv = v.size(3);
  if (nq == 0) return at::empty({batch, heads, 0, dv}, v.options());
  Estimate e = estimate(q, k, v, scale, options, call, /*split=*/false);
  fill_report(e, options, call);
  at::Tensor out_rows = combine(e);
  return to_queries(out_rows, e.q_row_of_query).view({batch, heads, nq, dv});
}

KdeformerParts kdeformer_parts(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               double scale, const KdeformerOptions& options,
                               const AttentionCall& call) {
  check_options(options);
  const int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2), nk = k.size(2);
  const int64_t dv = v.size(3), m = options.sample_size();
  TORCH_CHECK(nq > 0, "kdeformer_parts: needs at least one query");
  Estimate e = estimate(q, k, v, scale, options, call, /*split=*/true);
  fill_report(e, options, call);
  const at::Tensor& rows = e.q_row_of_query;
  auto zeros_like_num = [&] { return at::zeros({batch, heads, nq, dv}, v.options()); };
  auto zeros_like_den = [&] { return at::zeros({batch, heads, nq}, v.options()); };
  KdeformerParts parts;
  parts.shift = to_queries(e.shift, rows).view({batch, heads, nq});
  parts.block_numerator = e.block_num.defined()
                              ? to_queries(e.block_num, rows).view({batch, heads, nq, dv})
                              : zeros_like_num();
  parts.block_denominator = e.block_den.defined()
                                ? to_queries(e.block_den, rows).view({batch, heads, nq})
                                : zeros_like_den();
  parts.residual_numerator = e.res_num.defined()
                                 ? to_queries(e.res_num, rows).view({batch, heads, nq, dv})
                                 : zeros_like_num();
  parts.residual_denominator = e.res_den.defined()
                                   ? to_queries(e.res_den, rows).view({batch, heads, nq})
                                   : zeros_like_den();
  at::Tensor q_block_of_row =
      at::arange(e.qlayout.blocks, rows.options()).repeat_interleave(e.qlayout.width);
  parts.query_block = at::take(q_block_of_row, rows).view({batch, heads, nq});
  parts.key_block = e.key_block.reshape({batch, heads, nk});
  if (e.samples.defined()) {
    parts.sample_probabilities = e.probabilities.view({batch, heads, nk});
    parts.sample_indices = e.samples.view({batch, heads, m});
  }
  if (options.residual() != Residual::kSampled) {
    parts.far_field_numerator = to_queries(e.ff_num, rows).view({batch, heads, nq, dv});
    parts.far_field_denominator = to_queries(e.ff_den, rows).view({batch, heads, nq});
    parts.denominator_floor = to_queries(e.den_floor, rows).view({batch, heads, nq});
    parts.output = to_queries(combine(e), rows).view({batch, heads, nq, dv});
    return parts;
  }
  parts.output = (parts.block_numerator + parts.residual_numerator) /
                 (parts.block_denominator + parts.residual_denominator).unsqueeze(3);
  if (e.value_min.defined()) {
    parts.output = at::maximum(at::minimum(parts.output, e.value_max.view({batch, heads, 1, dv})),
                               e.value_min.view({batch, heads, 1, dv}));
  }
  return parts;
}

}  // namespace kdeserve::attention::kdeformer
