// moe::cuda_info() for builds with the CUDA backend: what the statically linked runtime finds on this machine.
#include <cuda_runtime_api.h>

#include "core/backend-factory.h"

#ifndef MOESERVE_CUDA_ARCHS
#define MOESERVE_CUDA_ARCHS ""
#endif

namespace moe {

CudaInfo cuda_info() {
  CudaInfo info;
  info.compiled = true;
  info.archs = MOESERVE_CUDA_ARCHS;
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    switch (e) {
      case cudaErrorNoDevice: info.why_not = "no CUDA device"; break;
      case cudaErrorInsufficientDriver:
        info.why_not = "no CUDA driver, or one older than this build's CUDA runtime (" + std::to_string(CUDART_VERSION / 1000) +
                       "." + std::to_string(CUDART_VERSION % 1000 / 10) + ")";
        break;
      default: info.why_not = std::string("CUDA runtime error: ") + cudaGetErrorString(e); break;
    }
    cudaGetLastError();  // clear it: cuda_info must leave no sticky state behind
    return info;
  }
  for (int d = 0; d < n; d++) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, d) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    CudaDeviceInfo di;
    di.ordinal = d;
    di.name = p.name;
    di.total_memory = p.totalGlobalMem;
    di.major = p.major;
    di.minor = p.minor;
    info.devices.push_back(di);
  }
  if (info.devices.empty()) {
    info.why_not = "no CUDA device";
    return info;
  }
  // Kernels are built for sm_80 and newer (bf16 tensor cores); compute_80 PTX lets later GPUs JIT.
  bool any = false;
  for (const auto& d : info.devices) any = any || d.major >= 8;
  if (!any) {
    info.why_not = "no CUDA device of compute capability 8.0 or newer (" + info.devices[0].name + " is " +
                   std::to_string(info.devices[0].major) + "." + std::to_string(info.devices[0].minor) + ")";
    return info;
  }
  info.usable = true;
  return info;
}

}  // namespace moe
