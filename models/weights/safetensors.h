#pragma once
/// A strict, safe reader (and a small writer) for safetensors, the project's weights format.
///
/// File layout: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON header (padded with
/// spaces), then the raw little-endian tensor data. The header maps each tensor name to
/// {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the first data byte) and
/// may hold a "__metadata__" object of string → string.
///
/// Every malformed input is reported as a c10::Error whose message names the file and, where
/// relevant, the tensor; nothing in a file can make the reader crash or read out of bounds.
/// The one exception is outside the reader's control: a file truncated by another process while
/// it is mapped raises SIGBUS on access (POSIX mmap semantics); write files atomically (as
/// save_safetensors() does) instead of rewriting them in place.

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kdeserve::models {

/// Where one tensor lives in a safetensors file.
struct TensorInfo {
  std::string name;
  /// The stored dtype (F32 → kFloat, F64 → kDouble, F16 → kHalf, BF16 → kBFloat16, I64 → kLong,
  /// I32 → kInt, I16 → kShort, I8 → kChar, U8 → kByte, BOOL → kBool).
  at::ScalarType dtype = at::kFloat;
  /// [] for a scalar (one element); a 0 anywhere for an empty tensor.
  std::vector<int64_t> shape;
  /// Byte range [begin, end) relative to the first data byte; end - begin = numel · item size.
  uint64_t begin = 0;
  uint64_t end = 0;
};

/// The at::ScalarType of a safetensors dtype string ("F32", "BF16", ...); throws c10::Error on
/// any other string.
at::ScalarType dtype_from_safetensors(const std::string& name);

/// The safetensors dtype string of `dtype`; throws c10::Error for types the format (as supported
/// here) cannot store (complex, quantized, ...).
std::string safetensors_dtype_name(at::ScalarType dtype);

/// A read-only, memory-mapped safetensors file whose whole header has been validated.
///
/// Movable, not copyable; the mapping is released when the object is destroyed. Tensors returned
/// by get() are independent copies and stay valid after that. Const methods are thread-safe.
class SafetensorsFile {
 public:
  /// Maps `path` read-only and validates the header: the length prefix (≤ 100 MB and within the
  /// file), UTF-8, JSON syntax, duplicate keys, dtypes, shapes (non-negative integers, at most 64
  /// dims), data_offsets (two integers, begin ≤ end ≤ data size), byte size = numel · item size
  /// (overflow-checked) and that no two tensors overlap. Throws c10::Error naming the file.
  static SafetensorsFile open(const std::string& path);

  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  /// The "__metadata__" object (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// Every tensor name, sorted; "__metadata__" is not a tensor and is never listed.
  std::vector<std::string> names() const;

  /// Number of tensors in the file.
  size_t size() const { return tensors_.size(); }

  bool contains(const std::string& name) const;

  /// Where `name` lives; throws c10::Error naming the file and the key when it is absent.
  const TensorInfo& info(const std::string& name) const;

  /// A contiguous CPU tensor of shape info(name).shape in the stored dtype. Always a fresh copy,
  /// never a view of the mapping (the data need not be aligned in the file). BOOL data must hold
  /// only bytes 0 and 1. Throws c10::Error when the key is absent.
  at::Tensor get(const std::string& name) const;

  /// get(name) converted to `dtype`. Conversion happens only between the floating dtypes
  /// F32, F64, F16 and BF16; integer and bool tensors are readable only in their stored dtype
  /// (asking for another dtype throws c10::Error).
  at::Tensor get(const std::string& name, at::ScalarType dtype) const;

  const std::string& path() const { return path_; }

 private:
  SafetensorsFile() = default;
  void swap(SafetensorsFile& other) noexcept;

  std::string path_;
  /// The whole file, mapped read-only (nullptr after a move).
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  /// Offset of the first data byte in the mapping (8 + header length).
  size_t data_offset_ = 0;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, TensorInfo> tensors_;
};

/// One tensor that load_strict() requires: its exact name and shape ([] for a scalar).
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};

/// Strict load into a name → tensor map, every tensor converted to `dtype` (see
/// SafetensorsFile::get(name, dtype)). Every expected name must be present with exactly the
/// expected shape, and the file must hold no other tensors unless `allow_extra`. On failure one
/// c10::Error lists all the missing keys, all the unexpected keys and, for every shape mismatch,
/// the key with the expected and the stored shape. The result holds exactly the expected names.
std::map<std::string, at::Tensor> load_strict(const SafetensorsFile& file,
                                              const std::vector<ExpectedTensor>& expected,
                                              at::ScalarType dtype, bool allow_extra = false);

/// Writes `tensors` (any device and layout that converts to a strided CPU tensor; dtypes F32, F64,
/// F16, BF16, I64, I32, I16, I8, U8, BOOL) and `metadata` as a safetensors file. Tensors are
/// packed without gaps, largest item size first, after a header padded with spaces to a multiple
/// of 8 bytes, so every tensor is aligned to its item size. The file is written to a temporary
/// name next to `path` and renamed into place, so readers never see a partial file. Throws
/// c10::Error for an unsupported dtype, the reserved name "__metadata__", or an I/O failure.
void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace kdeserve::models
