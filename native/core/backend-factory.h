// Picks and builds a backend by name; the one place that knows which backends this build has.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"

namespace moe {

struct BackendOptions {
  std::string kind = "cpu";  // "cpu" | "cuda"
  int threads = 1;           // CPU worker threads (CUDA: host threads for load-time work)
  int device = 0;            // CUDA device ordinal
  std::string cpu_kernels;   // CPU kernel set by name ("scalar", "avx2", ...); "" = the best this CPU runs
  DType kv_dtype = DType::F32;  // the KV cache's storage: F32 (CPU only; CUDA refuses it) or BF16
  // --dtype bfloat16: the CPU's bf16 matmuls round their activations to bf16 where the kernel set has that mode
  // (KernelSet::with_bf16_activations), as llama.cpp does; the router stays exact. CUDA ignores it.
  bool bf16_activations = false;
};

// Throws std::runtime_error naming why when the kind is unknown, not compiled in, or not usable here.
std::unique_ptr<Backend> make_backend(const BackendOptions& o);

struct CudaDeviceInfo {
  int ordinal = 0;
  std::string name;
  size_t total_memory = 0;
  int major = 0, minor = 0;  // compute capability
};

// What this build and machine offer for CUDA; never throws, loads on a machine without driver or GPU.
struct CudaInfo {
  bool compiled = false;
  std::string archs;  // the architectures compiled for, e.g. "sm_80 sm_89 sm_90a"
  bool usable = false;
  std::string why_not;  // when not usable: no driver, no device, runtime error text
  std::vector<CudaDeviceInfo> devices;
};
CudaInfo cuda_info();

}  // namespace moe
