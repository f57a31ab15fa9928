#include "models/weights/safetensors.h"

#include "models/weights/json_reader.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <string_view>
#include <system_error>
#include <tuple>
#include <utility>

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; this reader copies it as-is and needs a "
              "little-endian host");
#else
#error "cannot determine the byte order; the safetensors reader needs a little-endian host"
#endif

namespace kdeserve::models {
namespace {

using detail::append_utf8;
using detail::find_invalid_utf8;
using detail::in_quotes;
using detail::json_quote;
using detail::JsonReader;
using detail::kMaxJsonDepth;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr size_t kMaxRank = 64;
constexpr char kMetadataKey[] = "__metadata__";

struct DtypeEntry {
  const char* name;
  at::ScalarType dtype;
};

constexpr DtypeEntry kDtypes[] = {
    {"F32", at::kFloat}, {"F64", at::kDouble}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
    {"I64", at::kLong},  {"I32", at::kInt},    {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},   {"BOOL", at::kBool},
};

const char* find_dtype_name(at::ScalarType dtype) {
  for (const auto& entry : kDtypes) {
    if (entry.dtype == dtype) return entry.name;
  }
  return nullptr;
}

bool find_dtype(std::string_view name, at::ScalarType* dtype) {
  for (const auto& entry : kDtypes) {
    if (name == entry.name) {
      *dtype = entry.dtype;
      return true;
    }
  }
  return false;
}

/// "F32" for the safetensors dtypes, c10's name ("ComplexFloat", ...) for the others.
std::string any_dtype_name(at::ScalarType dtype) {
  const char* name = find_dtype_name(dtype);
  return name != nullptr ? name : c10::toString(dtype);
}

bool is_float_weight_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
         dtype == at::kBFloat16;
}

std::string shape_string(at::IntArrayRef shape, const char* separator = ", ") {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    out += (i > 0 ? separator : "") + std::to_string(shape[i]);
  }
  return out + "]";
}

/// The first 20 items joined by "; " or ", ", then how many there are in all.
std::string join_some(const std::vector<std::string>& items, const char* separator) {
  constexpr size_t kMaxItems = 20;
  std::string out;
  for (size_t i = 0; i < items.size() && i < kMaxItems; ++i) {
    out += (i > 0 ? separator : "") + items[i];
  }
  if (items.size() > kMaxItems) out += " ... (" + std::to_string(items.size()) + " in all)";
  return out;
}

std::string errno_message(int err) { return std::system_category().message(err); }

struct ParsedHeader {
  std::map<std::string, std::string> metadata;
  std::map<std::string, TensorInfo> tensors;
};

/// Reads a JSON array of at most `max_count` non-negative integers ≤ `max_value`. `what` names
/// the field in error messages ("tensor 'w': shape").
std::vector<uint64_t> read_uint_array(JsonReader& reader, const std::string& prefix,
                                      const std::string& what, size_t max_count,
                                      uint64_t max_value) {
  const std::string rule = what + " must be an array of non-negative integers";
  TORCH_CHECK(reader.peek() == '[', prefix, rule, " (got ", reader.kind_of_next(), ")");
  reader.expect('[');
  std::vector<uint64_t> values;
  if (reader.consume(']')) return values;
  do {
    const char c = reader.peek();
    TORCH_CHECK(c == '-' || (c >= '0' && c <= '9'), prefix, rule, " (got ", reader.kind_of_next(),
                ")");
    const std::string_view literal = reader.read_number();
    TORCH_CHECK(literal.find_first_of(".eE-") == std::string_view::npos, prefix, rule, " (got ",
                literal, ")");
    uint64_t value = 0;
    for (const char digit : literal) {
      const bool overflow = __builtin_mul_overflow(value, uint64_t{10}, &value) ||
                            __builtin_add_overflow(value, uint64_t(digit - '0'), &value);
      TORCH_CHECK(!overflow && value <= max_value, prefix, what, " value ", literal,
                  " is too large");
    }
    TORCH_CHECK(values.size() < max_count, prefix, what, " has more than ", max_count, " values");
    values.push_back(value);
  } while (reader.consume(','));
  reader.expect(']');
  return values;
}

TensorInfo read_tensor_entry(JsonReader& reader, const std::string& file_prefix,
                             const std::string& name, uint64_t data_size) {
  const std::string prefix = file_prefix + "tensor '" + name + "': ";
  TORCH_CHECK(reader.peek() == '{', prefix,
              "entry must be an object with dtype, shape and data_offsets (got ",
              reader.kind_of_next(), ")");
  reader.expect('{');
  TensorInfo info;
  info.name = name;
  bool has_dtype = false, has_shape = false, has_offsets = false;
  if (!reader.consume('}')) {
    do {
      const std::string field = reader.read_string();
      reader.expect(':');
      bool* seen = field == "dtype"          ? &has_dtype
                   : field == "shape"        ? &has_shape
                   : field == "data_offsets" ? &has_offsets
                                             : nullptr;
      TORCH_CHECK(seen != nullptr, prefix, "unknown field ", in_quotes(field),
                  " (expected dtype, shape and data_offsets)");
      TORCH_CHECK(!*seen, prefix, "duplicate field ", in_quotes(field));
      *seen = true;
      if (field == "dtype") {
        TORCH_CHECK(reader.peek() == '"', prefix, "dtype must be a string (got ",
                    reader.kind_of_next(), ")");
        const std::string dtype = reader.read_string();
        TORCH_CHECK(find_dtype(dtype, &info.dtype), prefix, "unknown dtype ", in_quotes(dtype),
                    " (expected F32, F64, F16, BF16, I64, I32, I16, I8, U8 or BOOL)");
      } else if (field == "shape") {
        for (const uint64_t dim : read_uint_array(reader, prefix, "shape", kMaxRank,
                                                  std::numeric_limits<int64_t>::max())) {
          info.shape.push_back(static_cast<int64_t>(dim));
        }
      } else {
        const auto offsets = read_uint_array(reader, prefix, "data_offsets", 2,
                                             std::numeric_limits<uint64_t>::max());
        TORCH_CHECK(offsets.size() == 2, prefix, "data_offsets must be 2 integers [begin, end]");
        info.begin = offsets[0];
        info.end = offsets[1];
      }
    } while (reader.consume(','));
    reader.expect('}');
  }
  TORCH_CHECK(has_dtype, prefix, "missing field 'dtype'");
  TORCH_CHECK(has_shape, prefix, "missing field 'shape'");
  TORCH_CHECK(has_offsets, prefix, "missing field 'data_offsets'");
  TORCH_CHECK(info.begin <= info.end, prefix, "data_offsets begin ", info.begin, " > end ",
              info.end);
  TORCH_CHECK(info.end <= data_size, prefix, "data_offsets end ", info.end,
              " is beyond the data section (", data_size, " bytes; truncated file?)");

  // Sizes and contiguous strides must fit in int64: the product of max(dim, 1) must.
  uint64_t extent = 1;
  bool has_zero = false;
  for (const int64_t dim : info.shape) {
    has_zero = has_zero || dim == 0;
    const bool overflow =
        __builtin_mul_overflow(extent, static_cast<uint64_t>(std::max<int64_t>(dim, 1)), &extent);
    TORCH_CHECK(!overflow && extent <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                prefix, "shape ", shape_string(info.shape),
                " is too large (element count overflows)");
  }
  const uint64_t numel = has_zero ? 0 : extent;
  uint64_t expected_bytes = 0;
  TORCH_CHECK(!__builtin_mul_overflow(numel, static_cast<uint64_t>(c10::elementSize(info.dtype)),
                                      &expected_bytes),
              prefix, "shape ", shape_string(info.shape), " is too large (byte size overflows)");
  TORCH_CHECK(info.end - info.begin == expected_bytes, prefix, "byte size ", info.end - info.begin,
              " (data_offsets [", info.begin, ", ", info.end, "]) does not match shape ",
              shape_string(info.shape), " x ", find_dtype_name(info.dtype), " = ", expected_bytes,
              " bytes");
  return info;
}

void read_metadata(JsonReader& reader, const std::string& prefix,
                   std::map<std::string, std::string>* metadata) {
  TORCH_CHECK(reader.peek() == '{', prefix,
              "__metadata__ must be an object mapping strings to strings (got ",
              reader.kind_of_next(), ")");
  reader.expect('{');
  if (reader.consume('}')) return;
  do {
    std::string key = reader.read_string();
    reader.expect(':');
    TORCH_CHECK(metadata->count(key) == 0, prefix, "duplicate __metadata__ key ", in_quotes(key));
    TORCH_CHECK(reader.peek() == '"', prefix, "__metadata__ value of ", in_quotes(key),
                " must be a string (got ", reader.kind_of_next(), ")");
    metadata->emplace(std::move(key), reader.read_string());
  } while (reader.consume(','));
  reader.expect('}');
}

ParsedHeader parse_header(std::string_view text, const std::string& path, uint64_t data_size) {
  const std::string prefix = "safetensors: " + path + ": ";
  const size_t bad = find_invalid_utf8(text);
  TORCH_CHECK(bad == std::string_view::npos, prefix, "header is not valid UTF-8 (byte ", bad,
              " of the header)");
  JsonReader reader(text, path);
  reader.validate_document();  // Syntax errors first; the schema pass below sees valid JSON.
  TORCH_CHECK(reader.peek() == '{', prefix, "header must be a JSON object (got ",
              reader.kind_of_next(), ")");
  reader.expect('{');
  ParsedHeader header;
  bool has_metadata = false;
  if (!reader.consume('}')) {
    do {
      std::string key = reader.read_string();
      reader.expect(':');
      if (key == kMetadataKey) {
        TORCH_CHECK(!has_metadata, prefix, "duplicate key '__metadata__' in the header");
        has_metadata = true;
        read_metadata(reader, prefix, &header.metadata);
      } else {
        TORCH_CHECK(header.tensors.count(key) == 0, prefix, "duplicate key ", in_quotes(key),
                    " in the header");
        TensorInfo info = read_tensor_entry(reader, prefix, key, data_size);
        header.tensors.emplace(std::move(key), std::move(info));
      }
    } while (reader.consume(','));
    reader.expect('}');
  }

  // Overlaps: sort the non-empty byte ranges by begin and compare each with the furthest end so
  // far. Empty tensors occupy no bytes and cannot overlap anything.
  std::vector<const TensorInfo*> ranges;
  for (const auto& [name, info] : header.tensors) {
    if (info.begin < info.end) ranges.push_back(&info);
  }
  std::sort(ranges.begin(), ranges.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return std::tie(a->begin, a->end, a->name) < std::tie(b->begin, b->end, b->name);
  });
  const TensorInfo* furthest = nullptr;
  for (const TensorInfo* info : ranges) {
    if (furthest != nullptr) {
      TORCH_CHECK(info->begin >= furthest->end, prefix, "tensors ", in_quotes(furthest->name),
                  " (bytes [", furthest->begin, ", ", furthest->end, ")) and ",
                  in_quotes(info->name), " (bytes [", info->begin, ", ", info->end, ")) overlap");
    }
    if (furthest == nullptr || info->end > furthest->end) furthest = info;
  }
  return header;
}

/// Closes a file descriptor on scope exit.
struct FdCloser {
  int fd;
  ~FdCloser() { ::close(fd); }
};

}  // namespace

at::ScalarType dtype_from_safetensors(const std::string& name) {
  at::ScalarType dtype = at::kFloat;
  TORCH_CHECK(find_dtype(name, &dtype), "unknown safetensors dtype ", in_quotes(name),
              " (expected F32, F64, F16, BF16, I64, I32, I16, I8, U8 or BOOL)");
  return dtype;
}

std::string safetensors_dtype_name(at::ScalarType dtype) {
  const char* name = find_dtype_name(dtype);
  TORCH_CHECK(name != nullptr, "dtype ", c10::toString(dtype), " cannot be stored in safetensors",
              " (supported: F32, F64, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
  return name;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  const std::string prefix = "safetensors: " + path + ": ";
  SafetensorsFile file;
  file.path_ = path;
  {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    TORCH_CHECK(fd >= 0, prefix, "cannot open: ", errno_message(errno));
    FdCloser closer{fd};
    struct stat st {};
    TORCH_CHECK(::fstat(fd, &st) == 0, prefix, "cannot stat: ", errno_message(errno));
    TORCH_CHECK(S_ISREG(st.st_mode), prefix, "not a regular file");
    const auto size = static_cast<uint64_t>(st.st_size);
    TORCH_CHECK(size >= 8, prefix, "file is too short (", size,
                " bytes) to hold the 8-byte header length");
    TORCH_CHECK(size <= std::numeric_limits<size_t>::max(), prefix, "file is too large to map");
    void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    TORCH_CHECK(mapping != MAP_FAILED, prefix, "cannot mmap ", size,
                " bytes: ", errno_message(errno));
    file.mapping_ = mapping;
    file.mapping_size_ = static_cast<size_t>(size);
  }  // The mapping stays valid after the descriptor is closed.

  const auto* bytes = static_cast<const unsigned char*>(file.mapping_);
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= uint64_t{bytes[i]} << (8 * i);
  const uint64_t after_prefix = file.mapping_size_ - 8;
  TORCH_CHECK(header_size <= kMaxHeaderBytes, prefix, "header length ", header_size,
              " exceeds the limit of ", kMaxHeaderBytes, " bytes (file has ", after_prefix,
              " bytes after the length; not a safetensors file?)");
  TORCH_CHECK(header_size <= after_prefix, prefix, "header length ", header_size,
              " is larger than the file (", after_prefix,
              " bytes after the 8-byte length; truncated file?)");
  file.data_offset_ = static_cast<size_t>(8 + header_size);
  ParsedHeader header =
      parse_header(std::string_view(reinterpret_cast<const char*>(bytes + 8), header_size), path,
                   after_prefix - header_size);
  file.metadata_ = std::move(header.metadata);
  file.tensors_ = std::move(header.tensors);
  return file;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept { swap(other); }

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  SafetensorsFile moved(std::move(other));
  swap(moved);
  return *this;  // `moved` releases the previous mapping.
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

void SafetensorsFile::swap(SafetensorsFile& other) noexcept {
  std::swap(path_, other.path_);
  std::swap(mapping_, other.mapping_);
  std::swap(mapping_size_, other.mapping_size_);
  std::swap(data_offset_, other.data_offset_);
  std::swap(metadata_, other.metadata_);
  std::swap(tensors_, other.tensors_);
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& entry : tensors_) out.push_back(entry.first);
  return out;  // std::map keeps them sorted.
}

bool SafetensorsFile::contains(const std::string& name) const { return tensors_.count(name) != 0; }

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = tensors_.find(name);
  TORCH_CHECK(it != tensors_.end(), "safetensors: ", path_, ": no tensor named ", in_quotes(name),
              " (the file has ", tensors_.size(), " tensors)");
  return it->second;
}

at::Tensor SafetensorsFile::get(const std::string& name) const {
  const TensorInfo& info = this->info(name);
  at::Tensor out = at::empty(info.shape, at::TensorOptions().dtype(info.dtype).device(at::kCPU));
  const auto nbytes = static_cast<size_t>(info.end - info.begin);
  if (nbytes == 0) return out;
  const auto* source = static_cast<const unsigned char*>(mapping_) + data_offset_ + info.begin;
  if (info.dtype == at::kBool) {
    const auto* bad = std::find_if(source, source + nbytes, [](unsigned char b) { return b > 1; });
    TORCH_CHECK(bad == source + nbytes, "safetensors: ", path_, ": tensor ", in_quotes(name),
                ": BOOL element ", bad - source, " holds byte ", static_cast<int>(*bad),
                " (only 0 and 1 are valid)");
  }
  std::memcpy(out.data_ptr(), source, nbytes);  // The source may be unaligned.
  return out;
}

at::Tensor SafetensorsFile::get(const std::string& name, at::ScalarType dtype) const {
  const TensorInfo& info = this->info(name);
  if (info.dtype == dtype) return get(name);
  TORCH_CHECK(is_float_weight_dtype(info.dtype) && is_float_weight_dtype(dtype),
              "safetensors: ", path_, ": tensor ", in_quotes(name), " is ",
              any_dtype_name(info.dtype), " and cannot be read as ", any_dtype_name(dtype),
              " (conversion is only between F32, F64, F16 and BF16)");
  return get(name).to(dtype);
}

std::map<std::string, at::Tensor> load_strict(const SafetensorsFile& file,
                                              const std::vector<ExpectedTensor>& expected,
                                              at::ScalarType dtype, bool allow_extra) {
  const std::string prefix = "safetensors: " + file.path() + ": strict load";
  std::set<std::string> expected_names;
  std::vector<std::string> missing, unexpected, problems;
  for (const ExpectedTensor& e : expected) {
    TORCH_CHECK(expected_names.insert(e.name).second, prefix, ": key ", in_quotes(e.name),
                " is expected twice");
    if (!file.contains(e.name)) {
      missing.push_back(in_quotes(e.name));
      continue;
    }
    const TensorInfo& info = file.info(e.name);
    if (info.shape != e.shape) {
      problems.push_back("shape mismatch for " + in_quotes(e.name) + ": expected " +
                         shape_string(e.shape) + ", got " + shape_string(info.shape));
    }
    if (info.dtype != dtype &&
        !(is_float_weight_dtype(info.dtype) && is_float_weight_dtype(dtype))) {
      problems.push_back(in_quotes(e.name) + " is " + any_dtype_name(info.dtype) +
                         " and cannot be read as " + any_dtype_name(dtype));
    }
  }
  if (!allow_extra) {
    for (const std::string& name : file.names()) {
      if (expected_names.count(name) == 0) unexpected.push_back(in_quotes(name));
    }
  }
  if (!missing.empty()) {
    problems.insert(problems.begin(),
                    std::to_string(missing.size()) + " missing keys: " + join_some(missing, ", "));
  }
  if (!unexpected.empty()) {
    problems.insert(
        problems.begin() + (missing.empty() ? 0 : 1),
        std::to_string(unexpected.size()) + " unexpected keys: " + join_some(unexpected, ", "));
  }
  TORCH_CHECK(problems.empty(), prefix, " of ", expected.size(),
              " tensors failed: ", join_some(problems, "; "));
  std::map<std::string, at::Tensor> out;
  for (const ExpectedTensor& e : expected) out.emplace(e.name, file.get(e.name, dtype));
  return out;
}

void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string prefix = "save_safetensors: " + path + ": ";
  struct Item {
    const std::string* name;
    at::Tensor data;
    const char* dtype;
  };
  std::vector<Item> items;
  for (const auto& [name, tensor] : tensors) {
    TORCH_CHECK(name != kMetadataKey, prefix, "the name '__metadata__' is reserved");
    TORCH_CHECK(find_invalid_utf8(name) == std::string_view::npos, prefix, "tensor name ",
                in_quotes(name), " is not valid UTF-8");
    TORCH_CHECK(tensor.defined(), prefix, "tensor '", name, "' is undefined");
    const char* dtype = find_dtype_name(tensor.scalar_type());
    TORCH_CHECK(dtype != nullptr, prefix, "tensor '", name, "' has dtype ",
                c10::toString(tensor.scalar_type()), ", which safetensors cannot store here",
                " (supported: F32, F64, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
    TORCH_CHECK(tensor.layout() == at::kStrided && !tensor.is_quantized(), prefix, "tensor '", name,
                "' must be a dense (strided) tensor");
    items.push_back({&name, tensor.to(at::kCPU).resolve_neg().contiguous(), dtype});
  }
  for (const auto& [key, value] : metadata) {
    TORCH_CHECK(find_invalid_utf8(key) == std::string_view::npos &&
                    find_invalid_utf8(value) == std::string_view::npos,
                prefix, "__metadata__ entry ", in_quotes(key), " is not valid UTF-8");
  }
  // Largest items first, so every tensor is aligned to its item size (names break ties).
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.data.element_size() > b.data.element_size();
  });

  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    for (const auto& [key, value] : metadata) {
      if (header.back() != '{') header += ',';
      header += json_quote(key) + ":" + json_quote(value);
    }
    header += "}";
  }
  uint64_t offset = 0;
  for (const Item& item : items) {
    const auto nbytes = static_cast<uint64_t>(item.data.nbytes());
    if (header.size() > 1) header += ',';
    header += json_quote(*item.name) + ":{\"dtype\":\"" + item.dtype +
              "\",\"shape\":" + shape_string(item.data.sizes(), ",") + ",\"data_offsets\":[" +
              std::to_string(offset) + "," + std::to_string(offset + nbytes) + "]}";
    offset += nbytes;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  TORCH_CHECK(header.size() <= kMaxHeaderBytes, prefix, "header of ", header.size(),
              " bytes exceeds the limit of ", kMaxHeaderBytes, " bytes");

  const std::string temp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* out = std::fopen(temp.c_str(), "wb");
  TORCH_CHECK(out != nullptr, prefix, "cannot create ", temp, ": ", errno_message(errno));
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(header.size() >> (8 * i));
  bool ok = std::fwrite(length, 1, 8, out) == 8 &&
            std::fwrite(header.data(), 1, header.size(), out) == header.size();
  for (const Item& item : items) {
    const size_t nbytes = item.data.nbytes();
    if (ok && nbytes > 0) ok = std::fwrite(item.data.data_ptr(), 1, nbytes, out) == nbytes;
  }
  int err = ok ? 0 : errno;
  if (std::fclose(out) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (ok && std::rename(temp.c_str(), path.c_str()) != 0) {
    ok = false;
    err = errno;
  }
  if (!ok) std::remove(temp.c_str());
  TORCH_CHECK(ok, prefix, "write failed: ", errno_message(err));
}

}  // namespace kdeserve::models
