// Standalone tests for native/core/json.* and native/core/safetensors.* (not part of the addon).
// Build and run (from the repo root):
//   g++ -std=c++17 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -Inative/core native/tests/*.cpp native/core/json.cpp native/core/safetensors.cpp -o /tmp/safetensors-test && /tmp/safetensors-test [--fuzz N]
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>

#include "../core/safetensors.h"
#include "test-util.h"

void run_json_tests();
void run_json_fuzz(int iterations, uint64_t seed);
void run_coded_tests();

using moe::DType;
using moe::LoadError;
using moe::SafetensorsFile;
using moe::TensorSet;

namespace {

std::string g_dir;
int g_counter = 0;

std::string write_raw(const std::string& bytes) {
  std::string path = g_dir + "/f" + std::to_string(g_counter++) + ".safetensors";
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

// A file from a header text and a data region.
std::string write_st(const std::string& header, const std::string& data) {
  return write_raw(le64(header.size()) + header + data);
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, uint64_t b, uint64_t e) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
         std::to_string(b) + "," + std::to_string(e) + "]}";
}

std::string bytes(size_t n, int seed = 1) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 31 + seed) & 0xFF);
  return s;
}

void test_good_files() {
  // Header of odd length so the data region (and BF16 at offset 0) starts unaligned.
  std::string h = "{\"__metadata__\":{\"format\":\"pt\"}," + entry("a.bf16", "BF16", "[2,3]", 0, 12) + "," +
                  entry("b.f32", "F32", "[3]", 12, 24) + "," + entry("c.f16", "F16", "[]", 24, 26) + "," +
                  entry("d.empty", "F32", "[0,5]", 26, 26) + "}";
  if (h.size() % 2 == 0) h += " ";  // trailing spaces are valid padding
  std::string data = bytes(26);
  std::string path = write_st(h, data);
  auto f = SafetensorsFile::open(path);
  CHECK(f->path() == path);
  CHECK(f->file_size() == 8 + h.size() + 26);
  const auto& ts = f->tensors();
  CHECK(ts.size() == 4);
  CHECK(ts[0].name == "a.bf16" && ts[0].dtype == DType::BF16 && ts[0].shape == (std::vector<int64_t>{2, 3}));
  CHECK(ts[0].numel() == 6 && ts[0].nbytes == 12 && ts[0].file == path);
  CHECK(std::memcmp(ts[0].data, data.data(), 12) == 0);
  CHECK(ts[1].dtype == DType::F32 && ts[1].nbytes == 12);
  CHECK(std::memcmp(ts[1].data, data.data() + 12, 12) == 0);
  CHECK(ts[2].dtype == DType::F16 && ts[2].shape.empty() && ts[2].numel() == 1 && ts[2].nbytes == 2);
  CHECK(ts[3].numel() == 0 && ts[3].nbytes == 0);
  f->advise_willneed();
  CHECK(moe::dtype_size(DType::BF16) == 2 && moe::dtype_size(DType::F16) == 2 && moe::dtype_size(DType::F32) == 4);
  CHECK(std::string(moe::dtype_name(DType::BF16)) == "BF16");

  // No tensors and an empty data region.
  auto empty = SafetensorsFile::open(write_st("{}", ""));
  CHECK(empty->tensors().empty());
  empty->advise_willneed();
  auto meta_only = SafetensorsFile::open(write_st("{\"__metadata__\":{}}  ", ""));
  CHECK(meta_only->tensors().empty());
  // Gaps between tensors and out-of-order offsets are accepted.
  auto gaps = SafetensorsFile::open(write_st("{" + entry("y", "F32", "[1]", 8, 12) + "," + entry("x", "F32", "[1]", 0, 4) + "}", bytes(16)));
  CHECK(gaps->tensors().size() == 2 && gaps->tensors()[0].name == "y");
  // Zero-size tensors may sit anywhere, including inside another tensor's range.
  auto zero = SafetensorsFile::open(write_st("{" + entry("x", "F32", "[2]", 0, 8) + "," + entry("z", "BF16", "[0]", 4, 4) + "}", bytes(8)));
  CHECK(zero->tensors().size() == 2);
}

struct BadCase {
  const char* label;
  std::string header;   // empty: use raw
  std::string data;
  std::string raw;      // whole file when header is empty
  std::vector<std::string> needles;  // besides the file path
};

void test_bad_files() {
  const std::string e12 = entry("w", "BF16", "[2,3]", 0, 12);
  std::vector<BadCase> cases = {
      {"empty file", "", "", "", {"too short for the 8-byte header length"}},
      {"7 bytes", "", "", "abcdefg", {"file is 7 bytes"}},
      {"header length 0", "", "", le64(0) + "{}", {"header length is 0"}},
      {"header length > file", "", "", le64(100) + "{}", {"header length 100 exceeds the file (2 bytes"}},
      {"header length huge", "", "", le64(1ull << 62) + "{}", {"exceeds the 100 MB limit"}},
      {"header length > 100MB", "", "", le64(100000001) + "{}", {"exceeds the 100 MB limit"}},
      {"not json", "{\"w\":", "", "", {"header is not valid JSON", "unexpected end of input"}},
      {"trailing garbage", "{}x", "", "", {"header is not valid JSON", "trailing"}},
      {"not an object", "[1,2]", "", "", {"header is a JSON array, expected an object"}},
      {"entry not object", "{\"w\":3}", "", "", {"tensor w: entry is a number, expected an object"}},
      {"missing dtype", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", bytes(4), "", {"tensor w: missing 'dtype'"}},
      {"missing shape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", bytes(4), "", {"tensor w: missing 'shape'"}},
      {"missing offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", bytes(4), "", {"tensor w: missing 'data_offsets'"}},
      {"dtype not string", "{\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", bytes(4), "", {"tensor w: 'dtype' is a number, expected string"}},
      {"shape not array", "{\"w\":{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[0,4]}}", bytes(4), "", {"tensor w: 'shape' is a object, expected array"}},
      {"shape float", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", bytes(4), "", {"tensor w: 'shape' holds a non-integer"}},
      {"offsets strings", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",\"4\"]}}", bytes(4), "", {"tensor w: 'data_offsets' holds a non-integer"}},
      {"dtype I8", "{" + entry("w", "I8", "[4]", 0, 4) + "}", bytes(4), "", {"tensor w: unsupported dtype \"I8\" (supported: BF16, F16, F32)"}},
      {"dtype F64", "{" + entry("w", "F64", "[1]", 0, 8) + "}", bytes(8), "", {"unsupported dtype \"F64\""}},
      {"dtype FOO", "{" + entry("w", "FOO", "[1]", 0, 4) + "}", bytes(4), "", {"unsupported dtype \"FOO\""}},
      {"dtype lowercase", "{" + entry("w", "bf16", "[2]", 0, 4) + "}", bytes(4), "", {"unsupported dtype \"bf16\""}},
      {"negative dim", "{" + entry("w", "F32", "[-1,2]", 0, 4) + "}", bytes(4), "", {"tensor w: negative dimension in shape [-1, 2]"}},
      {"offsets 3 items", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", bytes(8), "", {"tensor w: data_offsets must be [begin, end]"}},
      {"offsets 1 item", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}", bytes(8), "", {"tensor w: data_offsets must be [begin, end]"}},
      {"begin > end", "{" + entry("w", "F32", "[1]", 8, 4) + "}", bytes(8), "", {"tensor w: data_offsets [8, 4] must satisfy 0 <= begin <= end"}},
      {"negative begin", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", bytes(8), "", {"tensor w: data_offsets [-4, 0]"}},
      {"end beyond data", "{" + e12 + "}", bytes(11), "", {"tensor w: data_offsets [0, 12] end beyond the data region (11 bytes)"}},
      {"huge end", "{" + entry("w", "F32", "[1]", 0, 1ull << 62) + "}", bytes(8), "", {"tensor w:", "end beyond the data region (8 bytes)"}},
      {"nbytes mismatch", "{" + entry("w", "F32", "[2,3]", 0, 12) + "}", bytes(24), "", {"tensor w: data_offsets [0, 12] span 12 bytes but F32 [2, 3] needs 24"}},
      {"shape overflow", "{" + entry("w", "F32", "[4294967296,4294967296]", 0, 0) + "}", "", "", {"tensor w: shape [4294967296, 4294967296] is too large"}},
      {"shape overflow to 0", "{" + entry("w", "BF16", "[9223372036854775807,2]", 0, 0) + "}", "", "", {"tensor w:", "is too large"}},
      {"overlap", "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 4, 12) + "}", bytes(12), "", {"tensors a [0, 8] and b [4, 12] overlap"}},
      {"overlap nested", "{" + entry("big", "F32", "[4]", 0, 16) + "," + entry("m", "F32", "[1]", 8, 12) + "," + entry("n", "F32", "[1]", 12, 16) + "}", bytes(16), "", {"tensors big [0, 16] and m [8, 12] overlap"}},
      {"overlap same range", "{" + entry("p", "F32", "[1]", 0, 4) + "," + entry("q", "F32", "[1]", 0, 4) + "}", bytes(4), "", {"overlap", "[0, 4]"}},
      {"duplicate key", "{" + e12 + "," + e12 + "}", bytes(12), "", {"header is not valid JSON: duplicate object key \"w\""}},
      {"metadata not object", "{\"__metadata__\":[1]}", "", "", {"__metadata__ is not an object"}},
      {"metadata non-string", "{\"__metadata__\":{\"n\":1}}", "", "", {"__metadata__ value 'n' is not a string"}},
  };
  for (const auto& c : cases) {
    std::string path = c.header.empty() ? write_raw(c.raw) : write_st(c.header, c.data);
    auto needles = c.needles;
    needles.push_back(path + ": ");
    EXPECT_THROW(LoadError, c.label, needles, SafetensorsFile::open(path));
  }
  EXPECT_THROW(LoadError, "missing file", (std::vector<std::string>{g_dir + "/nope.safetensors: cannot open"}),
               SafetensorsFile::open(g_dir + "/nope.safetensors"));
  EXPECT_THROW(LoadError, "directory", (std::vector<std::string>{g_dir + ": not a regular file"}), SafetensorsFile::open(g_dir));
}

void test_tensor_set() {
  std::string p1 = write_st("{" + entry("x", "F32", "[2]", 0, 8) + "," + entry("y", "BF16", "[2,2]", 8, 16) + "}", bytes(16));
  std::string p2 = write_st("{" + entry("z", "F16", "[3]", 0, 6) + "}", bytes(6));
  std::string p3 = write_st("{" + entry("q", "F16", "[1]", 0, 2) + "," + entry("y", "F32", "[1]", 2, 6) + "}", bytes(6));
  TensorSet set;
  set.add(SafetensorsFile::open(p1));
  set.add(SafetensorsFile::open(p2));
  CHECK(set.files().size() == 2);
  CHECK(set.total_bytes() == 22);
  CHECK(set.find("z") && set.find("z")->file == p2);
  CHECK(set.find("nope") == nullptr);
  CHECK(&set.require("y", {2, 2}) == set.find("y"));
  EXPECT_THROW(LoadError, "missing", (std::vector<std::string>{"missing tensor w.missing (searched 2 files: " + p1 + ", " + p2 + ")"}),
               set.require("w.missing", {1}));
  EXPECT_THROW(LoadError, "shape", (std::vector<std::string>{"tensor y in " + p1 + " has shape [2, 2], expected [4, 1]"}),
               set.require("y", {4, 1}));
  EXPECT_THROW(LoadError, "rank", (std::vector<std::string>{"tensor x in " + p1 + " has shape [2], expected [2, 1]"}),
               set.require("x", {2, 1}));
  EXPECT_THROW(LoadError, "duplicate", (std::vector<std::string>{"tensor y is present in two files: " + p1 + " and " + p3}),
               set.add(SafetensorsFile::open(p3)));
  // A rejected file leaves the set as it was.
  CHECK(set.files().size() == 2 && set.find("q") == nullptr && set.total_bytes() == 22);
}

// Mutated headers of a valid file: open either succeeds with every view inside the file or
// throws LoadError; never a crash or sanitizer report.
void fuzz_files(int iterations, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::string h = "{\"__metadata__\":{\"format\":\"pt\"}," + entry("a", "BF16", "[2,3]", 0, 12) + "," +
                        entry("b", "F32", "[3]", 12, 24) + "}";
  int ok = 0;
  for (int it = 0; it < iterations; ++it) {
    std::string file = le64(h.size()) + h + bytes(24);
    for (int m = 1 + static_cast<int>(rng() % 3); m > 0; --m) {
      size_t pos = rng() % file.size();
      if (rng() % 4 == 0) file.resize(pos);
      else if (!file.empty()) file[pos] = "0123456789[]{},:\"-"[rng() % 18];
      if (file.empty()) break;
    }
    std::string path = g_dir + "/fuzz.safetensors";
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(file.data(), static_cast<std::streamsize>(file.size()));
    try {
      auto f = SafetensorsFile::open(path);
      ++ok;
      for (const auto& t : f->tensors()) {
        volatile char sink = 0;
        for (size_t i = 0; i < t.nbytes; ++i) sink = sink + static_cast<const char*>(t.data)[i];  // ASan-visible reads
        CHECK(t.nbytes == static_cast<size_t>(t.numel()) * moe::dtype_size(t.dtype));
      }
    } catch (const LoadError&) {
    } catch (const std::exception& e) {
      CHECK_MSG(false, std::string("unexpected exception ") + e.what());
    }
  }
  std::printf("file fuzz: %d files, %d accepted\n", iterations, ok);
}

}  // namespace

int main(int argc, char** argv) {
  int fuzz = 20000;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--fuzz") fuzz = std::atoi(argv[i + 1]);
  char tmpl[] = "/tmp/safetensors-test-XXXXXX";
  if (!mkdtemp(tmpl)) { std::perror("mkdtemp"); return 2; }
  g_dir = tmpl;

  run_json_tests();
  run_coded_tests();
  test_good_files();
  test_bad_files();
  test_tensor_set();
  run_json_fuzz(fuzz, 12345);
  fuzz_files(fuzz / 10, 777);

  std::string cleanup = "rm -rf '" + g_dir + "'";
  if (std::system(cleanup.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", g_dir.c_str());
  std::printf("%d checks, %d failures\n", moe_test::checks(), moe_test::failures());
  return moe_test::failures() == 0 ? 0 : 1;
}
