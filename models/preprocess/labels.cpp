#include "models/preprocess/labels.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <numeric>
#include <string_view>

namespace kdeserve::models {
namespace detail {
// Defined in the generated imagenet_class_index.cpp.
extern const std::string_view kImageNetClassIndexTsv;
}  // namespace detail

namespace {

constexpr int64_t kImageNetClasses = 1000;

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t end = text.find(separator, start);
    if (end == std::string_view::npos) {
      parts.push_back(text.substr(start));
      return parts;
    }
    parts.push_back(text.substr(start, end - start));
    start = end + 1;
  }
}

// The TSV's synset names carry JavaScript escapes (jack-o\'-lantern) and some a trailing ", ".
std::string clean_synonyms(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\\' && i + 1 < raw.size() && raw[i + 1] == '\'') {
      continue;
    }
    out.push_back(raw[i]);
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == ',')) {
    out.pop_back();
  }
  return out;
}

std::vector<ImageNetClass> parse_class_index(std::string_view tsv) {
  std::vector<ImageNetClass> classes;
  const std::vector<std::string_view> lines = split(tsv, '\n');
  // Line 0 is the header; a trailing newline leaves an empty last line.
  for (size_t i = 1; i < lines.size(); ++i) {
    std::string_view line = lines[i];
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    if (line.empty()) {
      continue;
    }
    const std::vector<std::string_view> fields = split(line, '\t');
    TORCH_INTERNAL_ASSERT(fields.size() == 4, "embedded ImageNet class index: line ", i, " has ",
                          fields.size(), " fields, expected 4");
    ImageNetClass entry;
    entry.index = static_cast<int64_t>(classes.size());
    TORCH_INTERNAL_ASSERT(std::to_string(entry.index) == fields[0],
                          "embedded ImageNet class index: line ", i, " is out of order");
    entry.wnid = std::string(fields[1]);
    entry.label = std::string(fields[2]);
    entry.synonyms = clean_synonyms(fields[3]);
    classes.push_back(std::move(entry));
  }
  TORCH_INTERNAL_ASSERT(static_cast<int64_t>(classes.size()) == kImageNetClasses,
                        "embedded ImageNet class index has ", classes.size(), " classes");
  return classes;
}

const std::vector<ImageNetClass>& classes() {
  static const std::vector<ImageNetClass> table = parse_class_index(detail::kImageNetClassIndexTsv);
  return table;
}

}  // namespace

int64_t imagenet_class_count() { return static_cast<int64_t>(classes().size()); }

const ImageNetClass& imagenet_class(int64_t index) {
  const auto& table = classes();
  TORCH_CHECK(index >= 0 && index < static_cast<int64_t>(table.size()), "ImageNet class index ",
              index, " is out of range [0, ", table.size(), ")");
  return table[index];
}

std::vector<TopK> top_k(const at::Tensor& logits, int64_t k) {
  TORCH_CHECK(logits.defined(), "top_k: logits are undefined");
  TORCH_CHECK(at::isFloatingType(logits.scalar_type()),
              "top_k: expected floating-point logits, got ", logits.scalar_type());
  TORCH_CHECK(logits.dim() == 1 || logits.dim() == 2,
              "top_k: expected logits of shape [C] or [B, C], got ", logits.sizes());
  const at::Tensor rows = logits.to(at::kCPU, at::kDouble).reshape({-1, logits.size(-1)});
  const int64_t batch = rows.size(0);
  const int64_t num_classes = rows.size(1);
  TORCH_CHECK(num_classes >= 1, "top_k: logits have no classes (shape ", logits.sizes(), ")");
  TORCH_CHECK(k >= 1 && k <= num_classes, "top_k: k = ", k, " must be in [1, ", num_classes, "]");
  TORCH_CHECK(at::isfinite(rows).all().item<bool>(),
              "top_k: logits contain NaN or infinite values");
  const at::Tensor probs = at::softmax(rows, 1).contiguous();
  const at::Tensor values = rows.contiguous();
  const bool imagenet = num_classes == kImageNetClasses;

  std::vector<TopK> out;
  out.reserve(static_cast<size_t>(batch * k));
  std::vector<int64_t> order(num_classes);
  for (int64_t b = 0; b < batch; ++b) {
    const double* p = probs.data_ptr<double>() + b * num_classes;
    const double* z = values.data_ptr<double>() + b * num_classes;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int64_t i, int64_t j) { return z[i] > z[j] || (z[i] == z[j] && i < j); });
    for (int64_t r = 0; r < k; ++r) {
      TopK entry;
      entry.row = b;
      entry.rank = r;
      entry.index = order[r];
      entry.probability = p[order[r]];
      entry.logit = z[order[r]];
      if (imagenet) {
        const ImageNetClass& cls = imagenet_class(order[r]);
        entry.wnid = cls.wnid;
        entry.label = cls.label;
      }
      out.push_back(std::move(entry));
    }
  }
  return out;
}

}  // namespace kdeserve::models
