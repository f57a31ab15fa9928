#include "models/weights/safetensors.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <string>
#include <system_error>
#include <vector>

namespace kdeserve::models {
namespace {

namespace fs = std::filesystem;

/// Removes the files temp_path() handed out when the process exits.
struct TempFiles {
  std::vector<fs::path> paths;
  ~TempFiles() {
    std::error_code ignored;
    for (const fs::path& path : paths) fs::remove(path, ignored);
  }
};

/// A fresh path under testing::TempDir(), unique per test and process.
std::string temp_path(const std::string& name) {
  static TempFiles files;
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string stem = std::string(test->test_suite_name()) + "_" + test->name();
  for (char& c : stem) {
    if (c == '/') c = '_';
  }
  const fs::path path = fs::path(::testing::TempDir()) /
                        ("kdeserve_st_" + stem + "_" + std::to_string(::getpid()) + "_" + name);
  fs::remove(path);
  files.paths.push_back(path);
  return path.string();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string u64_le(uint64_t value) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xFF);
  return out;
}

/// Writes a hand-made file: the length of `header`, `header`, then `data`.
std::string write_raw(const std::string& header, const std::string& data = std::string(64, '\0'),
                      const std::string& name = "raw.safetensors") {
  std::string path = temp_path(name);
  write_bytes(path, u64_le(header.size()) + header + data);
  return path;
}

/// The c10::Error message of `fn`, or "" (and a test failure) when it does not throw one.
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected c10::Error, got std::exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected c10::Error, nothing was thrown";
  return "";
}

void expect_error(const std::function<void()>& fn, std::initializer_list<const char*> parts) {
  const std::string message = error_of(fn);
  for (const char* part : parts) {
    EXPECT_NE(message.find(part), std::string::npos) << "message lacks \"" << part << "\":\n"
                                                     << message;
  }
}

/// The header must be rejected on open with a message containing `parts` and "safetensors: ".
void expect_open_error(const std::string& header, std::initializer_list<const char*> parts,
                       const std::string& data = std::string(64, '\0')) {
  SCOPED_TRACE(header.substr(0, 200));
  const std::string path = write_raw(header, data);
  const std::string message = error_of([&] { SafetensorsFile::open(path); });
  EXPECT_NE(message.find("safetensors: " + path + ": "), std::string::npos) << message;
  for (const char* part : parts) {
    EXPECT_NE(message.find(part), std::string::npos) << "message lacks \"" << part << "\":\n"
                                                     << message;
  }
}

/// Deterministic values of any dtype; floating tensors also get NaN, -0 and inf.
at::Tensor sample(at::ScalarType dtype, at::IntArrayRef shape, double salt = 0.37) {
  const int64_t numel = c10::multiply_integers(shape);
  at::Tensor x = at::arange(numel, at::kDouble).mul(salt).add(0.1).sin().mul(100).reshape(shape);
  if (dtype == at::kBool) return x.gt(0);
  if (dtype == at::kByte) return x.abs().to(at::kByte);
  if (!at::isFloatingType(dtype)) return x.to(dtype);
  at::Tensor out = x.to(dtype);
  if (numel >= 4) {
    at::Tensor flat = out.view({-1});
    flat[0].fill_(std::numeric_limits<double>::quiet_NaN());
    flat[1].fill_(-0.0);
    flat[2].fill_(-std::numeric_limits<double>::infinity());
  }
  return out;
}

/// Same dtype, shape and bytes (so NaN and -0 compare exactly).
void expect_identical(const at::Tensor& got, const at::Tensor& want) {
  ASSERT_EQ(got.scalar_type(), want.scalar_type());
  ASSERT_EQ(got.sizes(), want.sizes());
  const at::Tensor a = got.contiguous(), b = want.contiguous();
  ASSERT_EQ(a.nbytes(), b.nbytes());
  if (a.nbytes() > 0) {
    EXPECT_EQ(std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()), 0);
  }
}

const char kF32Entry[] = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

class SafetensorsDtypeTest : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(SafetensorsDtypeTest, RoundTripsTensorsScalarsAndEmptyTensors) {
  const at::ScalarType dtype = GetParam();
  const std::map<std::string, at::Tensor> tensors = {{"matrix", sample(dtype, {3, 5})},
                                                     {"odd", sample(dtype, {7}, 1.3)},
                                                     {"scalar", sample(dtype, {}, 2.1)},
                                                     {"empty", sample(dtype, {0})},
                                                     {"empty3d", sample(dtype, {2, 0, 3})}};
  const std::string path = temp_path("rt.safetensors");
  save_safetensors(path, tensors);
  const SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.path(), path);
  EXPECT_EQ(file.names(),
            (std::vector<std::string>{"empty", "empty3d", "matrix", "odd", "scalar"}));
  EXPECT_TRUE(file.metadata().empty());
  for (const auto& [name, want] : tensors) {
    SCOPED_TRACE(name);
    const TensorInfo& info = file.info(name);
    EXPECT_EQ(info.name, name);
    EXPECT_EQ(info.dtype, dtype);
    EXPECT_EQ(info.shape, want.sizes().vec());
    EXPECT_EQ(info.end - info.begin, want.nbytes());
    const at::Tensor got = file.get(name);
    EXPECT_TRUE(got.device().is_cpu());
    EXPECT_TRUE(got.is_contiguous());
    expect_identical(got, want);
    expect_identical(file.get(name, dtype), want);
  }
  EXPECT_EQ(file.get("scalar").dim(), 0);
  EXPECT_EQ(file.get("empty3d").numel(), 0);
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, SafetensorsDtypeTest,
                         ::testing::Values(at::kFloat, at::kDouble, at::kHalf, at::kBFloat16,
                                           at::kLong, at::kInt, at::kShort, at::kChar, at::kByte,
                                           at::kBool),
                         [](const ::testing::TestParamInfo<at::ScalarType>& info) {
                           return safetensors_dtype_name(info.param);
                         });

TEST(SafetensorsTest, DtypeNames) {
  EXPECT_EQ(dtype_from_safetensors("BF16"), at::kBFloat16);
  EXPECT_EQ(safetensors_dtype_name(at::kBool), "BOOL");
  expect_error([] { dtype_from_safetensors("f32"); }, {"unknown safetensors dtype", "f32"});
  expect_error([] { safetensors_dtype_name(at::kComplexFloat); }, {"ComplexFloat"});
}

TEST(SafetensorsTest, WriterPacksAlignedWithAPaddedHeader) {
  const std::map<std::string, at::Tensor> tensors = {
      {"a_u8", sample(at::kByte, {3})},      {"b_f64", sample(at::kDouble, {5})},
      {"c_i32", sample(at::kInt, {3})},      {"d_f16", sample(at::kHalf, {3})},
      {"e_bool", sample(at::kBool, {1})},    {"f_i64", sample(at::kLong, {2, 2})},
      {"g_bf16", sample(at::kBFloat16, {1})}};
  const std::string path = temp_path("mixed.safetensors");
  save_safetensors(path, tensors, {{"k", "v"}});
  const std::string bytes = read_bytes(path);
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  EXPECT_EQ(header_size % 8, 0u);
  const SafetensorsFile file = SafetensorsFile::open(path);
  uint64_t total = 0;
  for (const auto& [name, want] : tensors) {
    const TensorInfo& info = file.info(name);
    EXPECT_EQ(info.begin % want.element_size(), 0u) << name;
    total += info.end - info.begin;
    expect_identical(file.get(name), want);
  }
  EXPECT_EQ(bytes.size(), 8 + header_size + total);  // Packed without gaps.
  EXPECT_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid())));
}

TEST(SafetensorsTest, ConvertsFloatDtypes) {
  const at::Tensor f16 = sample(at::kHalf, {4, 3}), bf16 = sample(at::kBFloat16, {5});
  const at::Tensor f64 = sample(at::kDouble, {2, 2, 2}), f32 = sample(at::kFloat, {3});
  const std::string path = temp_path("conv.safetensors");
  save_safetensors(path, {{"f16", f16}, {"bf16", bf16}, {"f64", f64}, {"f32", f32}});
  const SafetensorsFile file = SafetensorsFile::open(path);
  expect_identical(file.get("f16", at::kFloat), f16.to(at::kFloat));
  expect_identical(file.get("bf16", at::kFloat), bf16.to(at::kFloat));
  expect_identical(file.get("f64", at::kFloat), f64.to(at::kFloat));
  expect_identical(file.get("f32", at::kDouble), f32.to(at::kDouble));
  expect_identical(file.get("f32", at::kBFloat16), f32.to(at::kBFloat16));
}

TEST(SafetensorsTest, IntegerAndBoolTensorsAreNotConverted) {
  const std::string path = temp_path("ints.safetensors");
  save_safetensors(path, {{"ids", sample(at::kLong, {4})},
                          {"mask", sample(at::kBool, {4})},
                          {"w", sample(at::kFloat, {4})}});
  const SafetensorsFile file = SafetensorsFile::open(path);
  expect_error([&] { file.get("ids", at::kFloat); }, {"'ids'", "I64", "cannot be read as F32"});
  expect_error([&] { file.get("mask", at::kByte); }, {"'mask'", "BOOL", "cannot be read as U8"});
  expect_error([&] { file.get("w", at::kLong); }, {"'w'", "F32", "cannot be read as I64"});
  EXPECT_EQ(file.get("ids", at::kLong).scalar_type(), at::kLong);
}

TEST(SafetensorsTest, MetadataRoundTrips) {
  const std::map<std::string, std::string> metadata = {
      {"config", R"({"depth": 2, "names": ["a", "b"]})"},
      {"quote\"back\\slash", "line\nbreak\ttab\x01 ctl"},
      {"unicode", "\xce\xbb \xe2\x86\x92 \xf0\x9f\x98\x80"},
      {"empty", ""}};
  const std::string path = temp_path("meta.safetensors");
  save_safetensors(path, {{"x", sample(at::kFloat, {2})}}, metadata);
  const SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.metadata(), metadata);
  EXPECT_EQ(file.names(), std::vector<std::string>{"x"});
  EXPECT_FALSE(file.contains("__metadata__"));
}

TEST(SafetensorsTest, MissingKeyIsNamed) {
  const SafetensorsFile file = SafetensorsFile::open(write_raw(kF32Entry));
  EXPECT_TRUE(file.contains("w"));
  EXPECT_FALSE(file.contains("nope"));
  EXPECT_EQ(file.size(), 1u);
  expect_error([&] { file.info("nope"); }, {"no tensor named", "nope", file.path().c_str()});
  expect_error([&] { file.get("nope"); }, {"no tensor named", "nope"});
  expect_error([&] { file.get("nope", at::kFloat); }, {"no tensor named", "nope"});
}

TEST(SafetensorsTest, GetReturnsAnIndependentCopy) {
  const at::Tensor want = sample(at::kFloat, {16});
  const std::string path = temp_path("copy.safetensors");
  save_safetensors(path, {{"x", want}});
  at::Tensor first;
  {
    const SafetensorsFile file = SafetensorsFile::open(path);
    first = file.get("x");
    first.fill_(7);
    expect_identical(file.get("x"), want);
  }  // Unmapped here; the copy stays valid.
  EXPECT_EQ(first.sum().item<float>(), 112.0f);
}

TEST(SafetensorsTest, MovesTransferTheMapping) {
  const at::Tensor want = sample(at::kDouble, {3});
  const std::string path = temp_path("move.safetensors");
  save_safetensors(path, {{"x", want}});
  SafetensorsFile a = SafetensorsFile::open(path);
  SafetensorsFile b = std::move(a);
  expect_identical(b.get("x"), want);
  SafetensorsFile c = SafetensorsFile::open(write_raw(kF32Entry));
  c = std::move(b);
  expect_identical(c.get("x"), want);
  EXPECT_EQ(c.path(), path);
}

TEST(SafetensorsTest, ReplacingAnOpenFileLeavesTheMappingIntact) {
  const at::Tensor old_value = sample(at::kFloat, {8}), new_value = sample(at::kFloat, {8}, 2.0);
  const std::string path = temp_path("replace.safetensors");
  save_safetensors(path, {{"x", old_value}});
  const SafetensorsFile file = SafetensorsFile::open(path);
  save_safetensors(path, {{"x", new_value}});  // Renamed into place, not rewritten.
  expect_identical(file.get("x"), old_value);
  expect_identical(SafetensorsFile::open(path).get("x"), new_value);
}

TEST(SafetensorsTest, ReadsUnalignedData) {
  // One U8 byte, then F64 and I32 data at odd addresses of the page-aligned mapping.
  std::string header = R"({"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                       R"("x":{"dtype":"F64","shape":[3],"data_offsets":[1,25]},)"
                       R"("i":{"dtype":"I32","shape":[2],"data_offsets":[25,33]}})";
  while ((header.size() + 9) % 8 != 3) header += ' ';  // Data at 3 mod 8 in the mapping.
  const double x[3] = {1.5, -2.25, 1e300};
  const int32_t i[2] = {-7, 123456789};
  std::string data(1, '\x05');
  data.append(reinterpret_cast<const char*>(x), sizeof(x));
  data.append(reinterpret_cast<const char*>(i), sizeof(i));
  const SafetensorsFile file = SafetensorsFile::open(write_raw(header, data));
  EXPECT_EQ(file.get("b").item<uint8_t>(), 5);
  const at::Tensor got_x = file.get("x");
  EXPECT_EQ(got_x[0].item<double>(), 1.5);
  EXPECT_EQ(got_x[1].item<double>(), -2.25);
  EXPECT_EQ(got_x[2].item<double>(), 1e300);
  EXPECT_EQ(file.get("i")[0].item<int32_t>(), -7);
  EXPECT_EQ(file.get("i")[1].item<int32_t>(), 123456789);
}

TEST(SafetensorsTest, ParsesEscapesWhitespaceAndPadding) {
  const std::string header =
      "\n{ \"\\u00e9t\\u00E9\" : {\"shape\": [], \"dtype\": \"F32\", \"data_offsets\": [0, 4]},\r\n"
      "\t\"\\ud83d\\ude00\\/\\\"q\" : {\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[4,4]},\n"
      " \"__metadata__\": {\"k\\n\": \"tab\\there \\\\ \\u0041\"} }      ";
  const SafetensorsFile file = SafetensorsFile::open(write_raw(header));
  EXPECT_EQ(file.names(), (std::vector<std::string>{"\xc3\xa9t\xc3\xa9", "\xf0\x9f\x98\x80/\"q"}));
  EXPECT_EQ(file.metadata().at("k\n"), "tab\there \\ A");
  EXPECT_EQ(file.get("\xc3\xa9t\xc3\xa9").item<float>(), 0.0f);
}

TEST(SafetensorsTest, EmptyHeaderObjectAndEmptyTensorInsideAnother) {
  EXPECT_TRUE(SafetensorsFile::open(write_raw("{}      ", "")).names().empty());
  const SafetensorsFile file = SafetensorsFile::open(
      write_raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                R"("e":{"dtype":"F32","shape":[0,5],"data_offsets":[4,4]}})"));
  EXPECT_EQ(file.get("e").sizes(), (std::vector<int64_t>{0, 5}));
}

// ---- Malformed files ----

TEST(SafetensorsErrorTest, FileMissingShortOrNotAFile) {
  const std::string missing = temp_path("missing.safetensors");
  expect_error([&] { SafetensorsFile::open(missing); }, {missing.c_str(), "cannot open"});
  const std::string short_path = temp_path("short.safetensors");
  write_bytes(short_path, "abcde");
  expect_error([&] { SafetensorsFile::open(short_path); }, {short_path.c_str(), "too short"});
  write_bytes(short_path, "");
  expect_error([&] { SafetensorsFile::open(short_path); }, {"too short (0 bytes)"});
  expect_error([&] { SafetensorsFile::open(::testing::TempDir()); }, {"not a regular file"});
}

TEST(SafetensorsErrorTest, CutHeaderAndAbsurdLength) {
  const std::string path = temp_path("cut.safetensors");
  save_safetensors(path, {{"x", sample(at::kFloat, {4})}}, {{"note", std::string(100, 'n')}});
  const std::string bytes = read_bytes(path);
  write_bytes(path, bytes.substr(0, 8 + 40));
  expect_error([&] { SafetensorsFile::open(path); }, {path.c_str(), "is larger than the file"});
  write_bytes(path, u64_le(uint64_t{1} << 40) + "{}");
  expect_error([&] { SafetensorsFile::open(path); }, {"exceeds the limit of 100000000"});
  write_bytes(path, u64_le(~uint64_t{0}) + "{}");
  expect_error([&] { SafetensorsFile::open(path); }, {"exceeds the limit"});
}

TEST(SafetensorsErrorTest, TruncatedDataIsBeyondTheDataSection) {
  const std::string path = temp_path("trunc.safetensors");
  save_safetensors(path, {{"x", sample(at::kFloat, {4})}, {"y", sample(at::kFloat, {4})}});
  const std::string bytes = read_bytes(path);
  write_bytes(path, bytes.substr(0, bytes.size() - 3));
  expect_error([&] { SafetensorsFile::open(path); },
               {path.c_str(), "tensor '", "is beyond the data section (29 bytes"});
  expect_open_error(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                    {"tensor 'w'", "data_offsets end 16 is beyond the data section (8 bytes"},
                    std::string(8, '\0'));
}

TEST(SafetensorsErrorTest, CorruptJson) {
  for (const char* header :
       {R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", R"({"a":"x",})", R"({"a" "x"})",
        R"({"a":"\q"})", R"({"a":"x"} x)", "NaN", R"({"a":01})", R"({"a":"unterminated)",
        "{\"a\":\"ctl\x01\"}", R"({"a":[1,]})", R"({"a":tru})", R"({"a":-})", R"({"a":1.})",
        R"({"a":1e})", R"({"a":"\u12G4"})", "", "   ", R"({a:1})"}) {
    expect_open_error(header, {"invalid JSON header at byte"});
  }
  expect_open_error(std::string("{\"a\":1}\0\0", 9),
                    {"invalid JSON header at byte 7", "found byte 0"});
}

TEST(SafetensorsErrorTest, InvalidUtf8AndSurrogates) {
  expect_open_error("{\"\xff\":1}", {"not valid UTF-8 (byte 2"});
  expect_open_error("{\"\xc0\xaf\":1}", {"not valid UTF-8"});          // Overlong '/'.
  expect_open_error("{\"\xed\xa0\x80\":1}", {"not valid UTF-8"});      // Encoded surrogate.
  expect_open_error("{\"\xf4\x90\x80\x80\":1}", {"not valid UTF-8"});  // > U+10FFFF.
  expect_open_error("{\"\xe2\x82\":1}", {"not valid UTF-8"});          // Cut sequence.
  expect_open_error(R"({"\ud800":1})", {"unpaired high surrogate"});
  expect_open_error(R"({"\ud800\u0041":1})", {"unpaired high surrogate"});
  expect_open_error(R"({"\udc00":1})", {"unpaired low surrogate"});
}

TEST(SafetensorsErrorTest, DeepNestingAndWrongTopLevel) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  expect_open_error("{\"__metadata__\":{\"k\":" + deep + "}}", {"nested deeper than 128"});
  const std::string nested = std::string(50, '[') + std::string(50, ']');
  expect_open_error("{\"__metadata__\":{\"k\":" + nested + "}}",
                    {"__metadata__ value of 'k' must be a string (got an array)"});
  expect_open_error("[1,2]", {"header must be a JSON object (got an array)"});
  expect_open_error(R"({"__metadata__":["a"]})", {"__metadata__ must be an object"});
  expect_open_error(R"({"__metadata__":{"n":1}})", {"value of 'n' must be a string"});
  expect_open_error(R"({"w":[1]})", {"tensor 'w'", "entry must be an object"});
}

TEST(SafetensorsErrorTest, UnknownDtype) {
  expect_open_error(R"({"w":{"dtype":"F8","shape":[2],"data_offsets":[0,2]}})",
                    {"tensor 'w'", "unknown dtype 'F8'"});
  expect_open_error(R"({"w":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})",
                    {"tensor 'w'", "unknown dtype 'f32'"});
  expect_open_error(R"({"w":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})",
                    {"tensor 'w'", "dtype must be a string (got a number)"});
}

TEST(SafetensorsErrorTest, BadShapes) {
  const auto entry = [](const std::string& shape) {
    return R"({"w":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,8]}})";
  };
  expect_open_error(entry("[-1]"), {"tensor 'w'", "non-negative integers (got -1)"});
  expect_open_error(entry("[2, 1.5]"), {"tensor 'w'", "non-negative integers (got 1.5)"});
  expect_open_error(entry("[1e2]"), {"tensor 'w'", "(got 1e2)"});
  expect_open_error(entry(R"(["2"])"), {"tensor 'w'", "(got a string)"});
  expect_open_error(entry("2"), {"tensor 'w'", "shape must be an array"});
  expect_open_error(entry("[9223372036854775808]"), {"shape value", "is too large"});
  std::string many = "[1";
  for (int i = 0; i < 64; ++i) many += ",1";
  expect_open_error(entry(many + "]"), {"tensor 'w'", "shape has more than 64 values"});
  expect_open_error(entry("[4294967296,4294967296]"), {"tensor 'w'", "is too large"});
  expect_open_error(entry("[0,4294967296,4294967296]"), {"tensor 'w'", "is too large"});
}

TEST(SafetensorsErrorTest, BadDataOffsets) {
  const auto entry = [](const std::string& offsets) {
    return R"({"w":{"dtype":"F32","shape":[2],"data_offsets":)" + offsets + "}}";
  };
  expect_open_error(entry("[0]"), {"tensor 'w'", "data_offsets must be 2 integers"});
  expect_open_error(entry("[0,4,8]"), {"tensor 'w'", "data_offsets has more than 2 values"});
  expect_open_error(entry("[8,4]"), {"tensor 'w'", "begin 8 > end 4"});
  expect_open_error(entry("[-1,7]"), {"tensor 'w'", "(got -1)"});
  expect_open_error(entry("[0,18446744073709551616]"), {"data_offsets value", "too large"});
  expect_open_error(entry("{}"), {"tensor 'w'", "data_offsets must be an array"});
}

TEST(SafetensorsErrorTest, WrongByteSize) {
  expect_open_error(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})",
                    {"tensor 'w'", "byte size 20", "does not match shape [2, 3] x F32 = 24"});
  expect_open_error(R"({"s":{"dtype":"F64","shape":[],"data_offsets":[0,4]}})",
                    {"tensor 's'", "does not match shape [] x F64 = 8"});
}

TEST(SafetensorsErrorTest, OverlappingTensors) {
  expect_open_error(R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},)"
                    R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                    {"tensors 'a' (bytes [0, 8)) and 'b' (bytes [4, 12)) overlap"});
  // A long tensor covering two later ones: the overlap is found against the furthest end.
  expect_open_error(R"({"big":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                    R"("c":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},)"
                    R"("d":{"dtype":"U8","shape":[1],"data_offsets":[12,13]}})",
                    {"'big'", "'c'", "overlap"});
  expect_open_error(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("y":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
                    {"'x'", "'y'", "overlap"});
}

TEST(SafetensorsErrorTest, DuplicateUnknownAndMissingFields) {
  expect_open_error(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                    R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                    {"duplicate key 'w'"});
  expect_open_error(R"({"w":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                    {"tensor 'w'", "duplicate field 'dtype'"});
  expect_open_error(R"({"__metadata__":{"k":"a","k":"b"}})", {"duplicate __metadata__ key 'k'"});
  expect_open_error(R"({"__metadata__":{},"__metadata__":{}})", {"duplicate key '__metadata__'"});
  expect_open_error(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})",
                    {"tensor 'w'", "unknown field 'x'"});
  expect_open_error(R"({"w":{"dtype":"F32","shape":[1]}})",
                    {"tensor 'w'", "missing field 'data_offsets'"});
  expect_open_error(R"({"w":{}})", {"tensor 'w'", "missing field 'dtype'"});
}

TEST(SafetensorsErrorTest, InvalidBoolByteIsRejectedOnGet) {
  const SafetensorsFile file =
      SafetensorsFile::open(write_raw(R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})",
                                      std::string("\x01\x00\x02", 3)));
  expect_error([&] { file.get("m"); }, {"tensor 'm'", "element 2 holds byte 2"});
}

// ---- load_strict ----

class LoadStrictTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = temp_path("strict.safetensors");
    save_safetensors(path_, {{"a.weight", sample(at::kDouble, {2, 3})},
                             {"b.bias", sample(at::kHalf, {4})},
                             {"scale", sample(at::kDouble, {})},
                             {"ids", sample(at::kLong, {5})}});
  }
  std::string path_;
};

TEST_F(LoadStrictTest, LoadsAndConverts) {
  const SafetensorsFile file = SafetensorsFile::open(path_);
  const auto loaded =
      load_strict(file, {{"a.weight", {2, 3}}, {"b.bias", {4}}, {"scale", {}}}, at::kFloat, true);
  ASSERT_EQ(loaded.size(), 3u);
  for (const auto& [name, tensor] : loaded) {
    EXPECT_EQ(tensor.scalar_type(), at::kFloat) << name;
    expect_identical(tensor, file.get(name).to(at::kFloat));
  }
  EXPECT_EQ(loaded.at("scale").dim(), 0);
  const auto ids = load_strict(file, {{"ids", {5}}}, at::kLong, /*allow_extra=*/true);
  expect_identical(ids.at("ids"), file.get("ids"));
}

TEST_F(LoadStrictTest, NamesMissingKeys) {
  const SafetensorsFile file = SafetensorsFile::open(path_);
  expect_error(
      [&] {
        load_strict(file, {{"a.weight", {2, 3}}, {"c.weight", {1}}, {"d", {}}}, at::kFloat, true);
      },
      {path_.c_str(), "strict load of 3 tensors failed", "2 missing keys: 'c.weight', 'd'"});
}

TEST_F(LoadStrictTest, RejectsExtraKeysUnlessAllowed) {
  const SafetensorsFile file = SafetensorsFile::open(path_);
  const std::vector<ExpectedTensor> expected = {{"a.weight", {2, 3}}, {"b.bias", {4}}};
  expect_error([&] { load_strict(file, expected, at::kFloat); },
               {"2 unexpected keys: 'ids', 'scale'"});
  EXPECT_EQ(load_strict(file, expected, at::kFloat, /*allow_extra=*/true).size(), 2u);
}

TEST_F(LoadStrictTest, NamesShapeMismatches) {
  const SafetensorsFile file = SafetensorsFile::open(path_);
  expect_error(
      [&] {
        load_strict(file, {{"a.weight", {3, 2}}, {"scale", {1}}}, at::kFloat, true);
      },
      {"shape mismatch for 'a.weight': expected [3, 2], got [2, 3]",
       "shape mismatch for 'scale': expected [1], got []"});
}

TEST_F(LoadStrictTest, ReportsEveryProblemAtOnce) {
  const SafetensorsFile file = SafetensorsFile::open(path_);
  expect_error(
      [&] {
        load_strict(file, {{"a.weight", {6}}, {"ids", {5}}, {"x", {}}}, at::kFloat);
      },
      {"1 missing keys: 'x'", "2 unexpected keys: 'b.bias', 'scale'",
       "shape mismatch for 'a.weight': expected [6], got [2, 3]",
       "'ids' is I64 and cannot be read as F32"});
  expect_error(
      [&] {
        load_strict(file, {{"scale", {}}, {"scale", {}}}, at::kFloat, true);
      },
      {"key 'scale' is expected twice"});
}

// ---- Writer errors ----

TEST(SafetensorsWriterTest, RejectsBadInputs) {
  const std::string path = temp_path("bad.safetensors");
  expect_error(
      [&] {
        save_safetensors(path, {{"__metadata__", at::zeros({1})}});
      },
      {"'__metadata__' is reserved"});
  expect_error(
      [&] {
        save_safetensors(path, {{"c", at::zeros({2}, at::kComplexFloat)}});
      },
      {"tensor 'c'", "ComplexFloat"});
  expect_error([&] { save_safetensors(path, {{"u", at::Tensor()}}); }, {"'u' is undefined"});
  expect_error([&] { save_safetensors(path, {{"\xff", at::zeros({1})}}); }, {"not valid UTF-8"});
  expect_error([&] { save_safetensors("/nonexistent-dir/x.safetensors", {}); }, {"cannot create"});
  EXPECT_FALSE(fs::exists(path));
}

TEST(SafetensorsWriterTest, WritesNonContiguousAndNegatedViews) {
  const at::Tensor base = sample(at::kFloat, {3, 4});
  const std::string path = temp_path("views.safetensors");
  save_safetensors(path,
                   {{"t", base.t()}, {"slice", base.select(1, 2)}, {"neg", base._neg_view()}});
  const SafetensorsFile file = SafetensorsFile::open(path);
  expect_identical(file.get("t"), base.t().contiguous());
  expect_identical(file.get("slice"), base.select(1, 2).contiguous());
  expect_identical(file.get("neg"), base.neg());
}

// ---- The shared fixtures ----

std::string shared_dir() {
  if (const char* env = std::getenv("KDESERVE_SHARED_DIR"); env != nullptr && *env != '\0') {
    return env;
  }
#ifdef KDESERVE_SOURCE_DIR
  return std::string(KDESERVE_SOURCE_DIR) + "/../shared";
#else
  return "../shared";
#endif
}

TEST(SafetensorsFixtureTest, ReadsKdeformerGlove) {
  const std::string path = shared_dir() + "/fixtures/kdeformer_glove.safetensors";
  if (!fs::exists(path))
    GTEST_SKIP() << "fixture not found: " << path << " (set KDESERVE_SHARED_DIR)";
  const SafetensorsFile file = SafetensorsFile::open(path);

  EXPECT_EQ(file.info("proj").dtype, at::kDouble);
  EXPECT_EQ(file.info("proj").shape, (std::vector<int64_t>{100, 7}));
  EXPECT_EQ(file.get("proj")[0][0].item<double>(), -1.6212133821796382);

  const at::Tensor perm = file.get("lsh_perm");
  EXPECT_EQ(perm.scalar_type(), at::kLong);
  EXPECT_EQ(perm.sizes(), (std::vector<int64_t>{128}));
  EXPECT_TRUE(at::equal(perm.slice(0, 0, 8), at::tensor({0, 1, 3, 2, 6, 7, 5, 4}, at::kLong)));
  EXPECT_TRUE(at::equal(std::get<0>(perm.sort()), at::arange(128, at::kLong)));  // A permutation.

  const at::Tensor lambda = file.get("lambda");
  EXPECT_EQ(lambda.scalar_type(), at::kDouble);
  EXPECT_EQ(lambda.dim(), 0);
  EXPECT_NEAR(lambda.item<double>(), 4107.0107, 1e-3);
  EXPECT_NEAR(file.get("lambda", at::kFloat).item<float>(), 4107.0107f, 1e-2f);

  EXPECT_EQ(file.info("glove_qk_rows").dtype, at::kFloat);
  const auto loaded = load_strict(file, {{"glove_qk_rows", {2048, 100}}, {"proj", {100, 7}}},
                                  at::kFloat, /*allow_extra=*/true);
  EXPECT_FLOAT_EQ(loaded.at("glove_qk_rows")[0][0].item<float>(), -0.038194f);  // GloVe "the".
  EXPECT_TRUE(at::isfinite(loaded.at("glove_qk_rows")).all().item<bool>());

  ASSERT_EQ(file.metadata().count("io_tensors"), 1u);
  EXPECT_NE(file.metadata().at("io_tensors").find("\"lsh_perm\""), std::string::npos);
  ASSERT_EQ(file.metadata().count("tolerance"), 1u);
  EXPECT_FALSE(file.metadata().at("tolerance").empty());
}

TEST(SafetensorsFixtureTest, EveryFixtureReadsCompletely) {
  const fs::path dir = fs::path(shared_dir()) / "fixtures";
  if (!fs::is_directory(dir)) GTEST_SKIP() << "fixture folder not found: " << dir;
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    SCOPED_TRACE(entry.path().string());
    ++files;
    const SafetensorsFile file = SafetensorsFile::open(entry.path().string());
    EXPECT_FALSE(file.names().empty());
    EXPECT_EQ(file.metadata().count("io_tensors"), 1u);
    for (const std::string& name : file.names()) {
      const at::Tensor t = file.get(name);
      EXPECT_EQ(t.sizes().vec(), file.info(name).shape) << name;
    }
  }
  if (files == 0) GTEST_SKIP() << "no .safetensors files in " << dir;
}

}  // namespace
}  // namespace kdeserve::models
