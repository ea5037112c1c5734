// The CUDA backend: the Backend of core/backend.h on one NVIDIA GPU. Weights (bf16), activations, the paged
// KV cache (bf16) and sampling live on the device; a step copies in its small index arrays (begin_step) and
// copies out only sampled token ids and logprobs (sample). Compiled only when CMake finds a CUDA toolkit
// (MOESERVE_WITH_CUDA); the runtime is linked statically, so the addon loads where no driver is installed.
#pragma once
#include <memory>

#include "core/backend.h"

namespace moe {

// Throws std::runtime_error when the device cannot be used (cuda_info() says why beforehand).
std::unique_ptr<Backend> make_cuda_backend(int device, int host_threads);

}  // namespace moe
