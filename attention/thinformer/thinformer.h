#pragma once
/// Thinformer (Carrell, Gong, Shetty, Dwivedi, Mackey; ICML 2025): softmax attention of every
/// query over an unweighted coreset of key/value pairs chosen by KH-Compress(g). Port of
/// microsoft/thinformer f5b1f260 (thinformer/thinformer.py; peers.md §4), with labelled changes:
///  - the pair kernel exp(β⟨k,k'⟩ − shift)·(⟨v,v'⟩ + b²), shift = max_i β‖k_i‖² and
///    b² = (max |v| entry)² per (entry, head), as upstream;
///  - FIX: √diag of the walk's difference kernel is taken of max(diag, 0): upstream's round-off
///    on near-duplicate pairs gives NaN, which silently stops the walk from swapping;
///  - CHANGE (default, ThinformerCoins): one symmetrisation coin per (entry, head) and round,
///    where upstream draws one per round for the whole batch; kSharedUpstream reproduces it;
///  - ADDED: strided_prethinning(false), a variant that drops no key (below);
///  - every draw comes from the call's per-(entry, head) streams or from injection.
///
/// The length n0 that KH-Compress works on is a power of 4:
///  - strided (as shipped): n0 = largest power of 4 ≤ Nk, keys 0, s, …, (n0 − 1)·s, s = ⌊Nk/n0⌋;
///  - padded: n0 = smallest power of 4 ≥ Nk; slots Nk … n0 − 1 are zero-feature points (their
///    pair-kernel rows are 0). They stay at the end of every bucket sequence (each halving keeps
///    its order), so all-pad buckets are skipped and at most one pair per round mixes a key with
///    a pad. The walk targets the sum of the features, to which the pads add nothing, and with
///    the symmetrisation every point of a pair is kept with probability ½: each key is in the
///    coreset with probability 2^−R, so 2^R·(coreset sums) are unbiased for the full attention
///    numerator and denominator, whose ratio (self-normalised) the output is. The coreset holds
///    between ⌊Nk/2^R⌋ (≥ 1) and ⌈Nk/2^R⌉ real keys, in 2^g·√n0 slots; pad slots are
///    masked out of the attention.
/// With R = log₄n0 − g halving rounds (none when n0 < 4^{g+1}), round t splits the current
/// sequence into contiguous buckets of 4^{g+1}·2^t points and halves each bucket with the
/// self-balancing walk over consecutive pairs (2j, 2j+1); the coreset has n0 / 2^R points.
///
/// Injected randomness (AttentionCall::injected), with P = n0 − n0/2^R (pairs over all rounds):
///  - uniforms: [P] (shared by every entry and head) or [B, H, P], values in [0, 1]. Round t's
///    pairs start at offset n0 − n0/2^t; inside a round, pair (bucket a, j) is at a·(bucket/2) + j
///    (j = 0, where the walk always keeps the first point, is read but unused, as upstream);
///    u becomes U = −L + 2L·u with L = 0.5 + log(2 / (δ_h · bucket)), δ_h = δ/(4^{g+1}·R·n0).
///  - coins: [R] (shared, as upstream) or [B, H, R]; nonzero takes the complement in that round.
/// Otherwise uniforms come from stream_generator(call, entry, head, Stream::kUniforms) (one
/// rand(P) in float64 per (entry, head)) and coins from Stream::kCoins (one randint(0, 2, R)).

#include <ATen/core/Tensor.h>

#include <string>

#include "attention/call.h"
#include "attention/options.h"

namespace kdeserve::attention::thinformer {

/// Why Thinformer would compute exact attention on these sizes (empty: it runs): no halving
/// round and no key dropped, so the coreset is every key. Throws on invalid options.
std::string exact_reason(const ThinformerOptions& options, int64_t num_queries, int64_t num_keys);

/// q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv] → [B, H, Nq, Dv]; float32 or float64;
/// inputs are assumed validated (attention() does it). Fills report.coreset_size (the largest
/// number of real keys in the coreset of any (entry, head)). Extra memory O(Nq · 2^g·√n0) and
/// O(n0 · 4^{g+1}) per (entry, head) for the kernel blocks; never Nq × Nk.
at::Tensor thinformer_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                double scale, const ThinformerOptions& options,
                                const AttentionCall& call = {});

/// The sizes of one KH-Compress run.
struct ThinformerPlan {
  int64_t length = 0;  ///< n0, a power of 4.
  int64_t stride = 1;  ///< of the strided pre-thinning (1 when padded).
  int64_t rounds = 0;  ///< R.
  int64_t slots = 0;   ///< n0 / 2^R.
  int64_t pairs = 0;   ///< P = n0 − n0 / 2^R: uniforms per (entry, head).
};

/// The plan for Nk keys; throws on invalid options.
ThinformerPlan thinformer_plan(const ThinformerOptions& options, int64_t num_keys);

/// The coreset of every (entry, head): [B, H, slots] int64 original key indices in kept order,
/// −1 for pad slots. The inputs as for thinformer_attention (q is not needed).
at::Tensor thinformer_coreset(const at::Tensor& k, const at::Tensor& v, double scale,
                              const ThinformerOptions& options, const AttentionCall& call = {});

/// One halving's self-balancing walk, batched over independent buckets. diff [N, h, h] holds
/// D_jl = ⟨ψ_j, ψ_l⟩ with ψ_j = φ(x_2j) − φ(x_2j+1); signs [N, h] the scaled uniforms U_j in
/// [−L, L]. The threshold of pair j is U_j·r_j·max_{l≤j} r_l with r_j = √max(D_jj, 0). Pair 0
/// keeps x_0 and starts the signed sum at ψ_0; for j ≥ 1, with α = ⟨sum, ψ_j⟩, keep x_2j+1 and
/// subtract ψ_j if threshold ≤ α, else keep x_2j and add ψ_j. Returns [N, h] bool, true where
/// x_2j+1 is kept.
at::Tensor halving_swaps(const at::Tensor& diff, const at::Tensor& signs);

/// The same walk from ATen ops, vectorised over the buckets and sequential over the pairs: what
/// halving_swaps runs on devices other than the CPU (where its loop is plain C++); any device.
at::Tensor halving_swaps_vectorised(const at::Tensor& diff, const at::Tensor& signs);

}  // namespace kdeserve::attention::thinformer
