#pragma once
/// Loading a safetensors file into a LibTorch module whose parameter and buffer names are the
/// upstream state_dict keys.

#include <string>
#include <vector>

#include "models/weights/safetensors.h"

namespace torch::nn {
class Module;
}  // namespace torch::nn

namespace kdeserve::models {

/// Copies every parameter and buffer of `module` (named as module->named_parameters() /
/// named_buffers() report them) from `file`, converting to each tensor's dtype. Strict: a
/// missing, extra or misshapen key is an error naming it (extras allowed when listed in
/// `ignore`, e.g. upstream buffers the C++ module recomputes). Runs under NoGradGuard.
void load_state_dict(torch::nn::Module& module, const SafetensorsFile& file,
                     const std::vector<std::string>& ignore = {});

/// Number of parameter elements of `module` (buffers excluded), as PyTorch counts them.
int64_t parameter_count(const torch::nn::Module& module);

}  // namespace kdeserve::models
