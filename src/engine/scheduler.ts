// Scheduling policy (plain TypeScript, no addon): which sequences run in the next step and
// which of their tokens. Continuous batching with chunked prefill under a per-step token budget,
// FCFS admission, and recompute-preemption of the most recently admitted sequence when the KV
// pool runs dry (vLLM v1's policy; nano-vllm's shape).
//
// A sequence is "computed" up to numComputed: its KV for positions [0, numComputed) is in its
// blocks. Each step schedules a chunk [numComputed, numComputed + n) of its known tokens; the
// chunk samples the next token only when it reaches the end of the known tokens.
import type { BlockManager, KvSequence } from './block-manager.ts';

export interface SchedSequence extends KvSequence {
  numComputed: number;
  /** False while the sequence still needs prompt logprobs: cached positions would yield none. */
  readonly usePrefixCache: boolean;
  /** Its consumer is behind: not scheduled; it keeps its KV unless admission needs it (preemptPaused). */
  readonly paused?: boolean;
}

export interface ScheduledChunk<S> {
  seq: S;
  /** First position of the chunk (= numComputed before the step). */
  start: number;
  numTokens: number;
  /** The chunk ends at the sequence's last known token: sample the next one. */
  sample: boolean;
}

export interface SchedulerOutput<S> {
  /** In batch order: running decodes, running prefill continuations, then newly admitted. */
  chunks: ScheduledChunk<S>[];
  /** Sequences preempted while scheduling this step (already back in waiting). */
  preempted: S[];
  numBatchedTokens: number;
}

export interface SchedulerOptions {
  maxNumSeqs: number;
  maxNumBatchedTokens: number;
}

export class Scheduler<S extends SchedSequence> {
  /** FCFS; preempted sequences return to the head. */
  readonly waiting: S[] = [];
  /** In admission order; the last is the first preemption victim. */
  readonly running: S[] = [];
  numPreemptions = 0;
  /** Prompt tokens looked up in the prefix cache at admission, and how many were found. */
  prefixCacheQueries = 0;
  prefixCacheHits = 0;
  readonly maxNumSeqs: number;
  readonly maxNumBatchedTokens: number;

  constructor(readonly blocks: BlockManager, options: SchedulerOptions) {
    const { maxNumSeqs, maxNumBatchedTokens } = options;
    if (!Number.isInteger(maxNumSeqs) || maxNumSeqs < 1) throw new Error(`maxNumSeqs must be a positive integer, got ${maxNumSeqs}`);
    if (!Number.isInteger(maxNumBatchedTokens) || maxNumBatchedTokens < maxNumSeqs) {
      // Every running sequence must be able to decode in the same step.
      throw new Error(`maxNumBatchedTokens (${maxNumBatchedTokens}) must be an integer >= maxNumSeqs (${maxNumSeqs})`);
    }
    this.maxNumSeqs = maxNumSeqs;
    this.maxNumBatchedTokens = maxNumBatchedTokens;
  }

  get hasWork(): boolean {
    return this.waiting.length > 0 || this.running.length > 0;
  }

  add(seq: S): void {
    if (seq.blockTable.length > 0 || seq.numComputed !== 0) throw new Error('a new sequence must hold no KV');
    this.waiting.push(seq);
  }

  /** Takes the sequence out of the scheduler (finished or aborted) and frees its blocks. */
  remove(seq: S): void {
    let i = this.running.indexOf(seq);
    if (i >= 0) this.running.splice(i, 1);
    else if ((i = this.waiting.indexOf(seq)) >= 0) this.waiting.splice(i, 1);
    else return;
    this.blocks.free(seq);
  }

  schedule(): SchedulerOutput<S> {
    let budget = this.maxNumBatchedTokens;
    const chunks = new Map<S, ScheduledChunk<S>>();
    const preempted: S[] = [];
    const yielded = this.preemptPaused();

    // Running sequences, decodes before prefill continuations so a long prompt cannot stall them.
    for (const decodes of [true, false]) {
      for (let i = 0; i < this.running.length && budget > 0; i++) {
        const seq = this.running[i];
        const remaining = seq.tokens.length - seq.numComputed;
        // remaining 0 only if the caller skipped appending a sampled token; nothing to run then.
        if (remaining === 0 || seq.paused || chunks.has(seq) || (remaining === 1) !== decodes) continue;
        const n = Math.min(remaining, budget);
        let selfPreempted = false;
        while (!this.blocks.canAllocate(seq, seq.numComputed + n)) {
          const victim = this.running[this.running.length - 1];
          const refund = chunks.get(victim);
          if (refund) {
            chunks.delete(victim);
            budget += refund.numTokens;
          }
          this.preempt(victim);
          preempted.push(victim);
          if (victim === seq) {
            selfPreempted = true;
            break;
          }
        }
        if (selfPreempted) break;
        this.blocks.allocate(seq, seq.numComputed + n);
        chunks.set(seq, { seq, start: seq.numComputed, numTokens: n, sample: seq.numComputed + n === seq.tokens.length });
        budget -= n;
      }
    }

    // Admission, FCFS: stop at the first sequence that does not fit. Not after a preemption,
    // which means the pool is already short.
    while (preempted.length === 0 && this.waiting.length > 0 && this.running.length < this.maxNumSeqs && budget > 0) {
      // A paused sequence (preempted while its consumer was behind) waits without holding up the rest.
      const at = this.waiting.findIndex((s) => !s.paused);
      if (at < 0) break;
      const seq = this.waiting[at];
      const hits = seq.usePrefixCache ? this.blocks.findCachedPrefix(seq) : [];
      const computed = hits.length * this.blocks.blockSize;
      const n = Math.min(seq.tokens.length - computed, budget);
      if (!this.blocks.canAllocate(seq, computed + n, hits)) break;
      this.blocks.allocate(seq, computed + n, hits);
      if (this.blocks.enablePrefixCaching && seq.usePrefixCache) {
        this.prefixCacheQueries += seq.tokens.length;
        this.prefixCacheHits += computed;
      }
      seq.numComputed = computed;
      this.waiting.splice(at, 1);
      this.running.push(seq);
      chunks.set(seq, { seq, start: computed, numTokens: n, sample: computed + n === seq.tokens.length });
      budget -= n;
    }

    const ordered = [...chunks.values()];
    for (const c of ordered) c.seq.numComputed = c.start + c.numTokens;
    return { chunks: ordered, preempted: [...yielded, ...preempted], numBatchedTokens: this.maxNumBatchedTokens - budget };
  }

  /**
   * Running sequences paused for their consumers (clients not reading) give their slot and KV blocks to
   * a waiting sequence that can run but cannot be admitted: otherwise max-num-seqs slow readers would
   * hold the server until their write timeouts. They recompute when their consumers catch up.
   */
  private preemptPaused(): S[] {
    const next = this.waiting.find((s) => !s.paused);
    if (!next) return [];
    // Only when admission is blocked: a slot, or the blocks of its whole known tokens.
    if (this.running.length < this.maxNumSeqs && this.blocks.canAllocate(next, next.tokens.length)) return [];
    const paused = this.running.filter((s) => s.paused);
    for (let i = paused.length - 1; i >= 0; i--) this.preempt(paused[i]);
    return paused;
  }

  /** After the step ran: its full blocks now hold KV and may enter the prefix cache. */
  stepDone(output: SchedulerOutput<S>): void {
    for (const c of output.chunks) {
      if (c.seq.blockTable.length > 0) this.blocks.cacheComputedBlocks(c.seq, c.seq.numComputed);
    }
  }

  private preempt(seq: S): void {
    const i = this.running.lastIndexOf(seq);
    if (i < 0) throw new Error('preempting a sequence that is not running');
    this.running.splice(i, 1);
    this.blocks.free(seq);
    seq.numComputed = 0;
    this.waiting.unshift(seq);
    this.numPreemptions++;
  }
}
