// Run-time choice of the kernel set: the CPU's features (cpuid + OS support for the registers) cap the choice,
// MOESERVE_SIMD=scalar|avx2|avx512|avx512bf16 may lower it (tests run every set this machine has against the scalar one).
#include <cpuid.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cpu/kernels.h"

namespace moe {
namespace {

struct Features {
  bool avx2 = false, avx512 = false, avx512bf16 = false;
};

uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

Features detect() {
  Features f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29);
  if (!osxsave) return f;
  const uint64_t xcr0 = xgetbv0();
  const bool ymm = (xcr0 & 0x6) == 0x6, zmm = (xcr0 & 0xe6) == 0xe6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  f.avx2 = ymm && fma && f16c && (b & (1u << 5));
  f.avx512 = f.avx2 && zmm && (b & (1u << 16)) && (b & (1u << 30)) && (b & (1u << 31));  // F, BW, VL
  unsigned a1, b1, c1, d1;
  if (f.avx512 && __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) f.avx512bf16 = a1 & (1u << 5);
  return f;
}

const Features& features() {
  static const Features f = detect();
  return f;
}

}  // namespace

const char* cpu_simd_level() {
  const Features& f = features();
  return f.avx512bf16 ? "avx512bf16" : f.avx512 ? "avx512" : f.avx2 ? "avx2" : "scalar";
}

const KernelSet& select_kernels() {
  const Features& f = features();
  const char* want = std::getenv("MOESERVE_SIMD");
  const bool allow_bf16 = !want || std::strcmp(want, "avx512bf16") == 0;
  const bool allow512 = allow_bf16 || std::strcmp(want, "avx512") == 0;
  const bool allow2 = allow512 || std::strcmp(want, "avx2") == 0;
  if (f.avx512bf16 && allow_bf16) return kernels_avx512bf16();
  if (f.avx512 && allow512) return kernels_avx512();
  if (f.avx2 && allow2) return kernels_avx2();
  return kernels_scalar();
}

const KernelSet& kernels_by_name(const std::string& name) {
  const Features& f = features();
  if (name == "scalar") return kernels_scalar();
  if (name == "avx2" && f.avx2) return kernels_avx2();
  if (name == "avx512" && f.avx512) return kernels_avx512();
  if (name == "avx512bf16" && f.avx512bf16) return kernels_avx512bf16();
  if (name == "avx2" || name == "avx512" || name == "avx512bf16") {
    throw std::runtime_error(std::string("this CPU cannot run the ") + name + " kernel set (it offers " + cpu_simd_level() + ")");
  }
  throw std::runtime_error("unknown CPU kernel set \"" + name + "\" (scalar, avx2, avx512 or avx512bf16)");
}

}  // namespace moe
