// The body of the fused KDEformer kernel (fused_kernel.h), compiled once per instruction set:
// fused_kernel_<isa>.cpp defines KDESERVE_KERNEL_ISA (and KDESERVE_KERNEL_LANES, 8 by default)
// and includes this file, so the same source becomes a baseline, an AVX2 + FMA and an AVX-512
// variant, picked at run time. Vectors are GCC/Clang vector extensions of 8 or 16 floats: one
// AVX2 or AVX-512 register, or two SSE registers on the baseline.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "attention/kdeformer/fused_kernel.h"

#ifndef KDESERVE_KERNEL_ISA
#error "define KDESERVE_KERNEL_ISA (the namespace of this variant) before including this file"
#endif

namespace kdeserve::attention::kdeformer::kernel::KDESERVE_KERNEL_ISA {
namespace {

#ifndef KDESERVE_KERNEL_LANES
#define KDESERVE_KERNEL_LANES 8
#endif
constexpr int64_t kLanes = KDESERVE_KERNEL_LANES;
static_assert(kPanelAlign % kLanes == 0, "panels are padded to whole vectors");
typedef float Vec __attribute__((vector_size(4 * KDESERVE_KERNEL_LANES)));
typedef float VecU __attribute__((vector_size(4 * KDESERVE_KERNEL_LANES), aligned(4), may_alias));
typedef int32_t IVec __attribute__((vector_size(4 * KDESERVE_KERNEL_LANES)));
typedef int32_t IVecU
    __attribute__((vector_size(4 * KDESERVE_KERNEL_LANES), aligned(4), may_alias));
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline Vec load(const float* p) { return *reinterpret_cast<const VecU*>(p); }
inline void store(float* p, Vec x) { *reinterpret_cast<VecU*>(p) = x; }
// x − 0 is x for every x, so the compiler drops the subtraction (x + 0 it must keep: −0 + 0 = 0).
inline Vec splat(float x) { return x - Vec{}; }
inline float hsum(Vec x) {
  float s = 0;
  for (int64_t l = 0; l < kLanes; ++l) s += x[l];
  return s;
}
inline float hmax(Vec x) {
  float s = x[0];
  for (int64_t l = 1; l < kLanes; ++l) s = std::max(s, x[l]);
  return s;
}

// e^x lanewise (Cephes expf: Cody–Waite reduction by ln 2 and a degree-6 polynomial, about one
// ulp), 0 below −87.3 (e^{−∞} = 0 for the dropped samples), x ≤ 88 assumed (callers pass
// logits minus their row maximum).
inline Vec exp_vec(Vec x) {
  const Vec lo = splat(-87.33654f);
  const IVec dead = x < lo;
  x = dead ? lo : x;
  x = x > splat(88.0f) ? splat(88.0f) : x;
  const Vec magic = splat(12582912.0f);  // 1.5 · 2^23: adding it rounds to an integer
  const Vec t = x * splat(1.44269504088896341f) + magic;
  const IVec n = (IVec)t - (IVec)magic;
  const Vec nf = t - magic;
  Vec r = x - nf * splat(0.693359375f);
  r = r - nf * splat(-2.12194440e-4f);
  Vec p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  const Vec y = (p * (r * r) + r + splat(1.0f)) * (Vec)((n + 127) << 23);
  return dead ? Vec{} : y;
}

// Lanes of the vector starting at column `col` that lie before `limit`.
inline IVec valid_lanes(int64_t col, int64_t limit) {
  static constexpr int32_t kIota[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  const IVec iota = *reinterpret_cast<const IVecU*>(kIota);
  return iota < static_cast<int32_t>(limit - col);
}

// c[r, 0:ncols] (+)= Σ_p a[r, p] b[p, 0:ncols] for r < R: R rows of A (stride lda) against a
// packed panel B (stride ldb); ncols a multiple of kLanes. Two vectors per row stay in registers
// across the whole reduction (R = 6: 12 accumulators, as a 6 × 16 BLAS micro-kernel).
template <int R>
void gemm_rows(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t kdim,
               int64_t ncols, float* c, int64_t ldc, bool accumulate) {
  int64_t j = 0;
  for (; j + 2 * kLanes <= ncols; j += 2 * kLanes) {
    Vec c0[R], c1[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      c0[r] = accumulate ? load(c + r * ldc + j) : Vec{};
      c1[r] = accumulate ? load(c + r * ldc + j + kLanes) : Vec{};
    }
    const float* bp = b + j;
    for (int64_t p = 0; p < kdim; ++p, bp += ldb) {
      const Vec b0 = load(bp), b1 = load(bp + kLanes);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const Vec x = splat(a[r * lda + p]);
        c0[r] += x * b0;
        c1[r] += x * b1;
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      store(c + r * ldc + j, c0[r]);
      store(c + r * ldc + j + kLanes, c1[r]);
    }
  }
  if (j < ncols) {
    Vec c0[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) c0[r] = accumulate ? load(c + r * ldc + j) : Vec{};
    const float* bp = b + j;
    for (int64_t p = 0; p < kdim; ++p, bp += ldb) {
      const Vec b0 = load(bp);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) c0[r] += splat(a[r * lda + p]) * b0;
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) store(c + r * ldc + j, c0[r]);
  }
}

void gemm(int64_t rows, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t kdim,
          int64_t ncols, float* c, int64_t ldc, bool accumulate) {
  static_assert(kTileRows == 6, "gemm dispatches 1 to 6 rows");
  switch (rows) {
    case 1: return gemm_rows<1>(a, lda, b, ldb, kdim, ncols, c, ldc, accumulate);
    case 2: return gemm_rows<2>(a, lda, b, ldb, kdim, ncols, c, ldc, accumulate);
    case 3: return gemm_rows<3>(a, lda, b, ldb, kdim, ncols, c, ldc, accumulate);
    case 4: return gemm_rows<4>(a, lda, b, ldb, kdim, ncols, c, ldc, accumulate);
    case 5: return gemm_rows<5>(a, lda, b, ldb, kdim, ncols, c, ldc, accumulate);
    default: return gemm_rows<6>(a, lda, b, ldb, kdim, ncols, c, ldc, accumulate);
  }
}

// Sums of one query's weights over n columns of a score row.
struct RowSums {
  float sum = 0;    // Σ (e − f)  (f = 0 without the control variate)
  float raw = 0;    // Σ e
  float peak = 0;   // max e
  float dotw = 0;   // Σ (e − f) w, when weights are given
};

// x[t] ← e^{x_t − c} − f_t for t < n (f_t = α (1 + x_t − s̄) where x_t is finite, 0 where it is
// −∞; no f without the control variate). `w` (padded to whole vectors) weights the sum dotw. Columns past n are computed (finite padding) but never summed.
RowSums weigh_row(float* x, int64_t n, float c, bool cv, float alpha, float mean,
                  const float* w) {
  Vec sum{}, raw{}, peak{}, dotw{};
  const Vec vc = splat(c), va = splat(alpha), vone_minus_mean = splat(1.0f - mean);
  for (int64_t t = 0; t < n; t += kLanes) {
    const Vec s = load(x + t);
    const IVec valid = valid_lanes(t, n);
    Vec e = exp_vec(s - vc);
    e = valid ? e : Vec{};
    Vec p = e;
    if (cv) {
      const IVec finite = s > splat(kNegInf);
      const Vec f = va * (s + vone_minus_mean);
      p = (valid & finite) ? e - f : Vec{};
      raw += e;
      peak = e > peak ? e : peak;
    }
    sum += p;
    if (w != nullptr) dotw += p * load(w + t);
    store(x + t, p);
  }
  RowSums out;
  out.sum = hsum(sum);
  out.raw = cv ? hsum(raw) : out.sum;
  out.peak = hmax(peak);
  out.dotw = hsum(dotw);
  return out;
}

float row_max(const float* x, int64_t n) {
  Vec m = splat(kNegInf);
  int64_t t = 0;
  for (; t + kLanes <= n; t += kLanes) {
    const Vec s = load(x + t);
    m = s > m ? s : m;
  }
  float best = hmax(m);
  for (; t < n; ++t) best = std::max(best, x[t]);
  return best;
}

// Asks for the cache lines of a row of n floats.
inline void prefetch_row(const float* row, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(row + i);
}

struct Workspace {
  std::vector<float> keys_t, values, a, scores, acc, weights, moments;
  std::vector<int64_t> dropped;
};

void run_task(const Problem& pb, int64_t g, int64_t j, Workspace& ws) {
  const int64_t dim = pb.dim, dv = pb.dv, m = pb.samples, nq = pb.nq, nk = pb.nk;
  const int64_t kb = pb.k_start[j], kw = pb.k_start[j + 1] - kb;
  const int64_t kwp = panel_width(kw), mp = m > 0 ? panel_width(m) : 0, dvp = panel_width(dv);
  const int64_t width = kwp + mp;
  const bool cv = pb.ff_moments != nullptr;
  const int64_t ldm = cv ? panel_width(dim + dv + 1) : 0;

  // The block's keys transposed [D, kwp] and its values [kw, dvp], zero-padded.
  ws.keys_t.resize(dim * kwp);
  ws.values.resize(kw * dvp);
  for (int64_t d = 0; d < dim; ++d) {
    std::fill(ws.keys_t.begin() + d * kwp + kw, ws.keys_t.begin() + (d + 1) * kwp, 0.0f);
  }
  for (int64_t t = 0; t < kw; ++t) {
    std::fill(ws.values.begin() + t * dvp + dv, ws.values.begin() + (t + 1) * dvp, 0.0f);
  }
  const int64_t* k_order = pb.k_order + g * nk + kb;
  // The hash sort scatters a block's rows over the inputs: each row is asked for kAhead rows
  // before it is read, so the gathers overlap instead of waiting on memory one at a time.
  constexpr int64_t kAhead = 8;
  for (int64_t t = 0; t < std::min(kAhead, kw); ++t) {
    prefetch_row(pb.k + (g * nk + k_order[t]) * dim, dim);
    prefetch_row(pb.v + (g * nk + k_order[t]) * dv, dv);
  }
  for (int64_t t = 0; t < kw; ++t) {
    if (t + kAhead < kw) {
      prefetch_row(pb.k + (g * nk + k_order[t + kAhead]) * dim, dim);
      prefetch_row(pb.v + (g * nk + k_order[t + kAhead]) * dv, dv);
    }
    const float* krow = pb.k + (g * nk + k_order[t]) * dim;
    for (int64_t d = 0; d < dim; ++d) ws.keys_t[d * kwp + t] = krow[d];
    const float* vrow = pb.v + (g * nk + k_order[t]) * dv;
    for (int64_t e = 0; e < dv; ++e) ws.values[t * dvp + e] = vrow[e];
  }
  // The samples that fall in this block are exact in A_spar: dropped by index (Alg. 3 step 2).
  ws.dropped.clear();
  const float* sample_keys = nullptr;
  const float* sample_values = nullptr;
  if (m > 0) {
    const int64_t* sb = pb.sample_block + g * m;
    for (int64_t s = 0; s < m; ++s) {
      if (sb[s] == j) ws.dropped.push_back(s);
    }
    ws.weights.assign(mp, 0.0f);
    std::copy(pb.sample_weight + g * m, pb.sample_weight + (g + 1) * m, ws.weights.begin());
    sample_keys = pb.sample_keys + g * dim * mp;
    sample_values = pb.sample_values + g * m * dvp;
  }
  ws.a.resize(kTileRows * dim);
  ws.scores.resize(kTileRows * width);
  ws.acc.resize(kTileRows * dvp);
  if (cv) ws.moments.resize(kTileRows * ldm);

  const int64_t qb = pb.q_start[j], qe = pb.q_start[j + 1];
  const int64_t* q_order = pb.q_order + g * nq;
  float* a = ws.a.data();
  float* scores = ws.scores.data();
  float* acc = ws.acc.data();
  for (int64_t t = qb; t < std::min(qe, qb + kTileRows); ++t) {
    prefetch_row(pb.q + (g * nq + q_order[t]) * dim, dim);
  }
  for (int64_t t0 = qb; t0 < qe; t0 += kTileRows) {
    const int64_t rows = std::min(kTileRows, qe - t0);
    // The next tile's queries, while this one computes.
    for (int64_t t = t0 + kTileRows; t < std::min(qe, t0 + 2 * kTileRows); ++t) {
      prefetch_row(pb.q + (g * nq + q_order[t]) * dim, dim);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float* qrow = pb.q + (g * nq + q_order[t0 + r]) * dim;
      for (int64_t d = 0; d < dim; ++d) a[r * dim + d] = qrow[d] * pb.scale;
    }
    gemm(rows, a, dim, ws.keys_t.data(), kwp, dim, kwp, scores, width, false);
    if (m > 0) gemm(rows, a, dim, sample_keys, mp, dim, mp, scores + kwp, width, false);

    // The far field's per-query moments: q_iᵀ [Cov(K) | Σ_j (k_j − k̄) v_jᵀ | k̄] (far_field.h).
    float* moments = cv ? ws.moments.data() : nullptr;
    if (cv) gemm(rows, a, dim, pb.ff_moments + g * dim * ldm, ldm, dim, ldm, moments, ldm, false);

    float den[kTileRows], floor_den[kTileRows], alpha[kTileRows];
    for (int64_t r = 0; r < rows; ++r) {
      float* s_blk = scores + r * width;
      float* s_res = s_blk + kwp;
      for (int64_t s : ws.dropped) s_res[s] = kNegInf;
      // One shift per query for both parts: e^{s − c} never overflows and cancels in num/den.
      float c = row_max(s_blk, kw);
      if (m > 0) c = std::max(c, row_max(s_res, m));
      float mean = 0;
      alpha[r] = 0;
      if (cv) {
        // α_i = e^{s̄_i + σ²_i/2 − c_i} capped at 1, as the ATen path (kdeformer.cpp).
        const float* mr = moments + r * ldm;
        float variance = 0;
        for (int64_t d = 0; d < dim; ++d) variance += mr[d] * a[r * dim + d];
        mean = mr[dim + dv];
        const float exponent = mean + std::max(variance, 0.0f) * 0.5f;
        alpha[r] = std::exp(std::min(exponent - c, 0.0f));
      }
      const RowSums blk = weigh_row(s_blk, kw, c, cv, alpha[r], mean, nullptr);
      den[r] = blk.sum;
      floor_den[r] = blk.raw;
      if (m > 0) {
        const RowSums res = weigh_row(s_res, m, c, cv, alpha[r], mean, ws.weights.data());
        den[r] += res.dotw;
        floor_den[r] += res.peak;
      }
    }
    // Numerators: the block's exact part and the weighted samples, one accumulator tile.
    gemm(rows, scores, width, ws.values.data(), dvp, kw, dvp, acc, dvp, false);
    if (m > 0) gemm(rows, scores + kwp, width, sample_values, dvp, m, dvp, acc, dvp, true);

    for (int64_t r = 0; r < rows; ++r) {
      const int64_t query = q_order[t0 + r];
      float* out = pb.out + (g * nq + query) * dv;
      const float* num = acc + r * dvp;
      float d = den[r];
      if (cv) {
        // Far field over every key (the block's own f terms were folded into the block part);
        // the denominator raised to its lower bound Σ_blk e + max_s e.
        d = std::max(d + alpha[r] * static_cast<float>(nk), floor_den[r]);
        // Σ_j (1 + s_ij − s̄_i) v_j = Σ_j v_j + q_iᵀ Σ_j (k_j − k̄) v_jᵀ.
        const float* cross = moments + r * ldm + dim;
        const float* vsum = pb.ff_value_sum + g * dv;
        for (int64_t e = 0; e < dv; ++e) out[e] = (num[e] + alpha[r] * (cross[e] + vsum[e])) / d;
      } else {
        for (int64_t e = 0; e < dv; ++e) out[e] = num[e] / d;
      }
      if (pb.value_min != nullptr) {
        const float* lo = pb.value_min + g * dv;
        const float* hi = pb.value_max + g * dv;
        for (int64_t e = 0; e < dv; ++e) out[e] = std::min(std::max(out[e], lo[e]), hi[e]);
      }
    }
  }
}

}  // namespace

void pack_samples(const Problem& pb, int64_t begin, int64_t end) {
  const int64_t dim = pb.dim, dv = pb.dv, m = pb.samples, nk = pb.nk;
  const int64_t mp = panel_width(m), dvp = panel_width(dv);
  for (int64_t g = begin; g < end; ++g) {
    float* keys_t = pb.sample_keys + g * dim * mp;
    float* values = pb.sample_values + g * m * dvp;
    std::fill(keys_t, keys_t + dim * mp, 0.0f);
    std::fill(values, values + m * dvp, 0.0f);
    for (int64_t s = 0; s < m; ++s) {
      const int64_t key = pb.sample_index[g * m + s];
      const float w = pb.sample_weight[g * m + s];
      const float* krow = pb.k + (g * nk + key) * dim;
      for (int64_t d = 0; d < dim; ++d) keys_t[d * mp + s] = krow[d];
      const float* vrow = pb.v + (g * nk + key) * dv;
      for (int64_t e = 0; e < dv; ++e) values[s * dvp + e] = vrow[e] * w;
    }
  }
}

void run_tasks(const Problem& pb, int64_t begin, int64_t end) {
  Workspace ws;
  for (int64_t task = begin; task < end; ++task) {
    run_task(pb, task / pb.blocks, task % pb.blocks, ws);
  }
}

}  // namespace kdeserve::attention::kdeformer::kernel::KDESERVE_KERNEL_ISA
