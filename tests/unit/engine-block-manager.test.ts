import { describe, expect, it } from 'vitest';
import { BlockManager, type KvSequence } from '../../src/engine/block-manager.ts';

const seqOf = (tokens: number[]): KvSequence => ({ tokens, blockTable: [], blockHashes: [] });
const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => from + i);

describe('BlockManager', () => {
  it('allocates to cover the tokens, all or nothing, and frees back', () => {
    const bm = new BlockManager({ numBlocks: 4, blockSize: 4 });
    const a = seqOf(range(9));
    expect(bm.blocksNeeded(a, 9)).toBe(3);
    bm.allocate(a, 9);
    expect(a.blockTable).toEqual([0, 1, 2]);
    expect(bm.numFreeBlocks).toBe(1);
    expect(bm.numUsedBlocks).toBe(3);
    const b = seqOf(range(8));
    expect(bm.canAllocate(b, 8)).toBe(false);
    expect(() => bm.allocate(b, 8)).toThrow(/out of KV blocks: need 2, 1 free/);
    expect(b.blockTable).toEqual([]);
    expect(bm.numFreeBlocks).toBe(1);
    // Growing within the last block needs nothing; crossing the boundary needs one.
    expect(bm.appendSlot(a, 12)).toBe(true);
    expect(a.blockTable).toEqual([0, 1, 2]);
    expect(bm.appendSlot(a, 13)).toBe(true);
    expect(a.blockTable).toEqual([0, 1, 2, 3]);
    expect(bm.appendSlot(a, 17)).toBe(false);
    expect(a.blockTable).toHaveLength(4);
    bm.free(a);
    expect(a.blockTable).toEqual([]);
    expect(bm.numFreeBlocks).toBe(4);
    for (const id of range(4)) expect(bm.refCount(id)).toBe(0);
  });

  it('frees tail first, so the freed tail is reused (evicted) first', () => {
    const bm = new BlockManager({ numBlocks: 3, blockSize: 2 });
    const a = seqOf(range(6));
    bm.allocate(a, 6);
    bm.free(a);
    const b = seqOf(range(2));
    bm.allocate(b, 2);
    expect(b.blockTable).toEqual([2]);
  });

  it('refuses a double free', () => {
    const bm = new BlockManager({ numBlocks: 2, blockSize: 2 });
    const a = seqOf(range(3));
    bm.allocate(a, 3);
    const stale = { ...a, blockTable: [...a.blockTable] };
    bm.free(a);
    expect(() => bm.free(stale)).toThrow(/freed more often than allocated/);
  });

  it('rejects bad sizes', () => {
    expect(() => new BlockManager({ numBlocks: 0, blockSize: 16 })).toThrow(/numBlocks/);
    expect(() => new BlockManager({ numBlocks: 4, blockSize: 1.5 })).toThrow(/blockSize/);
  });

  describe('prefix caching', () => {
    it('finds nothing when disabled', () => {
      const bm = new BlockManager({ numBlocks: 8, blockSize: 4 });
      const a = seqOf(range(12));
      bm.allocate(a, 12);
      bm.cacheComputedBlocks(a, 12);
      expect(bm.findCachedPrefix(seqOf(range(12)))).toEqual([]);
    });

    it('shares full computed blocks by hash chain with ref counts, keeping one token to compute', () => {
      const bm = new BlockManager({ numBlocks: 8, blockSize: 4, enablePrefixCaching: true });
      const a = seqOf(range(10));
      bm.allocate(a, 10);
      // Only blocks whose KV is written count: 6 computed tokens → one full block.
      bm.cacheComputedBlocks(a, 6);
      expect(bm.findCachedPrefix(seqOf(range(12)))).toEqual([a.blockTable[0]]);
      bm.cacheComputedBlocks(a, 10);
      const b = seqOf([...range(8), 100, 101]);
      const hits = bm.findCachedPrefix(b);
      expect(hits).toEqual(a.blockTable.slice(0, 2));
      expect(bm.blocksNeeded(b, 10, hits)).toBe(1);
      bm.allocate(b, 10, hits);
      expect(b.blockTable.slice(0, 2)).toEqual(a.blockTable.slice(0, 2));
      expect(bm.refCount(a.blockTable[0])).toBe(2);
      expect(bm.refCount(a.blockTable[2])).toBe(1);
      // A different token inside block 0 breaks the chain at once.
      expect(bm.findCachedPrefix(seqOf([0, 1, 2, 99, 4, 5, 6, 7, 8]))).toEqual([]);
      // Exactly 8 tokens: the last must be recomputed, so only the first block is used.
      expect(bm.findCachedPrefix(seqOf(range(8)))).toHaveLength(1);
      bm.free(a);
      expect(bm.refCount(b.blockTable[0])).toBe(1);
      bm.free(b);
      expect(bm.numFreeBlocks).toBe(8);
    });

    it('chains each block\'s hash to its prefix: equal tokens after a different first block are another block', () => {
      const bm = new BlockManager({ numBlocks: 8, blockSize: 2, enablePrefixCaching: true });
      const [A, A2, B, C] = [[1, 2], [3, 4], [5, 6], [7, 8]];
      const ab = seqOf([...A, ...B, 0]);
      const a2c = seqOf([...A2, ...C, 0]);
      for (const s of [ab, a2c]) {
        bm.allocate(s, 5);
        bm.cacheComputedBlocks(s, 5);
      }
      // [A', B]: A' is cached (from [A', C]) but B only after A, so B's KV is not this prefix's.
      expect(bm.findCachedPrefix(seqOf([...A2, ...B, 0]))).toEqual([a2c.blockTable[0]]);
      expect(bm.findCachedPrefix(seqOf([...A2, ...B, ...B, 0]))).toEqual([a2c.blockTable[0]]);
      // The same B after A' is cached as a block of its own, under its own hash.
      const a2b = seqOf([...A2, ...B, 0]);
      bm.allocate(a2b, 5, bm.findCachedPrefix(a2b));
      bm.cacheComputedBlocks(a2b, 5);
      expect(a2b.blockTable[1]).not.toBe(ab.blockTable[1]);
      expect(bm.blockHash(a2b.blockTable[1])).not.toBeNull();
      expect(bm.blockHash(a2b.blockTable[1])).not.toBe(bm.blockHash(ab.blockTable[1]));
      expect(bm.findCachedPrefix(seqOf([...A2, ...B, 9]))).toEqual(a2b.blockTable.slice(0, 2));
      expect(bm.findCachedPrefix(seqOf([...A, ...B, 9]))).toEqual(ab.blockTable.slice(0, 2));
      // Nothing of [A, B] serves a prompt that starts differently.
      expect(bm.findCachedPrefix(seqOf([...C, ...B, 0]))).toEqual([]);
    });

    it('revives cached free blocks, counting them against the free pool, and evicts LRU', () => {
      const bm = new BlockManager({ numBlocks: 4, blockSize: 2, enablePrefixCaching: true });
      const a = seqOf(range(5));
      bm.allocate(a, 5);
      bm.cacheComputedBlocks(a, 5);
      const [b0, b1] = a.blockTable;
      bm.free(a);
      expect(bm.numFreeBlocks).toBe(4);
      expect(bm.numCachedFreeBlocks).toBe(2);
      const again = seqOf(range(5));
      const hits = bm.findCachedPrefix(again);
      expect(hits).toEqual([b0, b1]);
      expect(bm.blocksNeeded(again, 5, hits)).toBe(3);
      bm.allocate(again, 5, hits);
      expect(bm.numFreeBlocks).toBe(1);
      bm.free(again);
      // Fill the pool with unrelated tokens: the cached blocks are evicted, their hashes dropped.
      const other = seqOf(range(8, 50));
      bm.allocate(other, 8);
      expect(bm.numCachedFreeBlocks).toBe(0);
      expect(bm.blockHash(b0)).toBeNull();
      bm.free(other);
      expect(bm.findCachedPrefix(seqOf(range(5)))).toEqual([]);
    });

    it('evicts the least recently freed cached block first', () => {
      const bm = new BlockManager({ numBlocks: 4, blockSize: 2, enablePrefixCaching: true });
      const a = seqOf([1, 2, 3]);
      const b = seqOf([7, 8, 9]);
      bm.allocate(a, 3);
      bm.allocate(b, 3);
      bm.cacheComputedBlocks(a, 3);
      bm.cacheComputedBlocks(b, 3);
      bm.free(a);
      bm.free(b);
      // Free order: a's tail, a's head, b's tail, b's head. Two fresh blocks evict a's head.
      const c = seqOf([20, 21, 22]);
      bm.allocate(c, 3);
      expect(bm.findCachedPrefix(seqOf([1, 2, 3]))).toEqual([]);
      expect(bm.findCachedPrefix(seqOf([7, 8, 9]))).toHaveLength(1);
    });

    it('keeps the first block registered under a hash', () => {
      const bm = new BlockManager({ numBlocks: 4, blockSize: 2, enablePrefixCaching: true });
      const a = seqOf([5, 6, 7]);
      const b = seqOf([5, 6, 8]);
      bm.allocate(a, 3);
      bm.allocate(b, 3);
      bm.cacheComputedBlocks(a, 3);
      bm.cacheComputedBlocks(b, 3);
      expect(bm.findCachedPrefix(seqOf([5, 6, 0]))).toEqual([a.blockTable[0]]);
      expect(bm.blockHash(b.blockTable[0])).toBeNull();
      bm.free(a);
      bm.free(b);
      expect(bm.numFreeBlocks).toBe(4);
    });
  });
});
