#include "bench/glove/data.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "attention/spectral_norm.h"

namespace kdeserve::bench {

namespace {

constexpr int64_t kSyntheticDim = 100;
constexpr int64_t kClusters = 32;
constexpr double kNoise = 0.7;

double self_logit(Regime r) {
  switch (r) {
    case Regime::kDiffuse:
      return 3.6;
    case Regime::kPeaked:
      return 8.1;
    case Regime::kVeryPeaked:
      return 14.4;
    case Regime::kFile:
      break;
  }
  return 0;
}

}  // namespace

Regime regime_from_string(const std::string& name) {
  if (name == "glove" || name == "file") return Regime::kFile;
  if (name == "diffuse") return Regime::kDiffuse;
  if (name == "peaked") return Regime::kPeaked;
  if (name == "very_peaked") return Regime::kVeryPeaked;
  std::cerr << "unknown regime '" << name << "'; accepted: glove, diffuse, peaked, very_peaked\n";
  std::exit(2);
}

std::string to_string(Regime regime) {
  switch (regime) {
    case Regime::kFile:
      return "glove";
    case Regime::kDiffuse:
      return "diffuse";
    case Regime::kPeaked:
      return "peaked";
    case Regime::kVeryPeaked:
      return "very_peaked";
  }
  return "?";
}

int64_t RowFile::max_n() const { return std::min(value_offset, rows.size(0) - value_offset); }

RowFile load_rows(const std::string& path, int64_t dim) {
  std::error_code ec;
  const auto bytes = static_cast<int64_t>(std::filesystem::file_size(path, ec));
  if (ec) {
    std::cerr << "cannot open row file " << path << " (set --data or KDESERVE_SHARED_DIR)\n";
    std::exit(1);
  }
  const int64_t row_bytes = dim * static_cast<int64_t>(sizeof(float));
  if (bytes % row_bytes != 0 || bytes < 2 * row_bytes) {
    std::cerr << path << ": " << bytes << " bytes is not a whole number (>= 2) of float32 rows of "
              << dim << " values (--dim)\n";
    std::exit(1);
  }
  RowFile f;
  f.rows = at::empty({bytes / row_bytes, dim}, at::kFloat);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(f.rows.data_ptr<float>()), bytes);
  if (in.gcount() != static_cast<std::streamsize>(bytes)) {
    std::cerr << path << ": short read\n";
    std::exit(1);
  }
  f.value_offset = f.rows.size(0) * 2 / 3;
  return f;
}

Pair make_pair(Regime regime, const RowFile* file, int64_t n, int64_t p, int64_t pairs) {
  if (regime == Regime::kFile) {
    const int64_t rows = file->rows.size(0);
    const int64_t span = std::max<int64_t>(pairs - 1, 1);
    const int64_t q_off = p * (file->value_offset - n) / span;
    const int64_t v_off = file->value_offset + p * (rows - file->value_offset - n) / span;
    return {file->rows.narrow(0, q_off, n).to(at::kDouble).div_(std::pow(10.0, 0.25)),
            file->rows.narrow(0, v_off, n).to(at::kDouble)};
  }
  at::Generator gen = at::detail::createCPUGenerator(
      static_cast<uint64_t>(1000003 * static_cast<int64_t>(regime) + 7919 * n + p));
  const at::TensorOptions f64(at::kDouble);
  const at::Tensor centres = at::randn({kClusters, kSyntheticDim}, gen, f64);
  const at::Tensor which = at::randint(kClusters, {n}, gen, at::TensorOptions(at::kLong));
  at::Tensor q = centres.index_select(0, which) + kNoise * at::randn({n, kSyntheticDim}, gen, f64);
  q.mul_(std::sqrt(self_logit(regime) / q.pow(2).sum(1).mean().item<double>()));
  const at::Tensor offset = 0.5 * at::randn({1, kSyntheticDim}, gen, f64);
  const at::Tensor v = at::randn({n, kSyntheticDim}, gen, f64) + offset;
  return {q, v};
}

Reference make_reference(const at::Tensor& exact) {
  Reference r;
  r.exact = exact;
  r.norm = attention::spectral_norm(exact).item<double>();
  r.centered_norm = attention::spectral_norm(exact - exact.mean(0, true)).item<double>();
  return r;
}

Errors errors_of(const at::Tensor& estimate, const Reference& ref) {
  const at::Tensor diff = estimate.to(at::kDouble) - ref.exact;
  Errors e;
  e.rel = attention::spectral_norm(diff).item<double>() / ref.norm;
  e.centered =
      attention::spectral_norm(diff - diff.mean(0, true)).item<double>() / ref.centered_norm;
  return e;
}

}  // namespace kdeserve::bench
