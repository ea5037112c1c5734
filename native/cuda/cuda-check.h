// Error checking for CUDA runtime calls and kernel launches: a failure throws std::runtime_error naming the
// call (and the backend op, where given) with the CUDA error string. Launch errors surface at the launch's
// cuda_check_launch; faults inside a kernel at the next call that synchronises.
#pragma once
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace moe {

[[noreturn]] inline void cuda_fail(const char* op, const char* call, cudaError_t e) {
  throw std::runtime_error(std::string("CUDA ") + (op ? std::string(op) + ": " : std::string()) + call + " failed: " +
                           cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ")");
}

inline void cuda_check_launch(const char* op) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) cuda_fail(op, "kernel launch", e);
}

}  // namespace moe

// CUDA_CHECK(call); CUDA_CHECK_OP(op, call) where op names the backend operation ("place_weights", "attention").
#define CUDA_CHECK_OP(op, call)                                                       \
  do {                                                                                \
    const cudaError_t cuda_check_e_ = (call);                                         \
    if (cuda_check_e_ != cudaSuccess) ::moe::cuda_fail(op, #call, cuda_check_e_);     \
  } while (0)
#define CUDA_CHECK(call) CUDA_CHECK_OP(nullptr, call)
