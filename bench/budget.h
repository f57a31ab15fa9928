#pragma once
/// The attention variants the benchmarks compare, and the one mapping from a budget m (per-query
/// keys or features, peers.md §8) or a paper protocol to each variant's options.

#include <cstdint>
#include <string>
#include <vector>

#include "attention/options.h"

namespace kdeserve::bench {

/// One configured attention call of a benchmark.
struct Budgeted {
  std::string variant;  ///< A name of variant_names(), e.g. "kdeformer", "performer_ref".
  attention::AttentionOptions options;
  /// Per-query keys or features the options really give (peers.md §8), which can differ from
  /// the requested m where a method only takes some budgets (Thinformer: 2^g·√n').
  int64_t m = 0;
  /// The real knobs, e.g. "b=32 s=32", "bucket=16 hashes=1", "g=1 n'=4096".
  std::string knobs;
};

/// Every variant name, in table order. The first ones are the default set of the GloVe harness
/// (default_variants()); the rest are labelled modes (reference-faithful or other choices).
const std::vector<std::string>& variant_names();
/// exact, kdeformer, kdeformer_ff, kdeformer_cv, kdeformer_mc, block_only, uniform, performer, reformer, scatterbrain, hyperattention,
/// wildcat, thinformer.
std::vector<std::string> default_variants();
/// One line per variant: what it runs (for --help).
std::string describe_variants();
/// Parses "a,b,c" ("all" = every variant, "default" = default_variants()); exits with a message
/// naming the accepted values on an unknown name.
std::vector<std::string> parse_variants(const std::string& list);

/// Knobs of the budget mapping that are choices rather than part of m.
struct BudgetChoices {
  int64_t reformer_hashes = 1;  ///< Reformer: bucket = m / (2 · hashes).
  int64_t wildcat_bins = 1;     ///< WildCat: C (no locality on GloVe or the synthetic data).
};

/// `variant` at per-query budget m for nq queries and nk keys (peers.md §8):
/// exact: exact attention (m = nk); kdeformer / kdeformer_ref / kdeformer_cv / kdeformer_mc /
/// hyperattention(_ref): b = s = m/2; block_only and kdeformer_ff: b = m, no samples; uniform: m keys; performer(_ref): m features;
/// scatterbrain(_lsh): w = f = m/2 (f even); reformer(_ref): 2 · bucket · hashes = m; wildcat:
/// r = m; thinformer(_pad): the g ≥ 0 whose 2^g·√n' is closest to m. HyperAttention's
/// min_seq_len is 0 here so it approximates at every n.
Budgeted at_budget(const std::string& variant, int64_t m, int64_t nq, int64_t nk,
                   const BudgetChoices& choices = {});

/// The model shapes of attention_bench.
enum class Protocol {
  kT2tLayer1,  ///< 3136², scale 1/√147.
  kT2tLayer2,  ///< 784², scale 1/24.
  kBigGan,     ///< 4096 × 1024, Dv 256, scale 1.
  kGeneric,    ///< n², d 64, scale 1/8: every options struct's defaults.
};

/// `variant` with the settings the papers and their reproductions use on `protocol`
/// (kdeformer.md §1.7, §3.2–3.3; peers.md §2.4, §4.5, §5.5, §6, §7.4), m per §8. "exact_chunked"
/// and "exact_sdpa" pin the exact backend. HyperAttention was never run on T2T (its
/// min_seq_len 4096 would make it exact there): it gets KDEformer's b = 32 and s = 98 / 24 with
/// min_seq_len 0; elsewhere its reference defaults b = s = 256.
Budgeted paper_settings(const std::string& variant, Protocol protocol, int64_t nq, int64_t nk);

}  // namespace kdeserve::bench
