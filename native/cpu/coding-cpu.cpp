// Load-time coding of bf16 weights (core/coded-bf16.h) for the kernel sets that read coded rows: each matrix is
// coded in row chunks on the pool, then its checkpoint pages are released from this process.
#include <algorithm>

#include "core/safetensors.h"
#include "cpu/backend-cpu.h"

namespace moe {

void CpuBackend::code_weights() {
  ModelWeights& w = w_;
  constexpr int64_t kChunk = 256;  // rows per task
  for (Matrix* m : weight_matrices(w)) {
    if (!codable(*m) || m->coded) continue;
    std::unique_ptr<CodedBf16> c = alloc_coded(*m);
    const int64_t chunks = (m->rows + kChunk - 1) / kChunk;
    std::vector<std::vector<Escape>> parts(static_cast<size_t>(chunks));
    pool_.parallel_for(chunks, 1, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; i++) code_rows(*m, i * kChunk, std::min(m->rows, (i + 1) * kChunk), *c, parts[i]);
    });
    set_escapes(*c, parts);
    w.coded_source_bytes += static_cast<size_t>(m->rows) * m->row_bytes();
    w.coded_bytes += c->bytes();
    w.coded_escapes += c->esc_col.size();
    release_range(m->data, static_cast<size_t>(m->rows) * m->row_bytes());
    m->coded = c.get();
    w.coded.push_back(std::move(c));
  }
}

}  // namespace moe
