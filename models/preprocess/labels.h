#pragma once
/// The ILSVRC-2012 class index (1000 classes in sorted-wnid order: 0 = n01440764 tench, models
/// spec D.19) compiled into the library, and top-k ranking of classifier logits.
///
/// The table is generated at configure time from models/preprocess/imagenet_class_index.tsv (a
/// copy of shared/data/imagenet/imagenet_class_index.tsv), so nothing is read at run time.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kdeserve::models {

/// One ImageNet class.
struct ImageNetClass {
  /// Position in the classifier output, 0..999.
  int64_t index = 0;
  /// WordNet id, e.g. "n02099601".
  std::string wnid;
  /// Short name as torchvision lists it, e.g. "golden retriever".
  std::string label;
  /// The full synset name with synonyms, e.g. "jack-o'-lantern" or "tench, Tinca tinca".
  std::string synonyms;
};

/// Number of ImageNet classes in the table: 1000.
int64_t imagenet_class_count();

/// The class at `index`; throws c10::Error unless 0 ≤ index < imagenet_class_count().
const ImageNetClass& imagenet_class(int64_t index);

/// One ranked class of one row of logits.
struct TopK {
  /// Row of the logits (batch entry) this belongs to.
  int64_t row = 0;
  /// 0 for the most probable class of the row.
  int64_t rank = 0;
  /// Class index (column of the logits).
  int64_t index = 0;
  /// softmax(logits[row])[index], computed in float64.
  double probability = 0.0;
  /// logits[row][index].
  double logit = 0.0;
  /// ImageNet wnid and label when the logits have 1000 columns; empty otherwise.
  std::string wnid;
  std::string label;
};

/// The k most probable classes of each row of `logits` (any floating dtype, any device;
/// [C] is one row, [B, C] is B rows): B · k entries ordered by row, then by rank (probability
/// descending, ties by lower index). Throws c10::Error unless 1 ≤ k ≤ C, C ≥ 1, and every logit
/// is finite.
std::vector<TopK> top_k(const at::Tensor& logits, int64_t k);

}  // namespace kdeserve::models
