#include "attention/thinformer/thinformer.h"

#include <c10/util/Exception.h>

namespace kdeserve::attention::thinformer {

std::string exact_reason(const ThinformerOptions&, int64_t, int64_t) { return {}; }

at::Tensor thinformer_attention(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                         const ThinformerOptions&, const AttentionCall&) {
  TORCH_CHECK(false, "thinformer: PLACEHOLDER on the peers branch, to be replaced by its port");
}

}  // namespace kdeserve::attention::thinformer
