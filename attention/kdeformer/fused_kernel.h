#pragma once
/// The fused CPU kernel of KDEformer (Alg. 3) over raw pointers: no LibTorch in here, as
/// flash-attention's csrc keeps its kernels apart from the torch-facing file (fused.h is that
/// file). The ATen composition (kdeformer.h) is its oracle: same hash ranks, same samples, same
/// arithmetic up to float32 rounding.
///
/// Work is cut in tasks, one per (entry·head, diagonal block): a task packs its block's keys
/// and values into a cache-sized panel and walks the block's queries in tiles of kTileRows: the
/// scores against the block's keys and against the m samples in one register-blocked product,
/// one max-shift per query, exp, and the value and normaliser products, the samples of the
/// query's own block dropped by index (Alg. 3 step 2: they are exact in A_spar).
///
/// Shapes: G = groups (batch · heads), Nq / Nk queries / keys, D head dim, Dv value dim,
/// m samples per group, nb diagonal blocks per group.

#include <cstdint>
#include <vector>

#include "attention/kdeformer/kernel_inputs.h"

namespace kdeserve::attention::kdeformer::kernel {

/// Query rows per register tile.
constexpr int64_t kTileRows = 6;

/// One call's inputs and output (kernel_inputs.h) and the CPU kernel's own arrays; every array is
/// contiguous, row-major, owned by the caller.
struct Problem : KernelInputs {
  /// Block j holds sorted positions [start[j], start[j + 1]). [nb + 1] each
  const int64_t* q_start = nullptr;
  const int64_t* k_start = nullptr;
  /// The diagonal block of each sampled key (samples > 0). [G, m]
  const int64_t* sample_block = nullptr;
  /// Packed sample panels (pack_samples fills them): [G, D, m_pad] keys transposed and
  /// [G, m, dv_pad] weighted values w_s v_s (panel_width() gives the padded sizes).
  float* sample_keys = nullptr;
  float* sample_values = nullptr;
  /// Control variate (both null otherwise): the far field's moment matrix [Cov(K) | Σ_j (k_j −
  /// k̄) v_jᵀ | k̄] per group, padded to ldm = panel_width(D + Dv + 1) columns, and Σ_j v_j
  /// (far_field.h; kdeformer.h has the estimator). [G, D, ldm], [G, Dv]
  const float* ff_moments = nullptr;
  const float* ff_value_sum = nullptr;
};

/// Panels are padded to whole vectors of the widest variant (16 floats: AVX-512).
constexpr int64_t kPanelAlign = 16;

/// n rounded up to a multiple of kPanelAlign.
constexpr int64_t panel_width(int64_t n) { return (n + kPanelAlign - 1) / kPanelAlign * kPanelAlign; }

/// Alg. 3 step 1's bucket rank of n rows x [n, D]: bit i = [x·proj_i > 0] for the hyperplanes
/// proj [D, r] (row-major), code Σ bit_i 2^i, rank table[code]. Summed in index order, so the
/// ATen path (lsh.h bucket_ranks on the CPU) and the fused kernel hash every row alike. T is
/// float or double.
template <typename T>
void hash_ranks(const T* x, int64_t n, int64_t dim, const T* proj, int64_t r,
                const int64_t* table, int64_t* ranks);

/// Stable counting sort of ranks in [0, buckets): order[p] = the item at sorted position p,
/// ties in item order (what a stable argsort gives). ranks [n] → order [n].
void counting_sort(const int64_t* ranks, int64_t n, int64_t buckets, int64_t* order);

/// The instruction set the kernel was compiled for and runs with.
enum class Isa { kBaseline, kAvx2, kAvx512 };

/// The best variant this CPU runs (on x86-64: AVX-512 F + VL, else AVX2 + FMA, when present).
Isa best_isa();

/// Every variant this CPU runs, baseline first.
std::vector<Isa> supported_isas();

/// "avx512" / "avx2" / "baseline".
const char* isa_name(Isa isa);

/// Fills problem.sample_keys / sample_values of groups [begin, end).
void pack_samples(const Problem& problem, int64_t begin, int64_t end, Isa isa);

/// Computes the output rows of tasks [begin, end), task = group · nb + block.
void run_tasks(const Problem& problem, int64_t begin, int64_t end, Isa isa);

}  // namespace kdeserve::attention::kdeformer::kernel
