// Fuzzes the safetensors reader (models/weights/safetensors.h) on whole files: open() validates
// the header, then every tensor is read back as stored (and as float32 where it converts) and
// load_strict() takes the lot. A file may be refused with a c10::Error; nothing may crash, leak,
// hit undefined behaviour or throw anything else, and what open() accepts must keep the header's
// promises: byte sizes that match the shapes, ranges inside the data that do not overlap, and
// get() returning exactly those bytes.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "models/weights/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

namespace km = kdeserve::models;

namespace {

bool is_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// The input as a file: an in-memory file (memfd) rewritten for every input, opened by its
// /proc/self/fd path as SafetensorsFile::open() opens any path.
const std::string& file_of(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("safetensors_fuzzer", MFD_CLOEXEC);
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  KDESERVE_FUZZ_CHECK(fd >= 0, "memfd_create failed");
  KDESERVE_FUZZ_CHECK(ftruncate(fd, 0) == 0, "ftruncate failed");
  size_t written = 0;
  while (written < size) {
    const ssize_t n = pwrite(fd, data + written, size - written, static_cast<off_t>(written));
    KDESERVE_FUZZ_CHECK(n > 0, "pwrite failed");
    written += static_cast<size_t>(n);
  }
  return path;
}

}  // namespace

std::vector<kdeserve::fuzz::Seed> kdeserve::fuzz::generated_seeds() {
  char dir_template[] = "/tmp/safetensors_seeds.XXXXXX";
  const char* dir = mkdtemp(dir_template);
  KDESERVE_FUZZ_CHECK(dir != nullptr, "mkdtemp failed");
  const auto ramp = [](at::ScalarType dtype, std::vector<int64_t> shape) {
    return at::arange(c10::multiply_integers(shape), at::kDouble).reshape(shape).to(dtype);
  };
  const std::vector<std::pair<std::string, std::map<std::string, at::Tensor>>> files = {
      {"floats",
       {{"w", ramp(at::kFloat, {2, 3})},
        {"h", ramp(at::kHalf, {4})},
        {"b", ramp(at::kBFloat16, {1, 2, 2})},
        {"d", ramp(at::kDouble, {3})}}},
      {"ints",
       {{"i64", ramp(at::kLong, {})},
        {"i32", ramp(at::kInt, {2})},
        {"i16", ramp(at::kShort, {3})},
        {"i8", ramp(at::kChar, {2, 2})},
        {"u8", ramp(at::kByte, {0, 3})},
        {"mask", at::ones({3}, at::kBool)}}},
      {"empty", {}},
  };
  std::vector<Seed> seeds;
  for (const auto& [name, tensors] : files) {
    const std::string path = std::string(dir) + "/" + name;
    km::save_safetensors(path, tensors, {{"format", "pt"}, {"source", name}});
    std::ifstream in(path, std::ios::binary);
    seeds.push_back({name + ".safetensors", {std::istreambuf_iterator<char>(in), {}}});
    std::remove(path.c_str());
  }
  rmdir(dir);
  return seeds;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = file_of(data, size);
  try {
    const km::SafetensorsFile file = km::SafetensorsFile::open(path);
    uint64_t header_size = 0;
    for (int i = 0; i < 8; ++i) header_size |= uint64_t{data[i]} << (8 * i);
    const uint64_t data_size = size - 8 - header_size;
    const uint8_t* first_data_byte = data + 8 + header_size;

    const std::vector<std::string> names = file.names();
    KDESERVE_FUZZ_CHECK(names.size() == file.size() && std::is_sorted(names.begin(), names.end()),
                        "names() is not the sorted list of size() tensors");
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    std::vector<km::ExpectedTensor> expected;
    bool all_float = true;
    for (const std::string& name : names) {
      const km::TensorInfo& info = file.info(name);
      KDESERVE_FUZZ_CHECK(info.name == name && info.begin <= info.end && info.end <= data_size,
                          "tensor " + name + ": byte range outside the data");
      if (info.begin < info.end) ranges.emplace_back(info.begin, info.end);
      expected.push_back({name, info.shape});
      all_float = all_float && is_float(info.dtype);

      at::Tensor t;
      try {
        t = file.get(name);
      } catch (const c10::Error&) {
        KDESERVE_FUZZ_CHECK(info.dtype == at::kBool, "get(" + name + ") refused a valid tensor");
        continue;
      }
      KDESERVE_FUZZ_CHECK(t.scalar_type() == info.dtype &&
                              t.sizes() == at::IntArrayRef(info.shape) && t.is_contiguous() &&
                              static_cast<uint64_t>(t.nbytes()) == info.end - info.begin,
                          "get(" + name + ") does not match its header entry");
      KDESERVE_FUZZ_CHECK(t.nbytes() == 0 || std::memcmp(t.data_ptr(), first_data_byte + info.begin,
                                                         t.nbytes()) == 0,
                          "get(" + name + ") returned other bytes than the file's");
      if (is_float(info.dtype)) {
        const at::Tensor f = file.get(name, at::kFloat);
        KDESERVE_FUZZ_CHECK(f.scalar_type() == at::kFloat && f.sizes() == t.sizes(),
                            "get(" + name + ", kFloat) changed the shape");
      }
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i) {
      KDESERVE_FUZZ_CHECK(ranges[i].first >= ranges[i - 1].second,
                          "open() accepted overlapping tensors");
    }
    try {
      const auto loaded = km::load_strict(file, expected, at::kFloat);
      KDESERVE_FUZZ_CHECK(all_float && loaded.size() == names.size(),
                          "load_strict() took tensors it cannot convert");
    } catch (const c10::Error&) {
      KDESERVE_FUZZ_CHECK(!all_float, "load_strict() refused the file's own float tensors");
    }
  } catch (const c10::Error&) {
  }
  return 0;
}
