#include "attention/thinformer/thinformer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "attention/common/blocks.h"
#include "attention/random.h"

namespace kdeserve::attention::thinformer {
namespace {

using common::gather_rows;

// 4^30 · 4 still fits int64, and no sequence comes near 4^30 keys.
constexpr int64_t kMaxG = 30;
// Bound on the elements of one batch of kernel blocks or of attention scores.
constexpr int64_t kMaxChunkElements = int64_t{1} << 24;

void check_options(const ThinformerOptions& opt) {
  TORCH_CHECK(opt.g() >= 0 && opt.g() <= kMaxG, "thinformer: g must be in [0, ", kMaxG, "], got ",
              opt.g());
  TORCH_CHECK(opt.delta() > 0 && opt.delta() <= 1, "thinformer: delta must be in (0, 1], got ",
              opt.delta());
}

// log₄ of the largest power of 4 ≤ n (n ≥ 1).
int64_t floor_log4(int64_t n) {
  int64_t l = 0;
  while (n >= 4) {
    n /= 4;
    ++l;
  }
  return l;
}

template <typename T>
void walk_cpu(const at::Tensor& diff, const at::Tensor& thresholds, at::Tensor& swaps) {
  const int64_t n = diff.size(0), h = diff.size(1);
  const T* d = diff.const_data_ptr<T>();
  const T* thr = thresholds.const_data_ptr<T>();
  bool* out = swaps.data_ptr<bool>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> sum(h);
    for (int64_t b = begin; b < end; ++b) {
      const T* db = d + b * h * h;
      const T* tb = thr + b * h;
      bool* ob = out + b * h;
      std::copy(db, db + h, sum.begin());
      ob[0] = false;
      for (int64_t j = 1; j < h; ++j) {
        const bool swap = tb[j] <= sum[j];
        ob[j] = swap;
        const T* row = db + j * h;
        // Only ⟨sum, ψ_l⟩ for later pairs is read again.
        if (swap) {
          for (int64_t l = j + 1; l < h; ++l) sum[l] -= row[l];
        } else {
          for (int64_t l = j + 1; l < h; ++l) sum[l] += row[l];
        }
      }
    }
  });
}

// Uniforms [G, P] and coins [G, R] (bool) of the call, injected or drawn per (entry, head).
struct Draws {
  at::Tensor uniforms, coins;
};

Draws draws(const ThinformerOptions& opt, const ThinformerPlan& plan, int64_t batch, int64_t heads,
            const at::TensorOptions& options, const AttentionCall& call) {
  const int64_t groups = batch * heads;
  Draws d;
  if (const auto& u = call.injected.uniforms) {
    TORCH_CHECK((u->dim() == 1 && u->size(0) == plan.pairs) ||
                    (u->dim() == 3 && u->size(0) == batch && u->size(1) == heads &&
                     u->size(2) == plan.pairs),
                "thinformer: injected uniforms must be [", plan.pairs, "] or [", batch, ", ", heads,
                ", ", plan.pairs, "], got ", u->sizes());
    TORCH_CHECK(u->is_floating_point(), "thinformer: injected uniforms must be floating");
    if (u->numel() > 0) {
      TORCH_CHECK(u->min().item<double>() >= 0 && u->max().item<double>() <= 1,
                  "thinformer: injected uniforms must lie in [0, 1]");
    }
    d.uniforms = u->to(options).reshape({-1, plan.pairs}).expand({groups, plan.pairs});
  } else {
    std::vector<at::Tensor> rows;
    rows.reserve(groups);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        at::Generator gen = stream_generator(call, b, h, Stream::kUniforms);
        rows.push_back(at::rand({plan.pairs}, gen, at::TensorOptions(at::kDouble)));
      }
    }
    d.uniforms = at::stack(rows).to(options);
  }
  const at::TensorOptions bools = options.dtype(at::kBool);
  if (const auto& c = call.injected.coins) {
    TORCH_CHECK(opt.symmetrize(), "thinformer: coins injected but symmetrize is false");
    TORCH_CHECK((c->dim() == 1 && c->size(0) == plan.rounds) ||
                    (c->dim() == 3 && c->size(0) == batch && c->size(1) == heads &&
                     c->size(2) == plan.rounds),
                "thinformer: injected coins must be [", plan.rounds, "] or [", batch, ", ", heads,
                ", ", plan.rounds, "], got ", c->sizes());
    d.coins = (*c != 0).to(bools).reshape({-1, plan.rounds}).expand({groups, plan.rounds});
  } else if (!opt.symmetrize()) {
    d.coins = at::zeros({groups, plan.rounds}, bools);
  } else if (opt.coins() == ThinformerCoins::kSharedUpstream) {
    at::Generator gen = stream_generator(call, 0, 0, Stream::kCoins);
    d.coins = at::randint(0, 2, {plan.rounds}, gen, at::TensorOptions(at::kLong))
                  .to(bools)
                  .unsqueeze(0)
                  .expand({groups, plan.rounds});
  } else {
    std::vector<at::Tensor> rows;
    rows.reserve(groups);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        at::Generator gen = stream_generator(call, b, h, Stream::kCoins);
        rows.push_back(at::randint(0, 2, {plan.rounds}, gen, at::TensorOptions(at::kLong)));
      }
    }
    d.coins = at::stack(rows).to(bools);
  }
  return d;
}

// KH-Compress of a chunk of groups. kw [Gc, n0, D] keys scaled by √β (pads zero), vw
// [Gc, n0, Dv] (pads zero), uniforms [Gc, P], coins [Gc, R]; real_length = Nk when padded (slots
// ≥ it are pads), n0 otherwise. Returns the kept working positions [Gc, slots].
at::Tensor compress(at::Tensor kw, at::Tensor vw, const at::Tensor& uniforms,
                    const at::Tensor& coins, const ThinformerOptions& opt,
                    const ThinformerPlan& plan, int64_t real_length) {
  const int64_t gc = kw.size(0), dim = kw.size(2), dv = vw.size(2), n0 = plan.length;
  const bool padded = real_length < n0;
  at::Tensor idx = at::arange(n0, kw.options().dtype(at::kLong)).unsqueeze(0).repeat({gc, 1});
  // Upstream's kernel parameters, once, on the pre-thinned points.
  at::Tensor shift = kw.square().sum(2).amax(1);      // [Gc]
  at::Tensor b_sqd = vw.abs().amax({1, 2}).square();  // [Gc]
  const int64_t base = int64_t{1} << (2 * (opt.g() + 1));
  const double halve_prob = opt.delta() / static_cast<double>(base) /
                            static_cast<double>(plan.rounds) / static_cast<double>(n0);
  int64_t offset = 0;
  for (int64_t t = 0; t < plan.rounds; ++t) {
    const int64_t s = base << t, h = s / 2, nt = n0 >> t, buckets = nt / s;
    int64_t active = buckets;
    at::Tensor real;  // [Gc, nt] 1 for keys, 0 for pads
    if (padded) {
      // Pads trail every sequence, so buckets past the longest real prefix hold only pads.
      const int64_t longest = (idx < real_length).sum(1).max().item<int64_t>();
      active = std::min(buckets, (longest + s - 1) / s);
      real = (idx < real_length).to(kw.scalar_type());
    }
    const int64_t len = active * s, nb = gc * active;
    at::Tensor kb = kw.narrow(1, 0, len).reshape({nb, s, dim});
    at::Tensor vb = vw.narrow(1, 0, len).reshape({nb, s, dv});
    at::Tensor key_term =
        at::bmm(kb, kb.transpose(1, 2)).sub_(shift.repeat_interleave(active).view({nb, 1, 1}));
    key_term.exp_();
    at::Tensor kernel = at::bmm(vb, vb.transpose(1, 2))
                            .add_(b_sqd.repeat_interleave(active).view({nb, 1, 1}))
                            .mul_(key_term);
    if (padded) {
      at::Tensor r = real.narrow(1, 0, len).reshape({nb, s});
      kernel.mul_(r.unsqueeze(2)).mul_(r.unsqueeze(1));
    }
    at::Tensor kdiff = kernel.slice(2, 0, s, 2) - kernel.slice(2, 1, s, 2);
    at::Tensor diff = (kdiff.slice(1, 0, s, 2) - kdiff.slice(1, 1, s, 2)).contiguous();
    // Upstream's arithmetic: delta = halve_prob·S², L = 0.5 + log(2S / delta), U = lo + (hi−lo)·u.
    const double call_delta = halve_prob * static_cast<double>(s) * static_cast<double>(s);
    const double log_multiplier = 0.5 + std::log(2.0 * static_cast<double>(s) / call_delta);
    at::Tensor signs = uniforms.narrow(1, offset, nt / 2)
                           .reshape({gc, buckets, h})
                           .narrow(1, 0, active)
                           .reshape({nb, h})
                           .mul(2.0 * log_multiplier)
                           .add_(-log_multiplier);
    at::Tensor swaps = halving_swaps(diff, signs).view({gc, active, h});
    swaps = at::logical_xor(swaps, coins.select(1, t).view({gc, 1, 1}));
    at::Tensor kept = swaps.to(at::kLong)
                          .add_(at::arange(0, s, 2, idx.options()).view({1, 1, h}))
                          .add_(at::arange(active, idx.options()).mul_(s).view({1, active, 1}))
                          .view({gc, active * h});
    if (active < buckets) {
      // Any positions past the active buckets are pads; keep the first ones.
      kept = at::cat({kept, at::arange(len, len + nt / 2 - active * h, idx.options())
                                .unsqueeze(0)
                                .expand({gc, nt / 2 - active * h})},
                     1);
    }
    idx = idx.gather(1, kept);
    kw = gather_rows(kw, kept);
    vw = gather_rows(vw, kept);
    offset += nt / 2;
  }
  return idx;
}

// The pre-thinned, scaled keys and values [G, n0, ·] and the coreset positions [G, slots] as
// original key indices (−1: pad).
struct Coreset {
  at::Tensor keys, values, indices;
};

Coreset coreset(const at::Tensor& k, const at::Tensor& v, double scale,
                const ThinformerOptions& opt, const AttentionCall& call) {
  check_options(opt);
  const int64_t batch = k.size(0), heads = k.size(1), nk = k.size(2), dim = k.size(3);
  const int64_t dv = v.size(3), groups = batch * heads;
  const ThinformerPlan plan = thinformer_plan(opt, nk);
  const double root_scale = std::sqrt(scale);
  at::Tensor k3 = k.reshape({groups, nk, dim});
  at::Tensor v3 = v.reshape({groups, nk, dv});
  Coreset c;
  if (opt.strided_prethinning()) {
    c.keys = k3.slice(1, 0, plan.length * plan.stride, plan.stride).mul(root_scale);
    c.values = v3.slice(1, 0, plan.length * plan.stride, plan.stride);
  } else {
    c.keys = at::constant_pad_nd(k3.mul(root_scale), {0, 0, 0, plan.length - nk});
    c.values = at::constant_pad_nd(v3, {0, 0, 0, plan.length - nk});
  }
  const int64_t real_length = opt.strided_prethinning() ? plan.length : nk;
  at::Tensor positions;
  if (plan.rounds == 0) {
    positions = at::arange(plan.length, k.options().dtype(at::kLong))
                    .unsqueeze(0)
                    .expand({groups, plan.length});
  } else {
    const Draws d = draws(opt, plan, batch, heads, k.options(), call);
    const int64_t per_group = plan.length * (int64_t{1} << (2 * (opt.g() + 1)));
    const int64_t chunk = std::max<int64_t>(1, kMaxChunkElements / per_group);
    std::vector<at::Tensor> parts;
    for (int64_t g0 = 0; g0 < groups; g0 += chunk) {
      const int64_t gn = std::min(chunk, groups - g0);
      parts.push_back(compress(c.keys.narrow(0, g0, gn), c.values.narrow(0, g0, gn),
                               d.uniforms.narrow(0, g0, gn), d.coins.narrow(0, g0, gn), opt, plan,
                               real_length));
    }
    positions = parts.size() == 1 ? parts[0] : at::cat(parts, 0);
  }
  c.keys = gather_rows(c.keys, positions);
  c.values = gather_rows(c.values, positions);
  c.indices = opt.strided_prethinning()
                  ? positions * plan.stride
                  : at::where(positions < nk, positions, at::full_like(positions, -1));
  return c;
}

}  // namespace

ThinformerPlan thinformer_plan(const ThinformerOptions& options, int64_t num_keys) {
  check_options(options);
  TORCH_CHECK(num_keys >= 1, "thinformer: needs at least one key");
  ThinformerPlan plan;
  int64_t log4 = floor_log4(num_keys);
  if (!options.strided_prethinning() && (int64_t{1} << (2 * log4)) < num_keys) ++log4;
  TORCH_CHECK(log4 <= kMaxG, "thinformer: ", num_keys, " keys are too many");
  plan.length = int64_t{1} << (2 * log4);
  plan.stride = options.strided_prethinning() ? num_keys / plan.length : 1;
  plan.rounds = log4 < options.g() + 1 ? 0 : log4 - options.g();
  plan.slots = plan.length >> plan.rounds;
  plan.pairs = plan.length - plan.slots;
  return plan;
}

std::string exact_reason(const ThinformerOptions& options, int64_t, int64_t num_keys) {
  const ThinformerPlan plan = thinformer_plan(options, num_keys);
  if (plan.rounds > 0) return {};
  if (options.strided_prethinning() && plan.length != num_keys) return {};
  return "thinformer: n0 = " + std::to_string(plan.length) +
         " < 4^(g+1) with g = " + std::to_string(options.g()) +
         ": no halving round and no key dropped, so the coreset is every key (exact attention)";
}

namespace {

void check_walk_inputs(const at::Tensor& diff, const at::Tensor& signs) {
  TORCH_CHECK(diff.dim() == 3 && diff.size(1) == diff.size(2) && signs.dim() == 2 &&
                  signs.size(0) == diff.size(0) && signs.size(1) == diff.size(1),
              "halving_swaps: diff must be [N, h, h] and signs [N, h], got ", diff.sizes(), " and ",
              signs.sizes());
  TORCH_CHECK(diff.scalar_type() == signs.scalar_type(), "halving_swaps: dtypes differ");
  TORCH_CHECK(diff.size(1) >= 1, "halving_swaps: needs at least one pair");
}

// U_j · r_j · max_{l≤j} r_l, r = √max(diag, 0). FIX (peers.md §4.4): the clamp, or round-off on
// near-duplicate pairs gives √(negative) = NaN and the walk stops swapping.
at::Tensor walk_thresholds(const at::Tensor& diff, const at::Tensor& signs) {
  at::Tensor root = diff.diagonal(0, 1, 2).clamp_min(0).sqrt();
  return (signs * root * std::get<0>(root.cummax(1))).contiguous();
}

at::Tensor walk_aten(const at::Tensor& diff, const at::Tensor& thresholds) {
  const int64_t h = diff.size(1);
  at::Tensor sum = diff.select(1, 0).clone();
  at::Tensor swaps = at::zeros(thresholds.sizes(), thresholds.options().dtype(at::kBool));
  for (int64_t j = 1; j < h; ++j) {
    at::Tensor swap = thresholds.select(1, j) <= sum.select(1, j);
    swaps.select(1, j).copy_(swap);
    at::Tensor sign = 1.0 - 2.0 * swap.to(diff.scalar_type());
    sum.add_(diff.select(1, j) * sign.unsqueeze(1));
  }
  return swaps;
}

}  // namespace

at::Tensor halving_swaps_vectorised(const at::Tensor& diff, const at::Tensor& signs) {
  check_walk_inputs(diff, signs);
  return walk_aten(diff, walk_thresholds(diff, signs));
}

at::Tensor halving_swaps(const at::Tensor& diff, const at::Tensor& signs) {
  check_walk_inputs(diff, signs);
  at::Tensor thresholds = walk_thresholds(diff, signs);
  if (!diff.is_cpu()) return walk_aten(diff, thresholds);
  at::Tensor d = diff.contiguous();
  at::Tensor swaps = at::empty(signs.sizes(), signs.options().dtype(at::kBool));
  AT_DISPATCH_FLOATING_TYPES(d.scalar_type(), "halving_swaps",
                             [&] { walk_cpu<scalar_t>(d, thresholds, swaps); });
  return swaps;
}

at::Tensor thinformer_coreset(const at::Tensor& k, const at::Tensor& v, double scale,
                              const ThinformerOptions& options, const AttentionCall& call) {
  return coreset(k, v, scale, options, call).indices.view({k.size(0), k.size(1), -1});
}

at::Tensor thinformer_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                double scale, const ThinformerOptions& options,
                                const AttentionCall& call) {
  const int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2), dim = q.size(3);
  const int64_t dv = v.size(3), groups = batch * heads;
  const Coreset c = coreset(k, v, scale, options, call);
  const int64_t slots = c.indices.size(1);
  at::Tensor real = c.indices >= 0;  // [G, slots]
  if (call.report != nullptr) {
    call.report->coreset_size = real.sum(1).max().item<int64_t>();
  }
  if (nq == 0) return at::empty({batch, heads, 0, dv}, v.options());
  // As upstream: the keys carry √β twice, so logits = β·q·k.
  at::Tensor keys_t = c.keys.mul(std::sqrt(scale)).transpose(1, 2).contiguous();  // [G, D, m]
  at::Tensor q3 = q.reshape({groups, nq, dim});
  at::Tensor pad = real.logical_not().unsqueeze(1);  // [G, 1, m]
  const bool any_pad = !options.strided_prethinning() && pad.any().item<bool>();
  const int64_t rows =
      std::max<int64_t>(1, kMaxChunkElements / std::max<int64_t>(1, groups * slots));
  std::vector<at::Tensor> parts;
  for (int64_t r0 = 0; r0 < nq; r0 += rows) {
    // Softmax in place (max-shifted: finite at any logit size; no second score tensor).
    at::Tensor p = at::bmm(q3.narrow(1, r0, std::min(rows, nq - r0)), keys_t);
    if (any_pad) p.masked_fill_(pad, -std::numeric_limits<double>::infinity());
    p.sub_(std::get<0>(p.max(2, true))).exp_();
    p.div_(p.sum(2, true));
    parts.push_back(at::bmm(p, c.values));
  }
  at::Tensor out = parts.size() == 1 ? parts[0] : at::cat(parts, 1);
  return out.view({batch, heads, nq, dv});
}

}  // namespace kdeserve::attention::thinformer
