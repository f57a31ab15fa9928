// The fused KDEformer kernel for x86-64 with AVX2 and FMA (compiled with -mavx2 -mfma; run only
// where the CPU reports both: fused_kernel.cpp).
#define KDESERVE_KERNEL_ISA avx2
#include "attention/kdeformer/fused_kernel_impl.h"
