#include "core/coded-bf16.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>

#include "core/weights.h"

namespace moe {
namespace {

constexpr int kMagnitudes = 8;  // table slots per sign; slot 0 is the zero magnitude

// Position of column j (0 .. 127) of a block among the block's low bytes; its code is at (position % 64), in the
// low nibble for position < 64 and the high one otherwise.
inline int position_of(int j) {
  const int g = j / 64, jj = j % 64, h = jj / 32, L = (jj % 32) / 8, i = jj % 8;
  return 64 * g + 16 * L + 8 * h + i;
}

int64_t coded_stride(int64_t cols) { return (16 + cols + cols / 2 + 63) / 64 * 64; }

}  // namespace

bool codable(const Matrix& m) {
  // 128 columns code into 256 bytes, no fewer than bf16's: from 256 columns on, coding saves bytes.
  return m.dtype == DType::BF16 && m.rows > 0 && m.cols > 0 && m.cols % kCodedBlock == 0 &&
         coded_stride(m.cols) < static_cast<int64_t>(m.row_bytes());
}

std::unique_ptr<CodedBf16> alloc_coded(const Matrix& m) {
  if (!codable(m)) throw std::logic_error("alloc_coded: the matrix is not codable (bf16, columns a multiple of 128, at least 256)");
  auto c = std::make_unique<CodedBf16>();
  c->rows = m.rows;
  c->cols = m.cols;
  c->stride = coded_stride(m.cols);
  c->source = m.data;
  // 64-byte aligned, in 4 KiB pages: advising huge pages for it made decode steps 20% slower in the VM this
  // was measured in (median 23-24 ms against 19.3-19.6 ms on the slice model).
  void* p = std::aligned_alloc(64, c->bytes());  // a multiple of 64: the stride is
  if (!p) throw std::bad_alloc();
  c->data.reset(static_cast<uint8_t*>(p));
  return c;
}

void code_rows(const Matrix& m, int64_t r0, int64_t r1, CodedBf16& c, std::vector<Escape>& escapes) {
  const int64_t K = m.cols;
  std::vector<uint16_t> w(static_cast<size_t>(K));
  for (int64_t r = r0; r < r1; r++) {
    std::memcpy(w.data(), m.row(r), K * sizeof(uint16_t));
    // The 7 most frequent non-zero magnitudes (ties to the smaller), after the zero magnitude in slot 0.
    int count[128] = {0};
    for (uint16_t v : w) count[(v >> 8) & 0x7f]++;
    int order[127];
    std::iota(order, order + 127, 1);
    std::stable_sort(order, order + 127, [&](int a, int b) { return count[a] > count[b]; });
    int slot[128];
    std::fill(slot, slot + 128, -1);
    slot[0] = 0;
    uint8_t* row = c.data.get() + r * c.stride;
    uint8_t* table = row;
    table[0] = 0x00;
    table[kMagnitudes] = 0x80;
    for (int s = 1; s < kMagnitudes; s++) {
      slot[order[s - 1]] = s;
      table[s] = static_cast<uint8_t>(order[s - 1]);
      table[kMagnitudes + s] = static_cast<uint8_t>(0x80 | order[s - 1]);
    }
    uint8_t* low = row + 16;
    uint8_t* codes = low + K;
    std::memset(codes, 0, static_cast<size_t>(K / 2));
    std::memset(codes + K / 2, 0, static_cast<size_t>(c.stride - 16 - K - K / 2));
    for (int64_t k = 0; k < K; k++) {
      const uint16_t v = w[k];
      const int s = slot[(v >> 8) & 0x7f];
      const int64_t block = k / kCodedBlock * kCodedBlock;
      const int pos = position_of(static_cast<int>(k - block));
      int code;
      uint8_t lo;
      if (s < 0) {  // escape: coded as +0, kept exactly in the list
        code = 0;
        lo = 0;
        escapes.push_back({static_cast<uint32_t>(r), static_cast<uint32_t>(k), v});
      } else {
        code = s + ((v & 0x8000) ? kMagnitudes : 0);
        lo = static_cast<uint8_t>(v & 0xff);
      }
      low[block + pos] = lo;
      codes[block / 2 + pos % 64] |= static_cast<uint8_t>(pos < 64 ? code : code << 4);
    }
  }
}

void set_escapes(CodedBf16& c, const std::vector<std::vector<Escape>>& parts) {
  c.esc_start.assign(static_cast<size_t>(c.rows) + 1, 0);
  c.esc_col.clear();
  c.esc_bits.clear();
  for (const auto& part : parts) {
    for (const Escape& e : part) {
      c.esc_start[e.row + 1]++;
      c.esc_col.push_back(e.col);
      c.esc_bits.push_back(e.bits);
    }
  }
  for (int64_t r = 0; r < c.rows; r++) c.esc_start[r + 1] += c.esc_start[r];
}

void decode_row_ref(const CodedBf16& c, int64_t r, uint16_t* out) {
  const int64_t K = c.cols;
  const uint8_t* row = c.row(r);
  const uint8_t* low = row + 16;
  const uint8_t* codes = low + K;
  for (int64_t k = 0; k < K; k++) {
    const int64_t block = k / kCodedBlock * kCodedBlock;
    const int pos = position_of(static_cast<int>(k - block));
    const uint8_t byte = codes[block / 2 + pos % 64];
    const int code = pos < 64 ? (byte & 0x0f) : (byte >> 4);
    out[k] = static_cast<uint16_t>(row[code] << 8 | low[block + pos]);
  }
  for (uint32_t i = c.esc_start[r]; i < c.esc_start[r + 1]; i++) out[c.esc_col[i]] = c.esc_bits[i];
}

}  // namespace moe
