// The body of the fused CUDA KDEformer kernel (fused_cuda_kernel.h): nvcc compiles it in
// fused_cuda_kernel.cu; the CPU tests compile the same source for the host under
// tests/support/simt_host.h, which runs each thread of a block on its own stack, so the kernel
// is checked against the ATen oracle on machines without a GPU too. It therefore uses the CUDA
// built-ins only through what both provide: threadIdx, blockIdx, __syncthreads, __syncwarp,
// __shfl_xor_sync, __shared__ and KDESERVE_DYNAMIC_SHARED (every warp reaches the same sequence
// of them, which the host runner needs). Arithmetic follows the ATen composition
// (kdeformer.cpp) term by term: one shift c per query over the block's keys and the kept
// samples, e = e^{s − c}, the control variate's f = α (s − s̄ + 1), the denominator raised to
// Σ_blk e + max_s e, then the clamp.
#pragma once

#include <math.h>

#include <cstdint>

#include "attention/kdeformer/fused_cuda_kernel.h"

#ifndef KDESERVE_DYNAMIC_SHARED
#define KDESERVE_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif
#ifdef __CUDACC__
#define KDESERVE_UNROLL _Pragma("unroll")
#else
#define KDESERVE_UNROLL
#endif

namespace kdeserve::attention::kdeformer::cuda_kernel::device {

constexpr int kQ = kCudaQueriesPerWarp;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(kFullMask, x, o);
  return x;
}

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, o));
  return x;
}

// Block j of n sorted positions split into nb blocks starts at ⌊j·n/nb⌋ (balanced_starts).
__device__ __forceinline__ int64_t block_start(int64_t j, int64_t n, int64_t nb) {
  return j * n / nb;
}

struct TileColumns {
  int64_t key[kTile];
  float weight[kTile];
  int valid[kTile];
};

// Fills the tile's columns and its keys (and, with values, its weighted values) in shared
// memory. Tiles [0, block_tiles) hold the block's keys in sorted order, the rest the samples;
// a sample whose sorted position lies in [kb, ke) is the block's own and is dropped.
__device__ void load_tile(const Problem& pb, int64_t g, int64_t t, int64_t block_tiles, int64_t kb,
                          int64_t ke, bool with_values, TileColumns& cols, float* keys_t,
                          float* values) {
  const int64_t dim = pb.dim, dv = pb.dv, m = pb.samples;
  if (threadIdx.x < kTile) {
    const int c = threadIdx.x;
    int64_t key = 0;
    float weight = 0;
    bool valid = false;
    if (t < block_tiles) {
      const int64_t p = kb + t * kTile + c;
      valid = p < ke;
      if (valid) key = pb.k_order[g * pb.nk + p];
      weight = 1;
    } else {
      const int64_t s = (t - block_tiles) * kTile + c;
      if (s < m) {
        const int64_t position = pb.sample_position[g * m + s];
        valid = position < kb || position >= ke;
        key = pb.sample_index[g * m + s];
        weight = pb.sample_weight[g * m + s];
      }
    }
    cols.key[c] = key;
    cols.weight[c] = valid ? weight : 0.0f;
    cols.valid[c] = valid ? 1 : 0;
  }
  __syncthreads();
  // 32-bit index arithmetic: a tile holds at most kTile · (D or Dv) elements.
  const int idim = static_cast<int>(dim), idv = static_cast<int>(dv);
  for (int e = threadIdx.x; e < kTile * idim; e += kThreads) {
    const int c = e / idim, d = e - c * idim;
    keys_t[d * kKeyStride + c] = cols.valid[c] ? pb.k[(g * pb.nk + cols.key[c]) * dim + d] : 0.0f;
  }
  if (with_values) {
    // Samples carry w_s v_s (the ATen path's v_res · w_res); block keys w = 1.
    for (int e = threadIdx.x; e < kTile * idv; e += kThreads) {
      const int c = e / idv, x = e - c * idv;
      values[e] = cols.valid[c] ? pb.v[(g * pb.nk + cols.key[c]) * dv + x] * cols.weight[c] : 0.0f;
    }
  }
  __syncthreads();
}

// Logits of the warp's kQ queries (scaled, in my_q [kQ][D]) against the tile's key `lane`.
__device__ __forceinline__ void tile_logits(const float* my_q, const float* keys_t, int64_t dim,
                                            int lane, float (&s)[kQ]) {
  KDESERVE_UNROLL
  for (int i = 0; i < kQ; ++i) s[i] = 0.0f;
  for (int64_t d = 0; d < dim; ++d) {
    const float kd = keys_t[d * kKeyStride + lane];
    KDESERVE_UNROLL
    for (int i = 0; i < kQ; ++i) s[i] = fmaf(my_q[i * dim + d], kd, s[i]);
  }
}

// kCols = lane_columns(Dv): the value columns each lane accumulates. One thread block per task
// = (group · nb + diagonal block) · chunks + chunk (chunks = chunks_per_block).
template <int kCols>
__global__ void __launch_bounds__(kThreads) fused_kernel(const Problem pb, int64_t chunks) {
  KDESERVE_DYNAMIC_SHARED(float, smem);
  __shared__ TileColumns cols;
  const int64_t dim = pb.dim, dv = pb.dv, m = pb.samples, nq = pb.nq, nk = pb.nk;
  const int64_t task = blockIdx.x;
  const int64_t chunk = task % chunks;
  const int64_t j = (task / chunks) % pb.blocks;
  const int64_t g = task / chunks / pb.blocks;
  const int64_t qb = block_start(j, nq, pb.blocks), qe = block_start(j + 1, nq, pb.blocks);
  const int64_t first = qb + chunk * kCudaQueriesPerCta;
  if (first >= qe) return;  // the whole thread block: no query of this chunk
  const int64_t kb = block_start(j, nk, pb.blocks), ke = block_start(j + 1, nk, pb.blocks);
  const int64_t block_tiles = (ke - kb + kTile - 1) / kTile;
  const int64_t tiles = block_tiles + (m + kTile - 1) / kTile;
  const bool cv = pb.query_moments != nullptr;
  const int64_t ldm = dim + dv + 1;

  float* keys_t = smem;                       // [D][kKeyStride]
  float* values = keys_t + dim * kKeyStride;  // [kTile][Dv]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* my_q = values + kTile * dv + warp * kQ * dim;  // [kQ][D] this warp's scaled queries
  // [kQ][kTile] this warp's weights of the current tile, read back by every lane.
  float* my_p = values + kTile * dv + kCudaWarps * kQ * dim + warp * kQ * kTile;

  int64_t query[kQ];
  bool live[kQ];
  KDESERVE_UNROLL
  for (int i = 0; i < kQ; ++i) {
    const int64_t p = first + warp * kQ + i;
    live[i] = p < qe;
    query[i] = live[i] ? pb.q_order[g * nq + p] : 0;
    for (int64_t d = lane; d < dim; d += 32) {
      my_q[i * dim + d] = live[i] ? pb.q[(g * nq + query[i]) * dim + d] * pb.scale : 0.0f;
    }
  }
  __syncwarp();

  // Pass 1: the shift c, the largest logit over the block's keys and the kept samples.
  float shift[kQ];
  KDESERVE_UNROLL
  for (int i = 0; i < kQ; ++i) shift[i] = -INFINITY;
  for (int64_t t = 0; t < tiles; ++t) {
    load_tile(pb, g, t, block_tiles, kb, ke, false, cols, keys_t, values);
    if (cols.valid[lane]) {
      float s[kQ];
      tile_logits(my_q, keys_t, dim, lane, s);
      KDESERVE_UNROLL
      for (int i = 0; i < kQ; ++i) shift[i] = fmaxf(shift[i], s[i]);
    }
    __syncthreads();
  }
  KDESERVE_UNROLL
  for (int i = 0; i < kQ; ++i) shift[i] = warp_max(shift[i]);

  // The control variate's α_i = e^{min(s̄_i + σ²_i/2 − c_i, 0)} and s̄_i (kdeformer.cpp).
  float alpha[kQ], mean[kQ];
  KDESERVE_UNROLL
  for (int i = 0; i < kQ; ++i) {
    alpha[i] = 0.0f;
    mean[i] = 0.0f;
    if (cv) {
      const float* qm = pb.query_moments + (g * nq + query[i]) * ldm;
      float variance = 0.0f;
      for (int64_t d = lane; d < dim; d += 32) variance += qm[d] * my_q[i * dim + d];
      variance = fmaxf(warp_sum(variance), 0.0f);
      mean[i] = qm[dim + dv];
      alpha[i] = expf(fminf(mean[i] + variance * 0.5f - shift[i], 0.0f));
    }
  }

  // Pass 2: weights, normalisers and the value products.
  float den[kQ], raw[kQ], peak[kQ], acc[kQ][kCols];
  KDESERVE_UNROLL
  for (int i = 0; i < kQ; ++i) {
    den[i] = raw[i] = peak[i] = 0.0f;
    KDESERVE_UNROLL
    for (int x = 0; x < kCols; ++x) acc[i][x] = 0.0f;
  }
  for (int64_t t = 0; t < tiles; ++t) {
    load_tile(pb, g, t, block_tiles, kb, ke, true, cols, keys_t, values);
    const bool in_block = t < block_tiles;
    const bool valid = cols.valid[lane] != 0;
    const float w = cols.weight[lane];
    float s[kQ];
    tile_logits(my_q, keys_t, dim, lane, s);
    KDESERVE_UNROLL
    for (int i = 0; i < kQ; ++i) {
      const float e = valid ? expf(s[i] - shift[i]) : 0.0f;
      float weight = e;
      if (cv) weight = e - (s[i] - mean[i] + 1.0f) * alpha[i];
      if (!valid) weight = 0.0f;
      if (in_block) {
        den[i] += weight;
        raw[i] += e;
      } else {
        den[i] += weight * w;
        peak[i] = fmaxf(peak[i], e);
      }
      my_p[i * kTile + lane] = weight;
    }
    __syncwarp();
    for (int c = 0; c < kTile; ++c) {
      const float* vrow = values + c * dv;
      KDESERVE_UNROLL
      for (int i = 0; i < kQ; ++i) {
        const float pc = my_p[i * kTile + c];
        KDESERVE_UNROLL
        for (int x = 0; x < kCols; ++x) {
          const int64_t col = lane + 32 * x;
          if (col < dv) acc[i][x] = fmaf(pc, vrow[col], acc[i][x]);
        }
      }
    }
    __syncthreads();
  }

  KDESERVE_UNROLL
  for (int i = 0; i < kQ; ++i) {
    den[i] = warp_sum(den[i]);
    raw[i] = warp_sum(raw[i]);
    peak[i] = warp_max(peak[i]);
    if (!live[i]) continue;
    float d = den[i];
    const float* qm = cv ? pb.query_moments + (g * nq + query[i]) * ldm : nullptr;
    // The far field over every key; D ≥ Σ_blk e + max over the kept samples of e.
    if (cv) d = fmaxf(d + alpha[i] * static_cast<float>(nk), raw[i] + peak[i]);
    float* out = pb.out + (g * nq + query[i]) * dv;
    KDESERVE_UNROLL
    for (int x = 0; x < kCols; ++x) {
      const int64_t col = lane + 32 * x;
      if (col >= dv) continue;
      float num = acc[i][x];
      if (cv) num += (qm[dim + col] + pb.value_sum[g * dv + col]) * alpha[i];
      float o = num / d;
      if (pb.value_min != nullptr) {
        o = fminf(fmaxf(o, pb.value_min[g * dv + col]), pb.value_max[g * dv + col]);
      }
      out[col] = o;
    }
  }
}

}  // namespace kdeserve::attention::kdeformer::cuda_kernel::device
