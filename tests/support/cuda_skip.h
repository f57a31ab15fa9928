#pragma once
/// GTEST_SKIP for tests that need a CUDA device, with the reason: this build links no CUDA
/// (configure with -DKDESERVE_WITH_CUDA=ON) or this machine shows no GPU.

#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "attention/device.h"

#define KDESERVE_SKIP_WITHOUT_CUDA()                                                        \
  do {                                                                                      \
    if (!torch::cuda::is_available()) {                                                     \
      const auto info = ::kdeserve::attention::cuda_info();                                 \
      GTEST_SKIP() << "needs a CUDA device: "                                               \
                   << (info.compiled ? info.message                                         \
                                     : std::string("built without CUDA (configure with "    \
                                                   "-DKDESERVE_WITH_CUDA=ON)"));            \
    }                                                                                       \
  } while (0)
