#include "models/t2t_vit/options.h"

#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

#include <algorithm>
#include <utility>

namespace kdeserve::models {
namespace {

struct Variant {
  TokensType tokens;
  int64_t embed_dim, depth, num_heads;
  double mlp_ratio;
  int64_t img_size;
};

// Upstream models/t2t_vit.py factories (models.md A.1, in its order); head_dim is 64 in every one.
const std::vector<std::pair<std::string, Variant>>& variants() {
  static const std::vector<std::pair<std::string, Variant>> table = {
      {"t2t_vit_7", {TokensType::kPerformer, 256, 7, 4, 2.0, 224}},
      {"t2t_vit_10", {TokensType::kPerformer, 256, 10, 4, 2.0, 224}},
      {"t2t_vit_12", {TokensType::kPerformer, 256, 12, 4, 2.0, 224}},
      {"t2t_vit_14", {TokensType::kPerformer, 384, 14, 6, 3.0, 224}},
      {"t2t_vit_19", {TokensType::kPerformer, 448, 19, 7, 3.0, 224}},
      {"t2t_vit_24", {TokensType::kPerformer, 512, 24, 8, 3.0, 224}},
      {"t2t_vit_t_14", {TokensType::kTransformer, 384, 14, 6, 3.0, 224}},
      {"t2t_vit_t_19", {TokensType::kTransformer, 448, 19, 7, 3.0, 224}},
      {"t2t_vit_t_24", {TokensType::kTransformer, 512, 24, 8, 3.0, 224}},
      {"t2t_vit_14_384", {TokensType::kPerformer, 384, 14, 6, 3.0, 384}},
  };
  return table;
}

}  // namespace

std::string to_string(TokensType type) {
  return type == TokensType::kTransformer ? "transformer" : "performer";
}

TokensType tokens_type_from_string(const std::string& name) {
  if (name == "transformer") return TokensType::kTransformer;
  TORCH_CHECK(name == "performer", "unknown T2T tokens_type '", name,
              "' (known: transformer, performer)");
  return TokensType::kPerformer;
}

std::vector<std::string> t2t_vit_variants() {
  std::vector<std::string> names;
  for (const auto& [name, _] : variants()) names.push_back(name);
  return names;
}

T2TViTOptions t2t_vit_options(const std::string& variant) {
  const auto it = std::find_if(variants().begin(), variants().end(),
                               [&](const auto& entry) { return entry.first == variant; });
  TORCH_CHECK(it != variants().end(), "unknown T2T-ViT variant '", variant,
              "' (known: ", c10::Join(", ", t2t_vit_variants()), ")");
  const Variant& v = it->second;
  return T2TViTOptions()
      .img_size(v.img_size)
      .tokens_type(v.tokens)
      .num_classes(1000)
      .embed_dim(v.embed_dim)
      .depth(v.depth)
      .num_heads(v.num_heads)
      .mlp_ratio(v.mlp_ratio)
      .token_dim(64);
}

}  // namespace kdeserve::models
