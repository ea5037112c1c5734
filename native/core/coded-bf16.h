// Exponent-coded bf16: a lossless 12-bit form of a bf16 matrix, made at load time for memory-bound matmuls.
//
// A bf16 weight is a high byte (sign, 7 exponent bits) and a low byte (1 exponent bit, 7 mantissa bits). In a row
// of trained (or normally distributed) weights the high byte takes few values, so each row keeps its low bytes
// as they are and replaces each high byte by a 4-bit code into the row's table of 16 high bytes: 8 magnitudes
// (bits 0-6, the most frequent ones of the row) × 2 signs. Magnitude slot 0 is always 0 (zero, and the tiny
// values whose exponent is 0 or 1), so a weight whose magnitude is not in the table ("escape", about 2e-5 of
// the weights) is written as a zero and kept exactly, column and bits, in the row's escape list. Decoding is
// exact: the codes, the table and the escapes give back every bit. A decode step reads 12 instead of 16 bits
// per weight, which is what a memory-bound matmul pays for.
//
// Row layout (stride bytes apart, 64-byte aligned), for cols a multiple of kCodedBlock = 128 (from 256 on):
//   [16 bytes: the table of high bytes, code c → table[c]]
//   [cols bytes: low bytes]   [cols / 2 bytes: codes]   [padding to 64]
// Within each block of 128 columns, the low bytes sit in the order that two vpunpck{l,h}bw per 64 columns turn
// back into column order: low byte position p = 64g + 16L + 8h + i holds column 64g + 32h + 8L + i; code byte
// 64b + p' (p' = 16L + 8h + i) holds position p' of group 0 in its low nibble and of group 1 in its high one.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

namespace moe {

struct Matrix;

constexpr int64_t kCodedBlock = 128;

struct CodedBf16 {
  int64_t rows = 0, cols = 0, stride = 0;  // stride: bytes per coded row
  const void* source = nullptr;            // the bf16 data it codes (in the checkpoint's mapping)
  std::unique_ptr<uint8_t, decltype(&std::free)> data{nullptr, &std::free};
  // Escapes, CSR by row: entries [esc_start[r], esc_start[r + 1]) of esc_col / esc_bits.
  std::vector<uint32_t> esc_start, esc_col;
  std::vector<uint16_t> esc_bits;

  const uint8_t* row(int64_t r) const { return data.get() + r * stride; }
  size_t bytes() const { return static_cast<size_t>(rows) * stride; }
  bool row_has_escapes(int64_t r) const { return esc_start[r + 1] != esc_start[r]; }
};

// Whether m can be coded and that saves bytes: bf16, cols a multiple of kCodedBlock and at least 256.
bool codable(const Matrix& m);
// Allocates the coded form of m (rows not yet coded).
std::unique_ptr<CodedBf16> alloc_coded(const Matrix& m);
// One escaped weight: where it is and its exact bits.
struct Escape {
  uint32_t row, col;
  uint16_t bits;
};
// Codes rows [r0, r1) of m into c; the rows' escapes are appended to `escapes`, in row order.
void code_rows(const Matrix& m, int64_t r0, int64_t r1, CodedBf16& c, std::vector<Escape>& escapes);
// Fills c's escape lists from every range's escapes, given in row order.
void set_escapes(CodedBf16& c, const std::vector<std::vector<Escape>>& parts);
// Reference decoder (portable): row r of c as bf16 bits, exactly the source row.
void decode_row_ref(const CodedBf16& c, int64_t r, uint16_t* out);

}  // namespace moe
