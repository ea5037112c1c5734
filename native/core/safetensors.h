// safetensors files, validated and memory-mapped read-only.
//
// Layout: 8-byte little-endian header length N, N bytes of JSON header, then the data
// region. Each header entry maps a tensor name to {dtype, shape, data_offsets:[begin,end]}
// with offsets relative to the data region; "__metadata__" (an object of strings) is skipped.
//
// Every header is checked on open (lengths, JSON, types, supported dtype, offsets inside
// the data region, nbytes == dtype size × numel, no two tensors overlapping); any failure is
// a LoadError whose message names the file and, where there is one, the tensor.
// Gaps between tensors are tolerated.
//
// ALIGNMENT: TensorView::data points straight into the mapping at 8 + N + begin; the format
// does not guarantee any alignment, so readers must not assume even 2- or 4-byte alignment
// (load through memcpy or unaligned SIMD loads).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace moe {

enum class DType { BF16, F16, F32 };
size_t dtype_size(DType);
const char* dtype_name(DType);  // "BF16", "F16", "F32"

struct TensorView {
  std::string name;
  std::string file;  // path as opened
  DType dtype;
  std::vector<int64_t> shape;  // [] is a scalar (numel 1)
  const void* data;            // into the mapping; unaligned, valid while its file lives
  size_t nbytes;
  int64_t numel() const;
};

class LoadError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class SafetensorsFile {  // owns one read-only mmap
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);  // throws LoadError
  ~SafetensorsFile();                                                     // munmap + close
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::vector<TensorView>& tensors() const { return tensors_; }  // header order
  const std::string& path() const { return path_; }
  size_t file_size() const { return size_; }
  void advise_willneed() const;  // madvise(WILLNEED) over the data region; a hint, never fails
  // mlock() of the whole mapping (faults it in; munmap unlocks): "" on success, else the reason.
  std::string lock_memory() const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  int fd_ = -1;
  void* map_ = nullptr;
  size_t size_ = 0;
  size_t data_start_ = 0;  // 8 + header length
  std::vector<TensorView> tensors_;
};

class TensorSet {  // every file of one checkpoint
 public:
  // Throws LoadError on a tensor name present in two files (naming both files).
  void add(std::unique_ptr<SafetensorsFile> f);
  const TensorView* find(const std::string& name) const;  // nullptr if absent
  // Throws LoadError: "missing tensor NAME (searched N files: ...)" /
  // "tensor NAME in FILE has shape [a, b], expected [c, d]". The dtype is not checked here.
  const TensorView& require(const std::string& name, const std::vector<int64_t>& shape) const;
  size_t total_bytes() const { return total_bytes_; }  // sum of every tensor's nbytes
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::unordered_map<std::string, const TensorView*> by_name_;
  size_t total_bytes_ = 0;
};

// mlock() of [p, p + n): "" on success, else the reason.
std::string lock_range(const void* p, size_t n);
// Drops the whole pages inside [p, p + n) of a read-only file mapping from this process (they stay readable:
// a later access faults them back in from the page cache or the file).
void release_range(const void* p, size_t n);

std::string shape_str(const std::vector<int64_t>& shape);  // "[a, b]"

}  // namespace moe
