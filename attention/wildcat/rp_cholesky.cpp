#include "attention/wildcat/rp_cholesky.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "attention/common/blocks.h"

namespace kdeserve::attention::wildcat {
namespace {

using common::gather_rows;

// Rounds in a row without an accepted proposal after which a bin stops drawing (its residual
// is then round-off: the first proposal of a round is accepted with probability ≈ 1 otherwise).
constexpr int kMaxStalls = 3;

// Gaussian kernel between rows a [P, m, D] and b [P, n, D] given their half squared norms,
// clamped to 1 (round-off can exceed it for near-duplicates): [P, m, n].
at::Tensor gaussian(const at::Tensor& a, const at::Tensor& half_a, const at::Tensor& b,
                    const at::Tensor& half_b) {
  return at::bmm(a, b.transpose(1, 2))
      .sub_(half_a.unsqueeze(2))
      .sub_(half_b.unsqueeze(1))
      .exp_()
      .clamp_max_(1.0);
}

}  // namespace

Pivoted rp_cholesky_sequential(const at::Tensor& ks, const at::Tensor& sqd,
                               const at::Tensor& gumbel, int64_t r, double floor) {
  const int64_t p = ks.size(0), n = ks.size(1), dim = ks.size(2);
  const at::Tensor half = sqd * 0.5;
  const at::Tensor ks_t = ks.transpose(1, 2).contiguous();  // [P, D, n]
  at::Tensor pivots = at::empty({p, r}, ks.options().dtype(at::kLong));
  at::Tensor inv = at::zeros({p, r, r}, ks.options());  // K_SS⁻¹, zero for dropped pivots
  at::Tensor rows = at::zeros({p, r, n}, ks.options());  // Gaussian rows of the pivots, ≤ 1
  at::Tensor res = at::ones({p, n}, ks.options());
  for (int64_t t = 0; t < r; ++t) {
    // Gumbel-max: argmax of log res + ‖k̃‖² + G samples j ∝ res_j e^{‖k̃_j‖²}.
    at::Tensor idx = (res.log() + sqd + gumbel.select(1, t)).argmax(1, /*keepdim=*/true);  // [P, 1]
    pivots.select(1, t).copy_(idx.squeeze(1));
    const at::Tensor schur = res.gather(1, idx);  // [P, 1]
    // Fix (peers.md §2.6.3): a pivot whose Schur complement is at or below the floor is
    // dropped (g = 0, row 0, weight 0) instead of taking rsqrt of round-off.
    const at::Tensor keep = schur.gt(floor);
    const at::Tensor inv_sqrt =
        at::where(keep, schur.clamp_min(floor).rsqrt(), at::zeros_like(schur));
    // g = [K⁻¹a; −1]/√s with a = the stored rows at the pivot; K⁻¹ ← [[K⁻¹, 0], [0, 0]] + g gᵀ.
    at::Tensor g = at::empty({p, t + 1}, ks.options());
    if (t > 0) {
      const at::Tensor a = rows.narrow(1, 0, t).gather(2, idx.view({p, 1, 1}).expand({p, t, 1}));
      g.narrow(1, 0, t).copy_(at::bmm(inv.narrow(1, 0, t).narrow(2, 0, t), a).squeeze(2));
    }
    g.select(1, t).fill_(-1);
    g.mul_(inv_sqrt);
    inv.narrow(1, 0, t + 1).narrow(2, 0, t + 1).add_(g.unsqueeze(2) * g.unsqueeze(1));
    const at::Tensor kp = ks.gather(1, idx.view({p, 1, 1}).expand({p, 1, dim}));  // [P, 1, D]
    at::Tensor row = at::bmm(kp, ks_t)
                         .squeeze(1)
                         .sub_(half.gather(1, idx))
                         .sub_(half)
                         .exp_()
                         .clamp_max_(1.0)
                         .mul_(keep);
    rows.select(1, t).copy_(row);
    if (t + 1 < r) {
      // y = Σ g_i G_i is the new Cholesky column up to sign: res ← max(res − y², 0), res_p = 0.
      const at::Tensor y = at::bmm(g.unsqueeze(1), rows.narrow(1, 0, t + 1)).squeeze(1);
      res.sub_(y.square()).scatter_(1, idx, 0.0).clamp_min_(0.0);
    }
  }
  Pivoted out;
  out.pivots = pivots;
  out.kept = rows.abs().amax(2).gt(0);
  out.weights = at::bmm(inv, rows);
  return out;
}

Pivoted rp_cholesky_accelerated(const at::Tensor& ks, const at::Tensor& sqd, int64_t r,
                                double floor, const std::vector<at::Generator>& generators,
                                int64_t block) {
  const int64_t p = ks.size(0), n = ks.size(1);
  TORCH_CHECK(static_cast<int64_t>(generators.size()) == p, "rp_cholesky_accelerated: ", p,
              " bins need as many generators, got ", generators.size());
  TORCH_CHECK(r >= 1 && block >= 1, "rp_cholesky_accelerated: r and block must be >= 1");
  const at::TensorOptions opts = ks.options();
  const at::Tensor half = sqd * 0.5;
  // The sampling weights' e^{‖k̃‖²}, relative to each bin's largest, in float64: with the
  // residual they span more decades than float32 holds.
  const at::Tensor base = (sqd - sqd.amax(1, /*keepdim=*/true)).to(at::kDouble).exp_();
  // F, the Cholesky factor (K ≈ F Fᵀ), one column per accepted pivot in acceptance order; the
  // padded columns of a round (zeros) are written to the spare column r, never read.
  at::Tensor f = at::zeros({p, n, r + 1}, opts);
  at::Tensor res = at::ones({p, n}, opts);
  std::vector<std::vector<int64_t>> chosen(p);
  std::vector<char> done(p, 0);
  std::vector<int> stalls(p, 0);
  int64_t used = 0;  // the most columns of F any bin holds
  while (true) {
    const at::Tensor res_max = res.amax(1).to(at::kCPU, at::kDouble).contiguous();
    const double* rm = res_max.data_ptr<double>();
    bool drawing = false;
    for (int64_t g = 0; g < p; ++g) {
      if (static_cast<int64_t>(chosen[g].size()) >= r || !(rm[g] > floor) ||
          stalls[g] >= kMaxStalls) {
        done[g] = 1;
      }
      drawing = drawing || !done[g];
    }
    if (!drawing) break;
    // Proposals by inverse CDF (right-continuous: a zero-weight key is never drawn) and their
    // acceptance uniforms, from each bin's own generator.
    // (res.to(kDouble) is res itself in float64: multiply out of place.)
    const at::Tensor cdf = (res.to(at::kDouble) * base).cumsum(1);  // [P, n]
    std::vector<at::Tensor> draws;
    draws.reserve(p);
    for (int64_t g = 0; g < p; ++g) {
      draws.push_back(done[g] ? at::zeros({2, block}, at::kDouble)
                              : at::rand({2, block}, generators[g], at::TensorOptions(at::kDouble)));
    }
    const at::Tensor u = at::stack(draws);  // [P, 2, block], CPU
    const at::Tensor targets =
        u.select(1, 0).to(cdf.device()).contiguous().mul_(cdf.narrow(1, n - 1, 1));
    const at::Tensor idx = at::searchsorted(cdf, targets, /*out_int32=*/false, /*right=*/true)
                               .clamp_max_(n - 1);  // [P, block]
    // The proposals' residual block H = K_ss − F_s F_sᵀ.
    const at::Tensor h_prop = half.gather(1, idx);
    const at::Tensor k_prop = gather_rows(ks, idx);
    at::Tensor hblock = gaussian(k_prop, h_prop, k_prop, h_prop);  // [P, block, block]
    // F's filled columns, contiguous for the row gathers of this round.
    const at::Tensor f_used = used > 0 ? f.narrow(2, 0, used).contiguous() : at::Tensor();
    if (used > 0) {
      const at::Tensor f_prop = gather_rows(f_used, idx);
      hblock.sub_(at::bmm(f_prop, f_prop.transpose(1, 2)));
    }
    const at::Tensor h_cpu = hblock.to(at::kCPU, at::kDouble).contiguous();
    const at::Tensor d_cpu = res.gather(1, idx).to(at::kCPU, at::kDouble).contiguous();
    const at::Tensor a_cpu = u.select(1, 1).contiguous();
    const at::Tensor idx_cpu = idx.to(at::kCPU).contiguous();
    // The walk: accept j with probability H_jj / res_j, then take its Schur complement out of
    // the later proposals' block (a pivoted Cholesky step restricted to the block, whose
    // columns at the accepted rows are the round's factor L_T).
    std::vector<std::vector<int64_t>> accepted(p);
    std::vector<std::vector<double>> lower(p);  // L_T, a×a row-major
    int64_t widest = 0;
    for (int64_t g = 0; g < p; ++g) {
      if (done[g]) continue;
      const int64_t need = r - static_cast<int64_t>(chosen[g].size());
      const double* hp = h_cpu.data_ptr<double>() + g * block * block;
      std::vector<double> h(hp, hp + block * block);
      const double* d = d_cpu.data_ptr<double>() + g * block;
      const double* ua = a_cpu.data_ptr<double>() + g * block;
      std::vector<std::vector<double>> cols;
      for (int64_t j = 0; j < block && static_cast<int64_t>(cols.size()) < need; ++j) {
        const double hjj = h[j * block + j];
        if (!(hjj > floor) || !(ua[j] * d[j] < hjj)) continue;
        const double root = std::sqrt(hjj);
        std::vector<double> col(block, 0.0);
        col[j] = root;
        for (int64_t i = j + 1; i < block; ++i) col[i] = h[i * block + j] / root;
        for (int64_t i = j + 1; i < block; ++i) {
          for (int64_t l = j + 1; l < block; ++l) h[i * block + l] -= col[i] * col[l];
        }
        cols.push_back(std::move(col));
        accepted[g].push_back(j);
      }
      const int64_t a = static_cast<int64_t>(accepted[g].size());
      stalls[g] = a == 0 ? stalls[g] + 1 : 0;
      lower[g].assign(a * a, 0.0);
      for (int64_t k = 0; k < a; ++k) {
        for (int64_t c = 0; c <= k; ++c) lower[g][k * a + c] = cols[c][accepted[g][k]];
      }
      widest = std::max(widest, a);
    }
    if (widest == 0) continue;
    // The round's pivots per bin, padded to `widest` (padding: index 0, weight 0, L_T = I,
    // written to the spare column r).
    at::Tensor sel = at::zeros({p, widest}, at::kLong);
    at::Tensor valid = at::zeros({p, widest}, at::kDouble);
    at::Tensor column = at::full({p, widest}, r, at::kLong);
    at::Tensor lt = at::eye(widest, at::kDouble).repeat({p, 1, 1});
    auto sel_a = sel.accessor<int64_t, 2>();
    auto valid_a = valid.accessor<double, 2>();
    auto column_a = column.accessor<int64_t, 2>();
    auto lt_a = lt.accessor<double, 3>();
    const auto idx_a = idx_cpu.accessor<int64_t, 2>();
    std::vector<int64_t> flat;
    for (int64_t g = 0; g < p; ++g) {
      const int64_t a = static_cast<int64_t>(accepted[g].size());
      for (int64_t k = 0; k < a; ++k) {
        const int64_t key = idx_a[g][accepted[g][k]];
        sel_a[g][k] = key;
        valid_a[g][k] = 1.0;
        column_a[g][k] = static_cast<int64_t>(chosen[g].size());
        for (int64_t c = 0; c <= k; ++c) lt_a[g][k][c] = lower[g][k * a + c];
        chosen[g].push_back(key);
        flat.push_back(g * n + key);
      }
    }
    sel = sel.to(ks.device());
    // The accepted pivots' kernel columns less what F explains: G = K_:,T − F F_Tᵀ [P, n, a].
    at::Tensor g_cols = gaussian(ks, half, gather_rows(ks, sel), half.gather(1, sel));
    if (used > 0) {
      g_cols.sub_(at::bmm(f_used, gather_rows(f_used, sel).transpose(1, 2)));
    }
    g_cols.mul_(valid.to(opts).unsqueeze(1));
    // The new columns G L_T⁻ᵀ (L_T L_Tᵀ = G_T,T, the pivots' residual block).
    const at::Tensor f_new = at::linalg_solve_triangular(lt.to(opts).transpose(1, 2), g_cols,
                                                         /*upper=*/true, /*left=*/false);
    f.scatter_(2, column.to(ks.device()).unsqueeze(1).expand({p, n, widest}), f_new);
    res.sub_(f_new.square().sum(2)).clamp_min_(0.0);
    res.view(-1).index_fill_(0, at::tensor(flat, at::kLong).to(ks.device()), 0.0);
    for (int64_t g = 0; g < p; ++g) used = std::max(used, static_cast<int64_t>(chosen[g].size()));
  }
  at::Tensor pivots = at::zeros({p, r}, at::kLong);
  at::Tensor kept = at::zeros({p, r}, at::kBool);
  auto pivots_a = pivots.accessor<int64_t, 2>();
  auto kept_a = kept.accessor<bool, 2>();
  for (int64_t g = 0; g < p; ++g) {
    const int64_t t = static_cast<int64_t>(chosen[g].size());
    for (int64_t k = 0; k < r; ++k) {
      pivots_a[g][k] = k < t ? chosen[g][k] : (t > 0 ? chosen[g][0] : 0);
      kept_a[g][k] = k < t;
    }
  }
  Pivoted out;
  out.pivots = pivots.to(ks.device());
  out.kept = kept.to(ks.device());
  // L = F_S,: (lower triangular in acceptance order; identity rows for dropped slots), and the
  // Nyström weights W = K_SS⁻¹ K_S,: = L⁻ᵀ L⁻¹ K_S,: = L⁻ᵀ Fᵀ (F = K_:,S L⁻ᵀ).
  const at::Tensor kept_f = out.kept.to(opts.dtype());
  const at::Tensor f_r = f.narrow(2, 0, r).contiguous();
  const at::Tensor l = gather_rows(f_r, out.pivots)
                           .mul_(kept_f.unsqueeze(2))
                           .add_(at::diag_embed(1.0 - kept_f));
  out.weights = at::linalg_solve_triangular(l.transpose(1, 2), f_r.transpose(1, 2),
                                            /*upper=*/true, /*left=*/true)
                    .mul_(kept_f.unsqueeze(2));
  return out;
}

}  // namespace kdeserve::attention::wildcat
