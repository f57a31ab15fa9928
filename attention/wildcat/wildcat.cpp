#include "attention/wildcat/wildcat.h"

#include <c10/util/Exception.h>

namespace kdeserve::attention::wildcat {

std::string exact_reason(const WildCatOptions&, int64_t, int64_t) { return {}; }

at::Tensor wildcat_attention(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                         const WildCatOptions&, const AttentionCall&) {
  TORCH_CHECK(false, "wildcat: PLACEHOLDER on the peers branch, to be replaced by its port");
}

}  // namespace kdeserve::attention::wildcat
