// Causal GQA attention over the paged KV cache. Slot of position j of a sequence:
// block_tables[seq][j / block_size] * block_size + j % block_size; a block's slots are consecutive rows,
// so the kernels run over one block at a time.
//
// Query-tiled with an online softmax (flash-attention style): a tile of queries of one sequence takes each K/V
// block of one KV head in turn, so that a block is read from memory once per tile and from L1 while the tile's
// queries pass over it. Per (query, head) a running max m, a running sum l and an f32 output row o are updated block
// by block:
//   s = scale·q·k over the block's keys the query sees; m' = max(m, max s); c = exp(m − m');
//   p = exp(s − m'); l = l·c + Σp; o = o·c + Σ p·v;        and at the end o / l.
// Per tile the scratch is tile × group × (block_size scores + head_dim of o (+ q) + m + l) floats, whatever the
// context length.
//
// Batch invariance: a query visits its blocks in position order from position 0, sees only its own keys (0..its
// position: in its last block only its own count of keys is scored and read; the rest of its score row is -inf, an
// exact 0 after the exp), and every operation on its m, l and o depends on nothing but the query and its keys,
// never on the tile's size or its other queries (the kernels' rows are independent, and their paths for one query
// and for a tile give the same bits: KernelSet's contracts). So a token's output is the same bits in a whole
// prompt, in any chunking of it, alone in decode, or beside other sequences.
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "core/half.h"
#include "cpu/backend-cpu.h"

namespace moe {

void CpuBackend::attention(int layer, const Buffer& qb, const Buffer& kb, const Buffer& vb, const Buffer& ob) {
  const ModelConfig& cfg = cfg_;
  const int T = T_, hd = cfg.head_dim, kvd = cfg.kv_dim(), group = cfg.heads / cfg.kv_heads, bs = block_size_;
  const float* q = qb.f32();
  const float* k = kb.f32();
  const float* v = vb.f32();
  float* out = ob.f32();
  // The pool in f32 or bf16 (kv_dtype_): K/V rows are indexed in elements; the kernels take the typed pointer.
  const bool bf16 = kv_dtype_ == DType::BF16;
  float* K = bf16 ? nullptr : k_cache_[layer].data();
  float* V = bf16 ? nullptr : v_cache_[layer].data();
  uint16_t* K16 = bf16 ? k_cache16_[layer].data() : nullptr;
  uint16_t* V16 = bf16 ? v_cache16_[layer].data() : nullptr;
  const int32_t* tables = block_tables_.data();
  const int32_t* seq_of_token = seq_of_token_.data();
  const int32_t* positions = positions_.data();
  const int table_width = table_width_;
  for (int t = 0; t < T; t++) {
    const int64_t s = slots_[t];
    const float* kr = k + static_cast<int64_t>(t) * kvd;
    const float* vr = v + static_cast<int64_t>(t) * kvd;
    if (bf16) {
      for (int i = 0; i < kvd; i++) K16[s * kvd + i] = f32_to_bf16(kr[i]), V16[s * kvd + i] = f32_to_bf16(vr[i]);
    } else {
      std::copy(kr, kr + kvd, K + s * kvd);
      std::copy(vr, vr + kvd, V + s * kvd);
    }
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int kvh = cfg.kv_heads;
  // Tile size: up to 128 queries (each K/V block is read from memory once per tile; 32 → 64 → 128 measured 3.7 →
  // 3.25 → 3.1 s for 32K tokens of the long-context benchmark's shape), fewer where the tile's q and o rows, scores,
  // m and l (group × (2·hd + bs + 2) floats a query) would pass 1 MiB, so that they stay in L2 beside the block.
  // A sequence's run of tokens is cut into equal tiles (balanced work), and into enough of them that every thread
  // gets a (tile, head) pair. Any cut gives the same bits.
  const int64_t per_query = static_cast<int64_t>(group) * (2 * hd + bs + 2);
  const int max_tile = static_cast<int>(std::clamp<int64_t>((int64_t{1} << 18) / per_query, 8, 128));
  const int want_tiles = (pool_.size() + kvh - 1) / kvh;
  std::vector<std::pair<int, int>> tiles;  // [t0, t1)
  for (int t = 0; t < T;) {
    int e = t + 1;
    while (e < T && seq_of_token[e] == seq_of_token[t]) e++;
    const int n = e - t, parts = std::max((n + max_tile - 1) / max_tile, std::min(n, want_tiles));
    for (int p = 0; p < parts; p++) tiles.emplace_back(t + n * p / parts, t + n * (p + 1) / parts);
    t = e;
  }
  const int64_t nitems = static_cast<int64_t>(tiles.size()) * kvh;
  pool_.parallel_for(nitems, 1, [&](int64_t b, int64_t e, int th) {
    for (int64_t i = b; i < e; i++) {
      // Last tiles first: a sequence's later queries see the most keys, so the pool ends on short items.
      const int64_t it = nitems - 1 - i;
      const int t0 = tiles[it / kvh].first, nt = tiles[it / kvh].second - t0, kh = static_cast<int>(it % kvh);
      const int32_t* table = tables + static_cast<int64_t>(seq_of_token[t0]) * table_width;
      auto keys = [&](int tt) { return static_cast<int64_t>(positions[t0 + tt]) + 1; };
      int64_t ld = 0;  // the longest row of the tile
      for (int tt = 0; tt < nt; tt++) ld = std::max(ld, keys(tt));
      // Several queries in the tile: their q rows are copied side by side (so that one call takes every query that
      // sees the same keys), each block's K rows of this head are transposed (and widened) once into kt (hd × bs)
      // for attn_scores_kt, and in a bf16 pool its V rows are widened once into `wide` (bs × hd) for the f32
      // kernels. One query: the kernels read q and the cache in place. Both give the same bits (KernelSet).
      const bool shared = nt > 1, widen = bf16 && shared;
      // Rows: the tile's (query, head) pairs, (tt, g) at tt·group + g, each with hd floats of o, bs scores, m, l
      // (and hd of q when copied).
      const int64_t rows = static_cast<int64_t>(nt) * group, bhd = static_cast<int64_t>(bs) * hd;
      float* o = thread_scratch(th, rows * (hd + bs + 2) + (shared ? rows * hd + 2 * bhd : 0));
      float* sc = o + rows * hd;
      float* m = sc + rows * bs;
      float* l = m + rows;
      float* qcopy = l + rows;
      float* kt = qcopy + rows * hd;
      float* wide = kt + bhd;
      std::fill(o, o + rows * hd, 0.0f);
      std::fill(m, m + rows, -std::numeric_limits<float>::infinity());
      std::fill(l, l + rows, 0.0f);
      auto qh = [&](int tt) { return q + (static_cast<int64_t>(t0 + tt) * cfg.heads + kh * group) * hd; };
      if (shared)
        for (int tt = 0; tt < nt; tt++) std::copy(qh(tt), qh(tt) + group * hd, qcopy + static_cast<int64_t>(tt) * group * hd);
      const float* qs = shared ? qcopy : qh(0);
      auto transpose_k = [&](int64_t off, int64_t n) {
        for (int64_t r = 0; r < n; r++)
          for (int i = 0; i < hd; i++) kt[i * bs + r] = bf16 ? bf16_to_f32(K16[off + r * kvd + i]) : K[off + r * kvd + i];
      };
      auto widen_v = [&](int64_t off, int64_t n) {
        for (int64_t r = 0; r < n; r++) k_.to_f32(V16 + off + r * kvd, DType::BF16, wide + r * hd, hd);
      };
      for (int64_t j0 = 0; j0 < ld; j0 += bs) {
        const int64_t off = static_cast<int64_t>(table[j0 / bs]) * bs * kvd + kh * hd, in_block = std::min<int64_t>(bs, ld - j0);
        // The keys of this block query tt sees (≤ 0: none); fn(r, n, key) over the rows [r, r + n) of each run of
        // queries with the same key > 0 (one kernel call a run: all but the diagonal block's queries see all bs).
        auto seen = [&](int tt) { return std::min<int64_t>(bs, keys(tt) - j0); };
        auto runs = [&](auto key, auto fn) {
          for (int a = 0, b; a < nt; a = b) {
            for (b = a + 1; b < nt && key(b) == key(a);) b++;
            if (key(a) > 0) fn(static_cast<int64_t>(a) * group, (b - a) * group, key(a));
          }
        };
        if (shared) transpose_k(off, in_block);
        runs(seen, [&](int64_t r, int n, int64_t len) {
          const float* qr = qs + r * hd;
          float* s = sc + r * bs;
          if (shared) k_.attn_scores_kt(qr, n, hd, kt, bs, len, scale, s, bs);
          else if (bf16) k_.attn_scores_bf16(qr, n, hd, K16 + off, kvd, len, scale, s, bs);
          else k_.attn_scores(qr, n, hd, K + off, kvd, len, scale, s, bs);
          if (len < bs)
            for (int g = 0; g < n; g++) std::fill(s + g * bs + len, s + (g + 1) * bs, -std::numeric_limits<float>::infinity());
        });
        // The softmax step over all the queries that see the block, as the rows of one call ...
        runs([&](int tt) { return static_cast<int64_t>(seen(tt) > 0); },
             [&](int64_t r, int n, int64_t) { k_.attn_softmax(sc + r * bs, n, bs, m + r, l + r, o + r * hd, hd); });
        // ... and the values.
        if (widen) widen_v(off, in_block);
        runs(seen, [&](int64_t r, int n, int64_t len) {
          if (widen) k_.attn_values(sc + r * bs, n, bs, wide, hd, len, hd, o + r * hd);
          else if (bf16) k_.attn_values_bf16(sc + r * bs, n, bs, V16 + off, kvd, len, hd, o + r * hd);
          else k_.attn_values(sc + r * bs, n, bs, V + off, kvd, len, hd, o + r * hd);
        });
      }
      for (int tt = 0; tt < nt; tt++) {
        float* dst = out + (static_cast<int64_t>(t0 + tt) * cfg.heads + kh * group) * hd;
        for (int g = 0; g < group; g++) {
          const int64_t r = static_cast<int64_t>(tt) * group + g;
          for (int d = 0; d < hd; d++) dst[g * hd + d] = o[r * hd + d] / l[r];
        }
      }
    }
  });
}

}  // namespace moe
