// --load-format dummy (vLLM's convention): the config's shapes filled with random bf16 weights where the
// backend keeps them, so a model can be run and measured from its config.json alone. Every element is a pure
// function of (tensor id, element index), computed the same way on the host and in a CUDA kernel, so the CPU
// and CUDA backends generate bit-identical weights and can be compared on them.
#pragma once
#include <cstdint>

#include "core/config.h"
#include "core/weights.h"

#if defined(__CUDACC__)
#define MOE_HOST_DEVICE __host__ __device__
#else
#define MOE_HOST_DEVICE
#endif

namespace moe {

// The checkpoint's matrices with their shapes, dtype BF16 and data null (each Matrix::dummy_id set), and the norm
// vectors all ones. The backend's place_weights generates the matrices (fill_dummy_host on the CPU).
ModelWeights dummy_weights(const ModelConfig& cfg);

// Host generation into memory the weights own (ModelWeights::owned), for the CPU backend.
void fill_dummy_host(ModelWeights& w, int threads);

// Uniform in [-scale, scale): scale is 1 for the embedding table, 1/sqrt(cols) for every other matrix, so activations
// keep their size through the layers. A splitmix64 hash of (id, i) gives 24 random bits.
MOE_HOST_DEVICE inline uint16_t dummy_bf16(uint32_t id, uint64_t i, float scale) {
  uint64_t z = (static_cast<uint64_t>(id) << 40) ^ i;
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
  const float x = (2.0f * u - 1.0f) * scale;
  uint32_t b;
#if defined(__CUDA_ARCH__)
  b = __float_as_uint(x);
#else
  __builtin_memcpy(&b, &x, 4);
#endif
  return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);  // round to nearest even (finite x)
}

}  // namespace moe
