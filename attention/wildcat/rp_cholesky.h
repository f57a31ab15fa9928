#pragma once
/// Randomly pivoted Cholesky of the Gaussian kernel K_ij = exp(−‖k̃_i − k̃_j‖²/2) of scaled keys,
/// with pivots drawn ∝ the residual diagonal of the exponential kernel (res_j·e^{‖k̃_j‖²}), as
/// WildCat's coreset uses it (attention/wildcat/wildcat.h, compress_bins).

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <vector>

namespace kdeserve::attention::wildcat {

/// Pivots and Nyström weights of one batch of P bins.
struct Pivoted {
  at::Tensor pivots;   ///< [P, r] int64 key indices; dropped slots repeat a valid index
  at::Tensor kept;     ///< [P, r] bool: the slot holds a pivot (its weight row is not zero)
  at::Tensor weights;  ///< [P, r, n] W = K_SS⁻¹ K_S,: of the kept pivots, zero rows elsewhere
};

/// WildCat's sequential RPCholesky (rp_nystrom.py): one Gumbel-max pivot per step, gumbel
/// [P, r, n]; a pivot whose Schur complement is at or below `floor` is dropped (slot kept).
/// ks [P, n, D] scaled keys, sqd [P, n] = ‖k̃‖². O(r²·n) in r matrix-vector passes.
Pivoted rp_cholesky_sequential(const at::Tensor& ks, const at::Tensor& sqd,
                               const at::Tensor& gumbel, int64_t r, double floor);

/// Accelerated RPCholesky (Epperly, Tropp & Webber 2024, "Embrace rejection", Alg. 2): each
/// round draws `block` proposals i.i.d. ∝ the current residual diagonal res_j·e^{‖k̃_j‖²},
/// forms their b×b residual block H, and walks it in order: proposal j is accepted with
/// probability H_jj / res_j, H_jj being its Schur complement after the proposals accepted before
/// it in the round (so a duplicate of an accepted one has H_jj = 0 and is rejected), and
/// proposals at or below `floor` are rejected. The accepted pivots have exactly the
/// distribution of sequential RPCholesky's; their kernel columns and Cholesky factor update are
/// one GEMM and one triangular solve per round. Stops at r pivots or when every residual is at
/// or below `floor` (the remaining slots are dropped). generators: one per bin, the only
/// randomness (each round draws 2·block uniforms from it). O(r²·n) in ~r/block GEMMs.
Pivoted rp_cholesky_accelerated(const at::Tensor& ks, const at::Tensor& sqd, int64_t r,
                                double floor, const std::vector<at::Generator>& generators,
                                int64_t block);

}  // namespace kdeserve::attention::wildcat
