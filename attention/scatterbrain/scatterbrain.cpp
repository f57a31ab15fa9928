#include "attention/scatterbrain/scatterbrain.h"

#include <c10/util/Exception.h>

namespace kdeserve::attention::scatterbrain {

std::string exact_reason(const ScatterBrainOptions&, int64_t, int64_t) { return {}; }

at::Tensor scatterbrain_attention(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                         const ScatterBrainOptions&, const AttentionCall&) {
  TORCH_CHECK(false, "scatterbrain: PLACEHOLDER on the peers branch, to be replaced by its port");
}

}  // namespace kdeserve::attention::scatterbrain
