// Exponent-coded bf16 (core/coded-bf16.h): coding then decoding gives back every bit, escapes included, for
// rows with zeros, subnormals, infinities, NaNs and outliers; where the CPU has AVX512_BF16, the kernels'
// in-register decoder matches the reference decoder bit for bit, and the fused row dots on coded rows give bit
// for bit what the GEMM path computes (plain row dots on the rows decoded with zero escapes, then add_escapes),
// within f32-level error of a double-precision reference.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/coded-bf16.h"
#include "core/half.h"
#include "core/weights.h"
#include "test-util.h"

namespace {

using moe::CodedBf16;
using moe::Matrix;

struct Case {
  int64_t rows, cols;
  std::vector<uint16_t> w;
  std::unique_ptr<CodedBf16> coded;
};

uint16_t bf16_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

Case make_case(int64_t rows, int64_t cols, uint32_t seed) {
  Case c{rows, cols, std::vector<uint16_t>(static_cast<size_t>(rows * cols)), nullptr};
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::uniform_int_distribution<int> any(0, 0xffff);
  for (auto& v : c.w) v = bf16_of(normal(rng));
  // Specials in the first rows: zeros of both signs, subnormals, the smallest normals, infinities, NaNs, huge
  // and tiny outliers, and a row of nothing but random bit patterns (most of its weights escape).
  const uint16_t specials[] = {0x0000, 0x8000, 0x0001, 0x807f, 0x0080, 0x8080, 0x7f80, 0xff80, 0x7fc1, 0xffff,
                               bf16_of(1000.0f), bf16_of(-3.0e-30f), bf16_of(65504.0f), bf16_of(-1.0e-20f)};
  for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) c.w[(i * 37) % static_cast<size_t>(cols) + (i % 3) * cols] = specials[i];
  if (rows > 4)
    for (int64_t k = 0; k < cols; k++) c.w[4 * cols + k] = static_cast<uint16_t>(any(rng));
  // Finite outliers (escapes) in rows that the fused row dots below run on, first and last columns included.
  if (rows > 9) {
    c.w[6 * cols] = bf16_of(7.5e3f);
    c.w[6 * cols + 130] = bf16_of(-3.0e-12f);
    c.w[8 * cols + cols - 1] = bf16_of(-2.0e4f);
    c.w[9 * cols + 31] = bf16_of(1.0e-25f);
  }
  Matrix m{c.w.data(), moe::DType::BF16, rows, cols};
  c.coded = moe::alloc_coded(m);
  std::vector<std::vector<moe::Escape>> parts(2);
  moe::code_rows(m, 0, rows / 2, *c.coded, parts[0]);
  moe::code_rows(m, rows / 2, rows, *c.coded, parts[1]);
  moe::set_escapes(*c.coded, parts);
  return c;
}

void test_reference_roundtrip() {
  for (int64_t cols : {256, 384, 768, 2048}) {
    Case c = make_case(9, cols, static_cast<uint32_t>(cols));
    CHECK(c.coded->stride % 64 == 0);
    CHECK(c.coded->stride < cols * 2);  // it is smaller than bf16
    CHECK(c.coded->row_has_escapes(4));  // the random row
    std::vector<uint16_t> d(static_cast<size_t>(cols));
    int64_t bad = 0;
    for (int64_t r = 0; r < c.rows; r++) {
      moe::decode_row_ref(*c.coded, r, d.data());
      for (int64_t k = 0; k < cols; k++) bad += d[k] != c.w[r * cols + k];
    }
    CHECK_MSG(bad == 0, "cols " + std::to_string(cols) + ": " + std::to_string(bad) + " weights differ");
  }
  CHECK(!moe::codable(Matrix{nullptr, moe::DType::BF16, 4, 96}));
  CHECK(!moe::codable(Matrix{nullptr, moe::DType::BF16, 4, 128}));  // 256 bytes coded, as many as bf16
  CHECK(moe::codable(Matrix{nullptr, moe::DType::BF16, 4, 256}));
  CHECK(!moe::codable(Matrix{nullptr, moe::DType::F16, 4, 128}));
}

}  // namespace

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")
#include "../cpu/coded-avx512bf16.h"
#include "../cpu/rowdot-avx512bf16.h"
namespace {

// Rows [r0, r1) of c against nt tokens of x in mode M through the fused row dots (matmul_rows' path); checks that
// they give the bits of the plain row dot (one row, one token at a time: the GEMM's path) on the rows decoded with
// their escapes at zero, then the escapes added.
template <typename M>
std::vector<float> fused_dots(const moe::CodedBf16& c, const std::vector<float>& x, int nt, int64_t r0, int64_t r1, int64_t cols) {
  const int64_t P = moe::padded_cols(cols);
  std::vector<typename M::X> xs(static_cast<size_t>(nt * P));
  for (int t = 0; t < nt; t++) M::pack(x.data() + t * cols, cols, xs.data() + t * P);
  std::vector<float> out(static_cast<size_t>(nt * (r1 - r0)));
  switch (nt) {
    case 1: moe::coded::rows_for_tokens<M, 1>(c, r0, r1, x.data(), xs.data(), out.data(), r1 - r0); break;
    case 2: moe::coded::rows_for_tokens<M, 2>(c, r0, r1, x.data(), xs.data(), out.data(), r1 - r0); break;
    case 3: moe::coded::rows_for_tokens<M, 3>(c, r0, r1, x.data(), xs.data(), out.data(), r1 - r0); break;
    default: moe::coded::rows_for_tokens<M, 4>(c, r0, r1, x.data(), xs.data(), out.data(), r1 - r0); break;
  }
  std::vector<uint16_t> zeroed(static_cast<size_t>((r1 - r0) * cols));
  moe::coded::decode_rows(c, r0, r1, zeroed.data(), false);
  std::vector<float> gemm(out.size());
  for (int t = 0; t < nt; t++)
    for (int64_t r = r0; r < r1; r++)
      moe::rowdot::dot_block<M, 1, 1>(zeroed.data() + (r - r0) * cols, cols, cols, xs.data() + t * P, P,
                                      gemm.data() + t * (r1 - r0) + (r - r0), 1);
  moe::coded::add_escapes(c, r0, r1, x.data(), nt, gemm.data(), r1 - r0);
  int64_t differ = 0;
  for (size_t i = 0; i < out.size(); i++) differ += gemm[i] != out[i];
  CHECK_MSG(differ == 0, "fused dots vs plain row dots, cols " + std::to_string(cols) + ", " + std::to_string(nt) + " tokens: " + std::to_string(differ) + " differ");
  return out;
}

void test_avx512bf16_kernels() {
  for (int64_t cols : {256, 768, 2048}) {
    Case c = make_case(10, cols, 99 + static_cast<uint32_t>(cols));
    // The decoder of the tiled path, rows 1..8 at once.
    std::vector<uint16_t> d(static_cast<size_t>(8 * cols)), ref(static_cast<size_t>(cols));
    moe::coded::decode_rows(*c.coded, 1, 9, d.data());
    int64_t bad = 0;
    for (int64_t r = 1; r < 9; r++) {
      moe::decode_row_ref(*c.coded, r, ref.data());
      for (int64_t k = 0; k < cols; k++) bad += d[(r - 1) * cols + k] != ref[k];
    }
    CHECK_MSG(bad == 0, "decode_rows, cols " + std::to_string(cols) + ": " + std::to_string(bad) + " weights differ");
    // Fused row dots over the finite rows (rows 5..9 after the specials, with escapes), 1..4 tokens.
    // (A short row may have room in its table for an outlier: then it is no escape.)
    CHECK(c.coded->esc_start[10] > c.coded->esc_start[5]);
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int nt = 1; nt <= 4; nt++) {
      std::vector<float> x(static_cast<size_t>(nt * cols));
      for (auto& v : x) v = normal(rng);
      const int64_t r0 = 5, r1 = 10;
      // Both arithmetics: the fused row dots give the plain row dots' bits; exact is f32-accurate, bf16 x within
      // its rounding (2^-9 of each product's size).
      const std::vector<float> out = fused_dots<moe::rowdot::ExactX>(*c.coded, x, nt, r0, r1, cols);
      const std::vector<float> out16 = fused_dots<moe::rowdot::Bf16X>(*c.coded, x, nt, r0, r1, cols);
      double worst16 = 0;
      double worst = 0;
      for (int t = 0; t < nt; t++) {
        for (int64_t r = r0; r < r1; r++) {
          double sum = 0, mag = 0;
          for (int64_t k = 0; k < cols; k++) {
            const double p = static_cast<double>(moe::bf16_to_f32(c.w[r * cols + k])) * x[t * cols + k];
            sum += p;
            mag += std::fabs(p);
          }
          worst = std::max(worst, std::fabs(out[t * (r1 - r0) + (r - r0)] - sum) / (mag + 1e-30));
          worst16 = std::max(worst16, std::fabs(out16[t * (r1 - r0) + (r - r0)] - sum) / (mag + 1e-30));
        }
      }
      CHECK_MSG(worst < 1e-6, "fused dots, cols " + std::to_string(cols) + ", " + std::to_string(nt) + " tokens: relative error " + std::to_string(worst));
      CHECK_MSG(worst16 < 4e-3 && worst16 > 0, "fused dots on bf16 x, cols " + std::to_string(cols) + ", " + std::to_string(nt) + " tokens: relative error " + std::to_string(worst16));
    }
  }
}

}  // namespace
#pragma GCC pop_options
#define HAVE_AVX512BF16_TEST 1
#endif

void run_coded_tests() {
  test_reference_roundtrip();
#ifdef HAVE_AVX512BF16_TEST
  if (__builtin_cpu_supports("avx512bf16")) {
    test_avx512bf16_kernels();
  } else {
    std::printf("coded bf16: no AVX512_BF16 on this CPU, kernel checks skipped\n");
  }
#endif
}
