#pragma once
/// Thinformer's options (part of AttentionOptions).

#include <torch/arg.h>

#include <cstdint>

#include "attention/method.h"

namespace kdeserve::attention {

/// How the symmetrisation coins of the halving rounds are drawn.
enum class ThinformerCoins {
  /// One coin per round for each (entry, head), from its own stream: an entry's coreset never
  /// depends on the rest of the batch (our batch-independence rule).
  kPerEntryHead,
  /// One coin per round shared by every bucket, entry and head, as upstream draws it (from the
  /// stream of entry 0, head 0): outputs of different entries are coupled through the coin.
  kSharedUpstream,
};

/// Options of Thinformer (Carrell et al. 2025, KH-Compress(g); peers.md §4).
struct ThinformerOptions {
  /// g ≥ 0: the coreset holds min(n, 2^g · √n) keys (n = the power-of-4 length after
  /// pre-thinning; n < 4^{g+1} needs no halving round).
  TORCH_ARG(int64_t, g) = 2;
  /// true, as shipped (peers.md §4.2 step 1): n' = largest power of 4 ≤ Nk, keep keys 0, s, …,
  /// (n' − 1)·s with s = ⌊Nk / n'⌋, which deterministically drops Nk − n' keys (2 of every 3 at
  /// Nk = 3136). false: no key is dropped; the keys are padded to n'' = smallest power of 4 ≥ Nk
  /// with zero-feature points (thinformer.h), which the attention then ignores.
  TORCH_ARG(bool, strided_prethinning) = true;
  /// δ in (0, 1]: the kernel-halving failure parameter (upstream 0.5).
  TORCH_ARG(double, delta) = 0.5;
  /// Take the complement of each halving with probability ½ (upstream: always).
  TORCH_ARG(bool, symmetrize) = true;
  TORCH_ARG(ThinformerCoins, coins) = ThinformerCoins::kPerEntryHead;
};

}  // namespace kdeserve::attention
