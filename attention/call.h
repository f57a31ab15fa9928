#pragma once
/// Per-call context of attention(): explicit randomness and the report the call fills in.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "attention/options.h"

namespace kdeserve::attention {

/// Randomness injected by tests and parity checks instead of drawing it from the seeds.
struct InjectedRandomness {
  /// LSH hyperplanes: [D, r] (shared by every batch entry and head) or [B, H, D, r].
  std::optional<at::Tensor> projections;
  /// Residual samples as original key indices: [m] or [B, H, m], int64.
  std::optional<at::Tensor> sample_indices;
  /// Start vector of the power method: [Dv + 1] or [B, H, Dv + 1].
  std::optional<at::Tensor> power_init;
  /// Random-feature directions (Performer, ScatterBrain): [m, D] or [B, H, m, D].
  std::optional<at::Tensor> features;
  /// Reformer's random rotations: [n_hashes, D, n_buckets / 2] or [B, H, n_hashes, D, ...].
  std::optional<at::Tensor> rotations;
  /// Uniform draws in (0, 1) of sequential samplers (WildCat's pivots, Thinformer's walk); the
  /// method's header gives the shape.
  std::optional<at::Tensor> uniforms;
  /// Fair coins (Thinformer's symmetrisation); the method's header gives the shape.
  std::optional<at::Tensor> coins;
};

/// What a call did; the server logs and counts it (the library never logs).
struct AttentionReport {
  Method requested = Method::kExact;
  Method ran = Method::kExact;
  /// The implementation that computed the result: "aten-cpu" / "aten-cuda" (ATen composition:
  /// chunked exact, KDEformer) or "sdpa-<kernel>-<device>" (e.g. "sdpa-flash-cpu").
  std::string backend;
  /// true when `ran` differs from `requested` or the computation dtype was widened.
  bool fell_back = false;
  /// Why it fell back (empty otherwise).
  std::string reason;
  int64_t batch = 0, heads = 0, num_queries = 0, num_keys = 0, head_dim = 0, value_dim = 0;
  /// Block methods (KDEformer, HyperAttention, Reformer, ScatterBrain's LSH support): diagonal
  /// blocks per (entry, head), largest block; sampled keys per (entry, head).
  int64_t num_blocks = 0, block_keys = 0, sample_size = 0;
  /// Random features (Performer, ScatterBrain), hash rounds (Reformer), coreset keys per
  /// (entry, head) (WildCat, Thinformer).
  int64_t num_features = 0, num_hashes = 0, coreset_size = 0;
  /// KDEformer's exact calibration rows per (entry, head) (KdeformerOptions::calibration_rows).
  int64_t calibration_rows = 0;
  /// Query rows the coreset's values were fitted on (KdeformerOptions::coreset_fit_rows).
  int64_t coreset_fit_rows = 0;
  /// Wall-clock seconds of the call (host time; on CUDA it includes no device synchronisation).
  double seconds = 0;
};

/// The call context. Every random draw of a call comes from generators seeded by
/// (seed, entry seed, head), so an entry's output never depends on the rest of its batch.
struct AttentionCall {
  /// Base seed of the call (e.g. a per-layer salt chosen by the model).
  uint64_t seed = 0;
  /// Optional per-batch-entry seeds (size B), e.g. per request; empty means 0 for all entries.
  std::vector<uint64_t> entry_seeds;
  InjectedRandomness injected;
  /// Filled in when non-null.
  AttentionReport* report = nullptr;
};

}  // namespace kdeserve::attention
