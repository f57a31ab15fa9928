// The fused KDEformer kernel for x86-64 with AVX-512 (F + VL; compiled with -mavx512f
// -mavx512vl -mavx2 -mfma; run only where the CPU reports them: fused_kernel.cpp): vectors of
// 16 floats.
#define KDESERVE_KERNEL_ISA avx512
#define KDESERVE_KERNEL_LANES 16
#include "attention/kdeformer/fused_kernel_impl.h"
