#include "safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <numeric>

#include "json.h"

namespace moe {

namespace {

constexpr uint64_t kMaxHeader = 100ull * 1000 * 1000;  // real headers are well under 10 MB

[[noreturn]] void fail(const std::string& path, const std::string& what) { throw LoadError(path + ": " + what); }
[[noreturn]] void fail_tensor(const std::string& path, const std::string& name, const std::string& what) {
  fail(path, "tensor " + name + ": " + what);
}

std::string offsets_str(uint64_t b, uint64_t e) { return "[" + std::to_string(b) + ", " + std::to_string(e) + "]"; }

bool parse_dtype(const std::string& s, DType* out) {
  if (s == "BF16") { *out = DType::BF16; return true; }
  if (s == "F16") { *out = DType::F16; return true; }
  if (s == "F32") { *out = DType::F32; return true; }
  return false;
}

const json::Value& member(const std::string& path, const std::string& name, const json::Value& entry,
                          const char* key, json::Type type) {
  const json::Value* v = entry.find(key);
  if (!v) fail_tensor(path, name, std::string("missing '") + key + "'");
  if (v->type() != type)
    fail_tensor(path, name, std::string("'") + key + "' is a " + json::type_name(v->type()) + ", expected " +
                                json::type_name(type));
  return *v;
}

std::vector<int64_t> int_list(const std::string& path, const std::string& name, const json::Value& arr,
                              const char* key) {
  std::vector<int64_t> out;
  for (const auto& x : arr.as_array()) {
    if (!x.is_int()) fail_tensor(path, name, std::string("'") + key + "' holds a non-integer");
    out.push_back(x.as_int());
  }
  return out;
}

}  // namespace

size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }
const char* dtype_name(DType t) {
  switch (t) {
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::F32: return "F32";
  }
  return "?";
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t TensorView::numel() const {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, [](int64_t a, int64_t b) { return a * b; });
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());  // its destructor cleans up on every throw
  f->path_ = path;
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd_ < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (fstat(f->fd_, &st) != 0) fail(path, std::string("cannot stat: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  f->size_ = size;
  if (size < 8) fail(path, "file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");

  unsigned char len_bytes[8];
  if (pread(f->fd_, len_bytes, 8, 0) != 8) fail(path, "cannot read the header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];  // little-endian
  if (n == 0) fail(path, "header length is 0");
  if (n > kMaxHeader) fail(path, "header length " + std::to_string(n) + " exceeds the 100 MB limit");
  if (n > size - 8)
    fail(path, "header length " + std::to_string(n) + " exceeds the file (" + std::to_string(size - 8) +
                   " bytes after the length prefix)");

  f->map_ = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, f->fd_, 0);
  if (f->map_ == MAP_FAILED) {
    f->map_ = nullptr;
    fail(path, std::string("mmap failed: ") + std::strerror(errno));
  }
  f->data_start_ = 8 + n;
  const char* base = static_cast<const char*>(f->map_);
  const uint64_t data_size = size - 8 - n;

  json::Value header;
  try {
    header = json::parse(base + 8, n);
  } catch (const json::ParseError& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(path, std::string("header is a JSON ") + json::type_name(header.type()) + ", expected an object");

  struct Range { uint64_t b, e; size_t idx; };
  std::vector<Range> ranges;
  for (const auto& [name, entry] : header.as_object()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(path, "__metadata__ is not an object");
      for (const auto& kv : entry.as_object())
        if (!kv.second.is_string()) fail(path, "__metadata__ value '" + kv.first + "' is not a string");
      continue;
    }
    if (!entry.is_object())
      fail_tensor(path, name, std::string("entry is a ") + json::type_name(entry.type()) + ", expected an object");
    TensorView t;
    t.name = name;
    t.file = path;
    const std::string& ds = member(path, name, entry, "dtype", json::Type::String).as_string();
    if (!parse_dtype(ds, &t.dtype))
      fail_tensor(path, name, "unsupported dtype \"" + ds + "\" (supported: BF16, F16, F32)");
    t.shape = int_list(path, name, member(path, name, entry, "shape", json::Type::Array), "shape");
    auto offs = int_list(path, name, member(path, name, entry, "data_offsets", json::Type::Array), "data_offsets");
    if (offs.size() != 2) fail_tensor(path, name, "data_offsets must be [begin, end]");
    if (offs[0] < 0 || offs[1] < 0 || offs[0] > offs[1])
      fail_tensor(path, name, "data_offsets [" + std::to_string(offs[0]) + ", " + std::to_string(offs[1]) +
                                  "] must satisfy 0 <= begin <= end");
    const uint64_t b = offs[0], e = offs[1];
    if (e > data_size)
      fail_tensor(path, name, "data_offsets " + offsets_str(b, e) + " end beyond the data region (" +
                                  std::to_string(data_size) + " bytes)");
    uint64_t need = dtype_size(t.dtype);
    for (int64_t d : t.shape) {
      if (d < 0) fail_tensor(path, name, "negative dimension in shape " + shape_str(t.shape));
      if (__builtin_mul_overflow(need, static_cast<uint64_t>(d), &need))
        fail_tensor(path, name, "shape " + shape_str(t.shape) + " is too large");
    }
    if (need != e - b)
      fail_tensor(path, name, "data_offsets " + offsets_str(b, e) + " span " + std::to_string(e - b) +
                                  " bytes but " + dtype_name(t.dtype) + " " + shape_str(t.shape) + " needs " +
                                  std::to_string(need));
    t.data = base + f->data_start_ + b;
    t.nbytes = e - b;
    ranges.push_back({b, e, f->tensors_.size()});
    f->tensors_.push_back(std::move(t));
  }

  std::sort(ranges.begin(), ranges.end(), [](const Range& x, const Range& y) { return x.b != y.b ? x.b < y.b : x.e < y.e; });
  const Range* prev = nullptr;  // the non-empty range reaching furthest so far
  for (const auto& r : ranges) {
    if (r.b == r.e) continue;  // an empty tensor occupies no bytes
    if (prev && prev->e > r.b)
      fail(path, "tensors " + f->tensors_[prev->idx].name + " " + offsets_str(prev->b, prev->e) + " and " +
                     f->tensors_[r.idx].name + " " + offsets_str(r.b, r.e) + " overlap");
    if (!prev || r.e > prev->e) prev = &r;
  }
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(map_, size_);
  if (fd_ >= 0) ::close(fd_);
}

void SafetensorsFile::advise_willneed() const {
  if (!map_ || data_start_ >= size_) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t start = reinterpret_cast<uintptr_t>(map_) + data_start_;
  const uintptr_t aligned = start & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(map_) + size_;
  madvise(reinterpret_cast<void*>(aligned), end - aligned, MADV_WILLNEED);
}

std::string SafetensorsFile::lock_memory() const {
  if (!map_) return "not mapped";
  return lock_range(map_, size_);
}

std::string lock_range(const void* p, size_t n) {
  if (mlock(p, n) == 0) return "";  // Linux rounds p down to its page
  const int err = errno;  // before strerror, which may touch errno
  return std::string(std::strerror(err)) +
         (err == ENOMEM || err == EPERM ? " (raise `ulimit -l` or grant CAP_IPC_LOCK)" : "");
}

void release_range(const void* p, size_t n) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t start = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n) & ~(page - 1);
  if (end > start) madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED);
}

void TensorSet::add(std::unique_ptr<SafetensorsFile> f) {
  for (const auto& t : f->tensors()) {  // check everything before changing anything
    auto it = by_name_.find(t.name);
    if (it != by_name_.end())
      throw LoadError("tensor " + t.name + " is present in two files: " + it->second->file + " and " + f->path());
  }
  for (const auto& t : f->tensors()) {
    by_name_.emplace(t.name, &t);
    total_bytes_ += t.nbytes;
  }
  files_.push_back(std::move(f));
}

const TensorView* TensorSet::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const TensorView& TensorSet::require(const std::string& name, const std::vector<int64_t>& shape) const {
  const TensorView* t = find(name);
  if (!t) {
    std::string msg = "missing tensor " + name + " (searched " + std::to_string(files_.size()) + " files: ";
    for (size_t i = 0; i < files_.size(); ++i) msg += (i ? ", " : "") + files_[i]->path();
    throw LoadError(msg + ")");
  }
  if (t->shape != shape)
    throw LoadError("tensor " + name + " in " + t->file + " has shape " + shape_str(t->shape) + ", expected " +
                    shape_str(shape));
  return *t;
}

}  // namespace moe
