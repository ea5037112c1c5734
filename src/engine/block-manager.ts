// Paged KV bookkeeping: a pool of `numBlocks` blocks of `blockSize` tokens, ids 0..numBlocks-1
// exactly as the native step receives them in its block tables.
//
// Blocks are reference-counted. A block whose count drops to 0 goes to the back of the free
// queue; allocation takes from the front, so the free queue doubles as the LRU order of the
// prefix cache: a free block that still carries a hash keeps its KV and can be revived by a
// later request with the same prefix until it is reused (evicted).
//
// Prefix caching (vLLM v1's scheme): full blocks are keyed by a hash chain
// h_i = sha256(h_{i-1} ‖ tokens of block i), registered only once their KV has been written.
import { createHash } from 'node:crypto';

/** What the block manager needs of a sequence. */
export interface KvSequence {
  /** All tokens of the sequence so far (prompt, then generated); append-only. */
  readonly tokens: readonly number[];
  /** Block ids covering positions [i*blockSize, (i+1)*blockSize); owned by this manager. */
  blockTable: number[];
  /** Memo of the hash chain over the sequence's full blocks (filled lazily, append-only). */
  blockHashes: string[];
  /** vLLM's cache_salt: seeds the hash chain, so that only sequences with the same salt share blocks. */
  readonly cacheSalt?: string;
}

/** Intrusive doubly linked list of block ids: O(1) push, pop and removal of any member. */
class FreeQueue {
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private readonly member: Uint8Array;
  private head = -1;
  private tail = -1;
  size = 0;

  constructor(n: number) {
    this.prev = new Int32Array(n).fill(-1);
    this.next = new Int32Array(n).fill(-1);
    this.member = new Uint8Array(n);
  }

  has(id: number): boolean {
    return this.member[id] === 1;
  }

  pushBack(id: number): void {
    this.prev[id] = this.tail;
    this.next[id] = -1;
    if (this.tail >= 0) this.next[this.tail] = id;
    else this.head = id;
    this.tail = id;
    this.member[id] = 1;
    this.size++;
  }

  popFront(): number {
    const id = this.head;
    if (id < 0) throw new Error('free queue is empty');
    this.remove(id);
    return id;
  }

  remove(id: number): void {
    if (!this.member[id]) throw new Error(`block ${id} is not free`);
    const p = this.prev[id];
    const n = this.next[id];
    if (p >= 0) this.next[p] = n;
    else this.head = n;
    if (n >= 0) this.prev[n] = p;
    else this.tail = p;
    this.prev[id] = -1;
    this.next[id] = -1;
    this.member[id] = 0;
    this.size--;
  }
}

export interface BlockManagerOptions {
  numBlocks: number;
  blockSize: number;
  enablePrefixCaching?: boolean;
}

export class BlockManager {
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly enablePrefixCaching: boolean;
  private readonly refCounts: Int32Array;
  private readonly hashes: (string | null)[];
  private readonly cached = new Map<string, number>();
  private readonly freeQueue: FreeQueue;

  constructor(options: BlockManagerOptions) {
    const { numBlocks, blockSize } = options;
    if (!Number.isInteger(numBlocks) || numBlocks < 1) throw new Error(`numBlocks must be a positive integer, got ${numBlocks}`);
    if (!Number.isInteger(blockSize) || blockSize < 1) throw new Error(`blockSize must be a positive integer, got ${blockSize}`);
    this.numBlocks = numBlocks;
    this.blockSize = blockSize;
    this.enablePrefixCaching = options.enablePrefixCaching ?? false;
    this.refCounts = new Int32Array(numBlocks);
    this.hashes = new Array<string | null>(numBlocks).fill(null);
    this.freeQueue = new FreeQueue(numBlocks);
    for (let i = 0; i < numBlocks; i++) this.freeQueue.pushBack(i);
  }

  /** Blocks not referenced by any sequence (including cached blocks that may still be revived). */
  get numFreeBlocks(): number {
    return this.freeQueue.size;
  }

  /** Blocks referenced by at least one sequence. */
  get numUsedBlocks(): number {
    return this.numBlocks - this.freeQueue.size;
  }

  /** Free blocks that still hold a reusable cached prefix. */
  get numCachedFreeBlocks(): number {
    let n = 0;
    for (const id of this.cached.values()) if (this.refCounts[id] === 0) n++;
    return n;
  }

  refCount(id: number): number {
    return this.refCounts[id];
  }

  blockHash(id: number): string | null {
    return this.hashes[id];
  }

  blocksFor(numTokens: number): number {
    return Math.ceil(numTokens / this.blockSize);
  }

  /**
   * Longest cached prefix of `seq` made of full blocks, leaving at least one token to compute
   * (the step that follows must produce logits at the last position). Only for a sequence that
   * holds no blocks. Pure: the caller counts the lookup once the sequence is admitted.
   */
  findCachedPrefix(seq: KvSequence): number[] {
    if (!this.enablePrefixCaching) return [];
    if (seq.blockTable.length > 0) throw new Error('findCachedPrefix on a sequence that holds blocks');
    const maxBlocks = Math.floor((seq.tokens.length - 1) / this.blockSize);
    const hashes = this.hashChain(seq, maxBlocks);
    const hits: number[] = [];
    for (const h of hashes) {
      const id = this.cached.get(h);
      if (id === undefined) break;
      hits.push(id);
    }
    return hits;
  }

  /** Free blocks that `allocate(seq, numTokens, cachedHits)` would consume. */
  blocksNeeded(seq: KvSequence, numTokens: number, cachedHits: readonly number[] = []): number {
    const fresh = Math.max(0, this.blocksFor(numTokens) - seq.blockTable.length - cachedHits.length);
    let revived = 0;
    for (const id of cachedHits) if (this.refCounts[id] === 0) revived++;
    return fresh + revived;
  }

  canAllocate(seq: KvSequence, numTokens: number, cachedHits: readonly number[] = []): boolean {
    return this.blocksNeeded(seq, numTokens, cachedHits) <= this.freeQueue.size;
  }

  /**
   * Grows seq.blockTable so it covers the first `numTokens` positions, first with `cachedHits`
   * (only when the table is empty) then with fresh blocks. All or nothing: throws, changing
   * nothing, when the pool cannot supply the blocks.
   */
  allocate(seq: KvSequence, numTokens: number, cachedHits: readonly number[] = []): void {
    if (cachedHits.length > 0 && seq.blockTable.length > 0) throw new Error('cached blocks can only start a block table');
    const need = this.blocksNeeded(seq, numTokens, cachedHits);
    if (need > this.freeQueue.size) throw new Error(`out of KV blocks: need ${need}, ${this.freeQueue.size} free`);
    for (const id of cachedHits) {
      if (this.refCounts[id] === 0) this.freeQueue.remove(id);
      this.refCounts[id]++;
      seq.blockTable.push(id);
    }
    const target = this.blocksFor(numTokens);
    while (seq.blockTable.length < target) seq.blockTable.push(this.takeFresh());
  }

  /** Makes room for one more token (a decode step): `numTokens` is the length after appending. */
  appendSlot(seq: KvSequence, numTokens: number): boolean {
    if (!this.canAllocate(seq, numTokens)) return false;
    this.allocate(seq, numTokens);
    return true;
  }

  /**
   * Registers the full blocks among the first `numComputed` positions, whose KV is now written,
   * in the prefix cache. Call only after the step that wrote them succeeded.
   */
  cacheComputedBlocks(seq: KvSequence, numComputed: number): void {
    if (!this.enablePrefixCaching) return;
    const full = Math.min(Math.floor(numComputed / this.blockSize), seq.blockTable.length);
    const hashes = this.hashChain(seq, full);
    for (let i = 0; i < full; i++) {
      const id = seq.blockTable[i];
      if (this.hashes[id] !== null) continue;
      const h = hashes[i];
      // The first block registered under a hash stays its owner; a duplicate stays uncached.
      if (this.cached.has(h)) continue;
      this.hashes[id] = h;
      this.cached.set(h, id);
    }
  }

  /** Releases the sequence's blocks, tail first so the tail is evicted first, and empties its table. */
  free(seq: KvSequence): void {
    const table = seq.blockTable;
    for (let i = table.length - 1; i >= 0; i--) {
      const id = table[i];
      if (this.refCounts[id] <= 0) throw new Error(`block ${id} freed more often than allocated`);
      if (--this.refCounts[id] === 0) this.freeQueue.pushBack(id);
    }
    seq.blockTable = [];
  }

  /** Drops every cached hash (e.g. after the KV storage was reset). */
  resetPrefixCache(): void {
    this.cached.clear();
    this.hashes.fill(null);
  }

  private takeFresh(): number {
    const id = this.freeQueue.popFront();
    const h = this.hashes[id];
    if (h !== null) {
      if (this.cached.get(h) === id) this.cached.delete(h);
      this.hashes[id] = null;
    }
    this.refCounts[id] = 1;
    return id;
  }

  /** The first `n` hashes of the sequence's chain, extending its memo as needed. */
  private hashChain(seq: KvSequence, n: number): string[] {
    const bs = this.blockSize;
    while (seq.blockHashes.length < n) {
      const i = seq.blockHashes.length;
      // A salt is prefixed so that it can never equal a hash (hex) further down another chain.
      const parent = i === 0 ? (seq.cacheSalt === undefined ? '' : `salt:${seq.cacheSalt}`) : seq.blockHashes[i - 1];
      const block = Int32Array.from(seq.tokens.slice(i * bs, (i + 1) * bs));
      const h = createHash('sha256').update(parent).update(new Uint8Array(block.buffer)).digest('hex');
      seq.blockHashes.push(h);
    }
    return seq.blockHashes.length === n ? seq.blockHashes : seq.blockHashes.slice(0, n);
  }
}
