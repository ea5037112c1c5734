#include "core/backend-factory.h"

#include <stdexcept>

#include "cpu/backend-cpu.h"
#ifdef MOESERVE_WITH_CUDA
#include "cuda/backend-cuda.h"
#endif

namespace moe {

std::unique_ptr<Backend> make_backend(const BackendOptions& o) {
  if (o.kind == "cpu") {
    const KernelSet& exact = o.cpu_kernels.empty() ? select_kernels() : kernels_by_name(o.cpu_kernels);
    const KernelSet& k = o.bf16_activations && exact.with_bf16_activations ? *exact.with_bf16_activations : exact;
    return std::make_unique<CpuBackend>(o.threads, k, o.kv_dtype, &exact);
  }
  if (o.kind == "cuda") {
    if (o.kv_dtype != DType::BF16) {
      throw std::runtime_error("the CUDA backend keeps its KV cache in bf16 only (--kv-cache-dtype auto or bf16; f32 is for the CPU backend)");
    }
#ifdef MOESERVE_WITH_CUDA
    const CudaInfo info = cuda_info();
    if (!info.usable) throw std::runtime_error("CUDA backend not usable: " + info.why_not);
    if (o.device < 0 || o.device >= static_cast<int>(info.devices.size())) {
      throw std::runtime_error("CUDA device " + std::to_string(o.device) + " does not exist (" +
                               std::to_string(info.devices.size()) + " found)");
    }
    return make_cuda_backend(o.device, o.threads);
#else
    throw std::runtime_error("the CUDA backend is not compiled into this build (npm install found no CUDA toolkit; see README)");
#endif
  }
  throw std::runtime_error("unknown backend \"" + o.kind + "\" (cpu or cuda)");
}

#ifndef MOESERVE_WITH_CUDA
CudaInfo cuda_info() {
  CudaInfo i;
  i.why_not = "not compiled in (npm install found no CUDA toolkit)";
  return i;
}
#endif

}  // namespace moe
