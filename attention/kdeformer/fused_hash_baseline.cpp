// The LSH hash for any CPU.
#define KDESERVE_KERNEL_ISA baseline
#include "attention/kdeformer/fused_hash_impl.h"
