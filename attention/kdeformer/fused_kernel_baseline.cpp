// The fused KDEformer kernel for any CPU: the compiler's baseline instruction set.
#define KDESERVE_KERNEL_ISA baseline
#include "attention/kdeformer/fused_kernel_impl.h"
