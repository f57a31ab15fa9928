#pragma once
/// Seeded random streams of an attention call.

#include <ATen/core/Generator.h>

#include <cstdint>

#include "attention/call.h"

namespace kdeserve::attention {

/// Independent random streams of one (entry, head) of a call.
enum class Stream : uint64_t {
  kProjections = 1,  ///< LSH hyperplanes.
  kPowerInit = 2,    ///< Start vector of the power method.
  kSamples = 3,      ///< Residual key samples.
  kFeatures = 4,     ///< Random-feature directions.
  kRotations = 5,    ///< Reformer's rotations.
  kUniforms = 6,     ///< Sequential samplers' uniforms.
  kCoins = 7,        ///< Fair coins.
  kCalibration = 8,  ///< KDEformer's calibration rows.
  kCoresetFit = 9,   ///< KDEformer's coreset fit rows.
};

/// splitmix64 finaliser of a ^ f(b): a well-mixed 64-bit combination of two seeds.
uint64_t mix_seed(uint64_t a, uint64_t b);

/// A CPU generator for `stream` of batch entry `entry`, head `head` of `call`. It depends on
/// call.seed, call.entry_seeds[entry] (0 when absent), head and stream only, so an entry's draws
/// do not depend on its position in the batch or on the other entries.
at::Generator stream_generator(const AttentionCall& call, int64_t entry, int64_t head,
                               Stream stream);

}  // namespace kdeserve::attention
