#include "attention/hyperattention/hyperattention.h"

#include <c10/util/Exception.h>

namespace kdeserve::attention::hyperattention {

std::string exact_reason(const HyperAttentionOptions&, int64_t, int64_t) { return {}; }

at::Tensor hyperattention_attention(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                         const HyperAttentionOptions&, const AttentionCall&) {
  TORCH_CHECK(false, "hyperattention: PLACEHOLDER on the peers branch, to be replaced by its port");
}

}  // namespace kdeserve::attention::hyperattention
