#include "bench/budget.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <utility>

#include "attention/kdeformer/calibration.h"
#include "attention/kdeformer/coreset_fit.h"

namespace kdeserve::bench {

namespace att = kdeserve::attention;

namespace {

struct VariantInfo {
  std::string name;
  bool in_default;
  std::string what;
};

// kdeformer_wcf's cap on its fit rows: 2048 rows are 2048/Nq of exact attention.
constexpr int64_t kMaxBenchFitRows = 2048;

const std::vector<VariantInfo>& infos() {
  static const std::vector<VariantInfo> v = {
      {"exact", true, "exact attention (auto backend): the time reference"},
      {"kdeformer", true, "KDEformer, Gray order, b = s = m/2"},
      {"kdeformer_ff", true,
       "KDEformer, blocks b = m + the exact Gaussian far field (control variate, m = 0 samples)"},
      {"kdeformer_cv", true,
       "KDEformer, control-variate residual (unbiased), b = s = m/2, output clamped"},
      {"kdeformer_mc", true,
       "KDEformer, far field rescaled to the sampled off-block mass, b = s = m/2, clamped"},
      {"kdeformer_wc", true,
       "KDEformer, blocks b = m/4 + WildCat's coreset of the off-block keys, r = m - b, clamped"},
      {"kdeformer_wcf", true,
       "KDEformer, blocks b = m/8 + the coreset, r = m - b, its values fitted on min(4r, 2048) "
       "exact rows, clamped"},
      {"kdeformer_ff_cal", true,
       "kdeformer_ff calibrated to mean(V) on 32 exact rows per head (calibration_rows)"},
      {"kdeformer_mc_cal", true, "kdeformer_mc calibrated to mean(V) on 32 exact rows per head"},
      {"kdeformer_wc_cal", true, "kdeformer_wc calibrated to mean(V) on 32 exact rows per head"},
      {"kdeformer_wcf_cal", true, "kdeformer_wcf calibrated to mean(V) on 32 exact rows per head"},
      {"block_only", true, "KDEformer's block-diagonal part alone, b = m"},
      {"uniform", true, "m keys sampled uniformly (no LSH)"},
      {"performer", true, "Performer, m orthogonal features, stabilised"},
      {"reformer", true, "Reformer, real keys, 2 * bucket * hashes = m"},
      {"scatterbrain", true, "ScatterBrain, positional band w = m/2 + f = m/2 features"},
      {"hyperattention", true, "HyperAttention, b = s = m/2, padding masked, no min_seq_len"},
      {"wildcat", true, "WildCat, r = m, C bins (default 1)"},
      {"thinformer", true, "Thinformer, 2^g sqrt(n') closest to m, strided pre-thinning"},
      {"exact_chunked", false, "exact attention, chunked backend"},
      {"exact_sdpa", false, "exact attention, SDPA backend"},
      {"kdeformer_ref", false, "KDEformer, the reference bucket order, b = s = m/2"},
      {"kdeformer_wc8", false, "kdeformer_wc with blocks b = m/8, r = m - b"},
      {"kdeformer_wc16", false, "kdeformer_wc with blocks b = m/16, r = m - b"},
      {"kdeformer_wc_fit4", false, "kdeformer_wc with its coreset values fitted on 4r exact rows"},
      {"kdeformer_wc16_fit8", false, "kdeformer_wc16 with its values fitted on 8r exact rows"},
      {"kdeformer_wc8_fit8", false, "kdeformer_wc8 with its values fitted on 8r exact rows"},
      {"kdeformer_wc16_fit16", false, "kdeformer_wc16 with its values fitted on 16r exact rows"},
      {"kdeformer_wcf16", false, "kdeformer_wcf with blocks b = m/16"},
      {"kdeformer_wff", false,
       "kdeformer_wcf fitted to the far field's residual (fitted_far_field): the control "
       "variate's far field plus a coreset correction fitted on min(4r, 2048) exact rows"},
      {"kdeformer_wff16", false, "kdeformer_wff with blocks b = m/16"},
      {"kdeformer_wff_cal", false, "kdeformer_wff calibrated to mean(V) on 32 exact rows per head"},
      {"kdeformer_wff16_cal", false, "kdeformer_wff16 calibrated to mean(V) on 32 exact rows"},
      {"kdeformer_wc_seq", false,
       "kdeformer_wc with WildCat's sequential RPCholesky pivots (kdeformer_wc: accelerated)"},
      {"kdeformer_aten", false, "kdeformer on the ATen composition (the fused kernel's oracle)"},
      {"kdeformer_ff_aten", false, "kdeformer_ff on the ATen composition"},
      {"kdeformer_fused", false,
       "kdeformer on the fused kernel where it applies (kFused: the CUDA kernel on a GPU)"},
      {"kdeformer_ff_fused", false, "kdeformer_ff on the fused kernel where it applies"},
      {"performer_ref", false, "Performer as the KDEformer authors ran it: iid, no stabiliser"},
      {"reformer_ref", false, "Reformer as the root Reformer.py: shared QK, unmasked padding"},
      {"scatterbrain_lsh", false, "ScatterBrain with an LSH-block support"},
      {"hyperattention_ref", false,
       "HyperAttention as the reference runs: unmasked padding, no "
       "block de-duplication"},
      {"thinformer_pad", false, "Thinformer, keys padded to a power of 4 (no pre-thinning)"},
  };
  return v;
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ",") + n;
  return out;
}

int64_t largest_power_of_4_at_most(int64_t n) {
  int64_t p = 1;
  while (p * 4 <= n) p *= 4;
  return p;
}

int64_t smallest_power_of_4_at_least(int64_t n) {
  int64_t p = 1;
  while (p < n) p *= 4;
  return p;
}

// Thinformer's g ≥ 0 with 2^g·√n' closest to m (in ratio), the coreset not above n'.
std::pair<int64_t, int64_t> thinformer_g(int64_t m, int64_t n_prime) {
  const auto root = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n_prime))));
  int64_t best_g = 0;
  double best = 1e300;
  for (int64_t g = 0; (root << g) <= n_prime; ++g) {
    const double gap = std::abs(std::log(static_cast<double>(root << g) / static_cast<double>(m)));
    if (gap < best - 1e-12) {
      best = gap;
      best_g = g;
    }
  }
  return {best_g, root << best_g};
}

// The KDEformer authors' Performer.py: iid features, no stabiliser.
void performer_reference(att::PerformerOptions& p) {
  p.orthogonal(false).stabilizer(att::PerformerStabilizer::kNone);
}

std::string performer_mode(const att::PerformerOptions& p) {
  const auto e = p.stabilizer();
  return std::string("stabilizer=") + (e == att::PerformerStabilizer::kNone        ? "none"
                                       : e == att::PerformerStabilizer::kRowGlobal ? "row_global"
                                                                                   : "joint");
}

// The root Reformer.py: shared QK, unmasked zero padding, look-back across rounds.
void reformer_reference(att::ReformerOptions& r) {
  r.shared_qk(true).mask_padding(false).look_back_across_rounds(true);
}

std::string reformer_mode(const att::ReformerOptions& r) {
  return "shared_qk=" + std::to_string(r.shared_qk()) +
         " mask_padding=" + std::to_string(r.mask_padding()) +
         " look_back_across_rounds=" + std::to_string(r.look_back_across_rounds());
}

// insuhan/hyper-attn in float32/float64: unmasked zero padding, no block de-duplication.
void hyperattention_reference(att::HyperAttentionOptions& h) {
  h.mask_padding(false).deduplicate(false);
}

std::string hyperattention_mode(const att::HyperAttentionOptions& h) {
  return "mask_padding=" + std::to_string(h.mask_padding()) +
         " deduplicate=" + std::to_string(h.deduplicate());
}

Budgeted exact_variant(const std::string& name, int64_t nk) {
  att::AttentionOptions o(att::Method::kExact);
  if (name == "exact_chunked") o.exact().backend(att::ExactBackend::kChunked);
  if (name == "exact_sdpa") o.exact().backend(att::ExactBackend::kSdpa);
  return {name, o, nk, "backend=" + att::to_string(o.exact().backend())};
}

std::string knobs_of(const att::AttentionOptions& o, int64_t nk) {
  std::ostringstream k;
  switch (o.method()) {
    case att::Method::kExact:
      k << "backend=" << att::to_string(o.exact().backend());
      break;
    case att::Method::kKdeformer:
      if (o.kdeformer().heavy()) k << "b=" << o.kdeformer().bucket_size() << ' ';
      k << "s=" << o.kdeformer().sample_size()
        << " order=" << att::to_string(o.kdeformer().bucket_order())
        << " sampling=" << att::to_string(o.kdeformer().sampling());
      if (o.kdeformer().residual() != att::Residual::kSampled) {
        k << " residual=" << att::to_string(o.kdeformer().residual());
      }
      if (o.kdeformer().clamp_output()) k << " clamped";
      if (o.kdeformer().coreset_fit_rows() > 0) k << " fit=" << o.kdeformer().coreset_fit_rows();
      if (o.kdeformer().calibration_rows() > 0) {
        k << " calibrated=" << o.kdeformer().calibration_rows();
      }
      if (o.kdeformer().kernel() != att::KdeformerKernel::kAuto) {
        k << " kernel=" << att::to_string(o.kdeformer().kernel());
      }
      break;
    case att::Method::kPerformer:
      k << "features=" << o.performer().num_features()
        << " orthogonal=" << o.performer().orthogonal() << ' ' << performer_mode(o.performer());
      break;
    case att::Method::kReformer:
      k << "bucket=" << o.reformer().bucket_size() << " hashes=" << o.reformer().num_hashes() << ' '
        << reformer_mode(o.reformer());
      break;
    case att::Method::kScatterBrain:
      k << "w=" << o.scatterbrain().local_window() << " f=" << o.scatterbrain().num_features()
        << " support="
        << (o.scatterbrain().support() == att::SparseSupport::kBand ? "band" : "lsh");
      break;
    case att::Method::kHyperAttention:
      k << "b=" << o.hyperattention().block_size() << " s=" << o.hyperattention().sample_size()
        << " min_seq_len=" << o.hyperattention().min_seq_len() << ' '
        << hyperattention_mode(o.hyperattention());
      break;
    case att::Method::kWildCat:
      k << "r=" << o.wildcat().rank() << " C=" << o.wildcat().num_bins()
        << " clamp=" << o.wildcat().clamp_output();
      break;
    case att::Method::kThinformer: {
      const bool strided = o.thinformer().strided_prethinning();
      const int64_t np =
          strided ? largest_power_of_4_at_most(nk) : smallest_power_of_4_at_least(nk);
      k << "g=" << o.thinformer().g() << " n'=" << np
        << " prethin=" << (strided ? "strided" : "pad");
      break;
    }
  }
  if (o.scale()) k << " scale=" << *o.scale();
  return k.str();
}

}  // namespace

const std::vector<std::string>& variant_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& i : infos()) n.push_back(i.name);
    return n;
  }();
  return names;
}

std::vector<std::string> default_variants() {
  std::vector<std::string> n;
  for (const auto& i : infos()) {
    if (i.in_default) n.push_back(i.name);
  }
  return n;
}

std::string describe_variants() {
  std::ostringstream out;
  for (const auto& i : infos()) {
    out << "  " << i.name << std::string(std::max<size_t>(20 - i.name.size(), 1), ' ') << i.what
        << (i.in_default ? "" : " (not in the default set)") << "\n";
  }
  return out.str();
}

std::vector<std::string> parse_variants(const std::string& list) {
  if (list == "default") return default_variants();
  if (list == "all") return variant_names();
  std::vector<std::string> out;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');) {
    if (item.empty()) continue;
    const auto& names = variant_names();
    if (std::find(names.begin(), names.end(), item) == names.end()) {
      std::cerr << "unknown method '" << item << "'; accepted: default, all, " << join(names)
                << "\n";
      std::exit(2);
    }
    if (std::find(out.begin(), out.end(), item) == out.end()) out.push_back(item);
  }
  return out;
}

Budgeted at_budget(const std::string& v, int64_t m, int64_t nq, int64_t nk,
                   const BudgetChoices& choices) {
  if (v.rfind("exact", 0) == 0) return exact_variant(v, nk);
  att::AttentionOptions o;
  int64_t real_m = m;
  const int64_t half = std::max<int64_t>(m / 2, 1);
  if (v == "kdeformer_aten" || v == "kdeformer_ff_aten") {
    Budgeted b = at_budget(v.substr(0, v.size() - 5), m, nq, nk, choices);
    b.variant = v;
    b.options.kdeformer().kernel(att::KdeformerKernel::kAten);
    b.knobs = knobs_of(b.options, nk);
    return b;
  }
  if (v == "kdeformer_fused" || v == "kdeformer_ff_fused") {
    Budgeted b = at_budget(v.substr(0, v.size() - 6), m, nq, nk, choices);
    b.variant = v;
    b.options.kdeformer().kernel(att::KdeformerKernel::kFused);
    b.knobs = knobs_of(b.options, nk);
    return b;
  }
  if (v.size() > 4 && v.compare(v.size() - 4, 4, "_cal") == 0) {
    Budgeted b = at_budget(v.substr(0, v.size() - 4), m, nq, nk, choices);
    b.variant = v;
    if (b.options.method() == att::Method::kKdeformer) {
      b.options.kdeformer().calibration_rows(att::kdeformer::kDefaultCalibrationRows);
    }
    b.knobs = knobs_of(b.options, nk);
    return b;
  }
  if (const auto at = v.rfind("_fit"); at != std::string::npos) {
    // kdeformer_<coreset variant>_fit<K>: its values fitted on K·r exact rows.
    Budgeted b = at_budget(v.substr(0, at), m, nq, nk, choices);
    b.variant = v;
    b.options.kdeformer().coreset_fit_rows(std::stoll(v.substr(at + 4)) *
                                           b.options.kdeformer().sample_size());
    b.knobs = knobs_of(b.options, nk);
    return b;
  }
  if (v == "kdeformer_wff" || v == "kdeformer_wff16") {
    // The coreset split and fit rows of kdeformer_wcf, the far field as the fit's baseline.
    Budgeted b = at_budget(v == "kdeformer_wff" ? "kdeformer_wcf" : "kdeformer_wcf16", m, nq, nk,
                           choices);
    b.variant = v;
    b.options.kdeformer().residual(att::Residual::kFittedFarField);
    b.knobs = knobs_of(b.options, nk);
    return b;
  }
  if (v == "kdeformer_wcf" || v == "kdeformer_wcf16") {
    Budgeted b = at_budget(v == "kdeformer_wcf" ? "kdeformer_wc8" : "kdeformer_wc16", m, nq, nk,
                           choices);
    b.variant = v;
    b.options.kdeformer().coreset_fit_rows(
        std::min<int64_t>(att::kdeformer::kFitRowsPerCoresetKey * b.options.kdeformer().sample_size(),
                         kMaxBenchFitRows));
    b.knobs = knobs_of(b.options, nk);
    return b;
  }
  if (v == "kdeformer" || v == "kdeformer_ref") {
    o.method(att::Method::kKdeformer);
    o.kdeformer().bucket_size(half).sample_size(m - half);
    if (v == "kdeformer_ref") o.kdeformer().bucket_order(att::BucketOrder::kReference);
  } else if (v == "kdeformer_ff") {
    o.method(att::Method::kKdeformer);
    o.kdeformer().bucket_size(m).sample_size(0).residual(att::Residual::kControlVariate);
    o.kdeformer().clamp_output(true);
  } else if (v == "kdeformer_cv") {
    o.method(att::Method::kKdeformer);
    o.kdeformer().bucket_size(half).sample_size(m - half).residual(att::Residual::kControlVariate);
    o.kdeformer().clamp_output(true);
  } else if (v == "kdeformer_mc") {
    o.method(att::Method::kKdeformer);
    o.kdeformer().bucket_size(half).sample_size(m - half).residual(att::Residual::kMassCalibrated);
    o.kdeformer().clamp_output(true);
  } else if (v == "kdeformer_wc" || v == "kdeformer_wc_seq" || v == "kdeformer_wc8" ||
             v == "kdeformer_wc16") {
    o.method(att::Method::kKdeformer);
    const int64_t share = v == "kdeformer_wc8" ? 8 : v == "kdeformer_wc16" ? 16 : 4;
    const int64_t blocks = std::max<int64_t>(m / share, 1);
    o.kdeformer().bucket_size(blocks).sample_size(std::max<int64_t>(m - blocks, 1));
    o.kdeformer().residual(att::Residual::kCoreset).clamp_output(true);
    if (v == "kdeformer_wc_seq") o.kdeformer().coreset_pivots(att::CoresetPivots::kSequential);
  } else if (v == "block_only") {
    o.method(att::Method::kKdeformer);
    o.kdeformer().bucket_size(m).sample_size(0);
  } else if (v == "uniform") {
    o.method(att::Method::kKdeformer);
    o.kdeformer().heavy(false).sampling(att::Sampling::kUniform).sample_size(m);
  } else if (v == "performer" || v == "performer_ref") {
    o.method(att::Method::kPerformer);
    o.performer().num_features(m);
    if (v == "performer_ref") performer_reference(o.performer());
  } else if (v == "reformer" || v == "reformer_ref") {
    o.method(att::Method::kReformer);
    const int64_t h = std::max<int64_t>(choices.reformer_hashes, 1);
    const int64_t bucket = std::max<int64_t>(m / (2 * h), 1);
    o.reformer().bucket_size(bucket).num_hashes(h);
    if (v == "reformer_ref") reformer_reference(o.reformer());
    real_m = 2 * bucket * h;
  } else if (v == "scatterbrain" || v == "scatterbrain_lsh") {
    o.method(att::Method::kScatterBrain);
    // Its cosh feature map takes an even number of features, ≥ 2.
    const int64_t f = std::max<int64_t>((m - half) / 2 * 2, 2);
    o.scatterbrain().local_window(std::max<int64_t>(m - f, 1)).num_features(f);
    real_m = o.scatterbrain().local_window() + f;
    if (v == "scatterbrain_lsh") o.scatterbrain().support(att::SparseSupport::kLsh);
  } else if (v == "hyperattention" || v == "hyperattention_ref") {
    o.method(att::Method::kHyperAttention);
    o.hyperattention().block_size(half).sample_size(m - half).min_seq_len(0);
    if (v == "hyperattention_ref") hyperattention_reference(o.hyperattention());
  } else if (v == "wildcat") {
    o.method(att::Method::kWildCat);
    o.wildcat().rank(m).num_bins(std::max<int64_t>(choices.wildcat_bins, 1));
  } else if (v == "thinformer" || v == "thinformer_pad") {
    o.method(att::Method::kThinformer);
    const bool strided = v == "thinformer";
    const int64_t np = strided ? largest_power_of_4_at_most(nk) : smallest_power_of_4_at_least(nk);
    const auto [g, coreset] = thinformer_g(m, np);
    o.thinformer().g(g).strided_prethinning(strided);
    real_m = coreset;
  } else {
    std::cerr << "at_budget: unknown variant " << v << "\n";
    std::exit(2);
  }
  return {v, o, real_m, knobs_of(o, nk)};
}

Budgeted paper_settings(const std::string& v, Protocol p, int64_t nq, int64_t nk) {
  Budgeted b = v.rfind("exact", 0) == 0 ? exact_variant(v, nk) : at_budget(v, 64, nq, nk);
  att::AttentionOptions& o = b.options;
  const att::AttentionOptions defaults(o.method());
  // Start from the method's defaults, keeping the variant's mode switches.
  o.kdeformer()
      .bucket_size(defaults.kdeformer().bucket_size())
      .sample_size(defaults.kdeformer().sample_size());
  o.performer().num_features(defaults.performer().num_features());
  o.reformer()
      .bucket_size(defaults.reformer().bucket_size())
      .num_hashes(defaults.reformer().num_hashes());
  o.scatterbrain()
      .local_window(defaults.scatterbrain().local_window())
      .num_features(defaults.scatterbrain().num_features());
  o.hyperattention()
      .block_size(defaults.hyperattention().block_size())
      .sample_size(defaults.hyperattention().sample_size())
      .min_seq_len(defaults.hyperattention().min_seq_len());
  o.wildcat().rank(defaults.wildcat().rank()).num_bins(defaults.wildcat().num_bins());
  o.thinformer().g(defaults.thinformer().g());
  if (v == "block_only" || v == "kdeformer_ff" || v == "kdeformer_ff_aten") {
    o.kdeformer().sample_size(0);
  }
  if (v == "uniform") o.kdeformer().sample_size(defaults.kdeformer().sample_size());
  switch (p) {
    case Protocol::kT2tLayer1:
      o.scale(1.0 / std::sqrt(147.0));
      o.kdeformer().bucket_size(32).sample_size(o.kdeformer().sample_size() == 0 ? 0 : 98);
      o.performer().num_features(49);
      o.reformer().bucket_size(49).num_hashes(2);
      o.scatterbrain().local_window(49).num_features(48);
      o.hyperattention().block_size(32).sample_size(98).min_seq_len(0);
      o.wildcat().rank(224).num_bins(224);
      o.thinformer().g(2);
      break;
    case Protocol::kT2tLayer2:
      o.scale(1.0 / 24.0);
      o.kdeformer().bucket_size(32).sample_size(o.kdeformer().sample_size() == 0 ? 0 : 24);
      o.performer().num_features(12);
      o.reformer().bucket_size(12).num_hashes(2);
      o.scatterbrain().local_window(12).num_features(6);
      o.hyperattention().block_size(32).sample_size(24).min_seq_len(0);
      o.wildcat().rank(196).num_bins(196);
      o.thinformer().g(4);
      break;
    case Protocol::kBigGan:
      o.scale(1.0);
      o.kdeformer().bucket_size(64).sample_size(o.kdeformer().sample_size() == 0 ? 0 : 128);
      o.performer().num_features(128);
      o.reformer().bucket_size(64).num_hashes(8);
      o.scatterbrain().local_window(32).num_features(128);
      o.hyperattention().block_size(256).sample_size(256);
      o.wildcat().rank(96).num_bins(8);
      o.thinformer().g(2);
      break;
    case Protocol::kGeneric:
      break;
  }
  if (v == "uniform") o.kdeformer().heavy(false);
  b.knobs = knobs_of(o, nk);
  switch (o.method()) {
    case att::Method::kExact:
      b.m = nk;
      break;
    case att::Method::kKdeformer:
      b.m = (o.kdeformer().heavy() ? o.kdeformer().bucket_size() : 0) + o.kdeformer().sample_size();
      break;
    case att::Method::kPerformer:
      b.m = o.performer().num_features();
      break;
    case att::Method::kReformer:
      b.m = 2 * o.reformer().bucket_size() * o.reformer().num_hashes();
      break;
    case att::Method::kScatterBrain:
      b.m = o.scatterbrain().local_window() + o.scatterbrain().num_features();
      break;
    case att::Method::kHyperAttention:
      b.m = o.hyperattention().block_size() + o.hyperattention().sample_size();
      break;
    case att::Method::kWildCat:
      b.m = o.wildcat().rank();
      break;
    case att::Method::kThinformer: {
      const bool strided = o.thinformer().strided_prethinning();
      const int64_t np =
          strided ? largest_power_of_4_at_most(nk) : smallest_power_of_4_at_least(nk);
      const auto root = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(np))));
      b.m = std::min(root << o.thinformer().g(), np);
      break;
    }
  }
  return b;
}

}  // namespace kdeserve::bench
