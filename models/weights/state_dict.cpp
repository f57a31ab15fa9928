#include "models/weights/state_dict.h"

#include <torch/nn/module.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>

namespace kdeserve::models {

void load_state_dict(torch::nn::Module& module, const SafetensorsFile& file,
                     const std::vector<std::string>& ignore) {
  std::map<std::string, at::Tensor> targets;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    targets.emplace(item.key(), item.value());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    targets.emplace(item.key(), item.value());
  }
  std::vector<std::string> missing, extra, misshapen;
  for (const auto& [name, tensor] : targets) {
    if (!file.contains(name)) {
      missing.push_back(name);
    } else if (file.info(name).shape != tensor.sizes().vec()) {
      misshapen.push_back("'" + name + "': expected " + c10::str(tensor.sizes()) + ", got " +
                          c10::str(at::IntArrayRef(file.info(name).shape)));
    }
  }
  for (const std::string& name : file.names()) {
    if (targets.count(name) == 0 && std::find(ignore.begin(), ignore.end(), name) == ignore.end()) {
      extra.push_back(name);
    }
  }
  TORCH_CHECK(missing.empty() && extra.empty() && misshapen.empty(), file.path(),
              ": weights do not match the model", missing.empty() ? "" : "; missing keys: ",
              c10::Join(", ", missing), extra.empty() ? "" : "; unexpected keys: ",
              c10::Join(", ", extra), misshapen.empty() ? "" : "; shape mismatches: ",
              c10::Join(", ", misshapen));
  torch::NoGradGuard no_grad;
  for (auto& [name, tensor] : targets) tensor.copy_(file.get(name, tensor.scalar_type()));
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t count = 0;
  for (const auto& p : module.parameters(/*recurse=*/true)) count += p.numel();
  return count;
}

}  // namespace kdeserve::models
