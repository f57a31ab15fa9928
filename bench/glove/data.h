#pragma once
/// Inputs and error metrics of the GloVe harness (bench/glove_experiment.cpp).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace kdeserve::bench {

/// Where the (Q, V) pairs come from.
enum class Regime {
  kFile,        ///< Rows of a float32 file (GloVe by default): Q = K = rows / 10^{1/4}.
  kDiffuse,     ///< Synthetic clustered Q = K, mean self-logit 3.6 (kdeformer.md §3.1).
  kPeaked,      ///< ... mean self-logit 8.1.
  kVeryPeaked,  ///< ... mean self-logit 14.4.
};

/// "glove" / "diffuse" / "peaked" / "very_peaked" (exits with a message on anything else).
Regime regime_from_string(const std::string& name);
std::string to_string(Regime regime);

/// A float32 row file [rows, dim]: queries come from the first 2/3 of the rows, values from the
/// rest (GloVe 49152 × 100: values from row 32768, as in the paper's layout).
struct RowFile {
  at::Tensor rows;  ///< [rows, dim] float32.
  int64_t value_offset = 0;
  /// Largest n the file supports: min(value_offset, rows − value_offset).
  int64_t max_n() const;
};

/// Reads `path` as float32 rows of `dim` values; exits with a message when it cannot.
RowFile load_rows(const std::string& path, int64_t dim);

/// One (Q, V) pair: Q = K [n, d] and V [n, dv], float64.
struct Pair {
  at::Tensor q, v;
};

/// Pair p of `pairs` at size n. kFile: pairs spread over the query and value rows, Q divided by
/// 10^{1/4} whatever the row length (demo_glove.py's scaling: logits x·y/√10). Synthetic: d = 100,
/// 32 Gaussian cluster centres, each row a centre plus 0.7 · N(0, I) noise, rescaled so the mean
/// self-logit ‖q‖² is the regime's; V = N(0, I) + a common offset N(0, 0.25 I), dv = 100; seeded by
/// (regime, n, p).
Pair make_pair(Regime regime, const RowFile* file, int64_t n, int64_t p, int64_t pairs);

/// The errors of an estimate against exact attention A [n, dv].
struct Errors {
  double rel = 0;  ///< ‖Â − A‖₂ / ‖A‖₂ (the paper's metric).
  double centered = 0;  ///< ‖(Â − A) − 1·mean_rows(Â − A)‖₂ / ‖A − 1·mean_rows(A)‖₂.
};

/// The exact output's norms, computed once per pair.
struct Reference {
  at::Tensor exact;
  double norm = 0, centered_norm = 0;
};

Reference make_reference(const at::Tensor& exact);
Errors errors_of(const at::Tensor& estimate, const Reference& ref);

}  // namespace kdeserve::bench
