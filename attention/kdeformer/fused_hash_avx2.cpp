// The LSH hash for x86-64 with AVX2 (-mavx2, no FMA contraction).
#define KDESERVE_KERNEL_ISA avx2
#include "attention/kdeformer/fused_hash_impl.h"
