// A deterministic stand-in for the native model, for unit tests of the engine's TS policy.
// It keeps a real paged KV store and computes each position's logits from the context it reads
// back through the block table, so a wrong batch layout, a wrong block table or a block shared or
// reused while still live changes the output and fails the test; `reference()` computes the same
// model without any paging or batching.
//
// Like a transformer's K/V, a slot holds a state of the whole prefix up to its position (chained
// from the previous position's slot, read back through the block table when the step writes it),
// not just its token: a cached block revived for a different prefix, even one whose own tokens
// match, carries the wrong states and changes every later logit.
import type { NativeModel, StepBatch, StepResult } from '../../src/native/addon-types.ts';
import { Xoshiro128 } from '../../src/engine/rng.ts';

export const VOCAB = 97;

/** The state before position 0. States are >= 0, so -1 marks an unwritten slot. */
const STATE0 = 0x2545f491;

/** The KV state at a position: its token chained onto the previous position's state. */
function nextState(prev: number, token: number): number {
  let h = Math.imul(prev ^ Math.imul(token + 1, 0x9e3779b1), 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 1;
}

/** The logits at the last of `states` (the KV states of positions 0..p). */
function logitsOfStates(states: ArrayLike<number>): Float64Array {
  let h = 0x811c9dc5;
  for (let i = 0; i < states.length; i++) h = Math.imul(h ^ states[i], 16777619);
  const out = new Float64Array(VOCAB);
  for (let v = 0; v < VOCAB; v++) {
    const x = Math.imul(h ^ Math.imul(v + 1, 0x9e3779b1), 0x85ebca6b) >>> 0;
    out[v] = (x % 10007) / 1000;
  }
  return out;
}

/** The logits after the first `len` tokens of `ctx`, as the model computes them with correct KV. */
export function logitsOf(ctx: ArrayLike<number>, len = ctx.length): Float64Array {
  const states: number[] = [];
  let s = STATE0;
  for (let i = 0; i < len; i++) states.push((s = nextState(s, ctx[i])));
  return logitsOfStates(states);
}

export function logSoftmax(l: Float64Array): Float64Array {
  let m = -Infinity;
  for (const x of l) m = Math.max(m, x);
  let s = 0;
  for (const x of l) s += Math.exp(x - m);
  const lse = m + Math.log(s);
  return l.map((x) => x - lse);
}

export function sampleFrom(l: Float64Array, temperature: number, u: number): number {
  if (temperature === 0) {
    let best = 0;
    for (let v = 1; v < l.length; v++) if (l[v] > l[best]) best = v;
    return best;
  }
  let m = -Infinity;
  for (const x of l) m = Math.max(m, x);
  const p = l.map((x) => Math.exp((x - m) / temperature));
  const total = p.reduce((a, b) => a + b, 0);
  let acc = 0;
  for (let v = 0; v < p.length; v++) {
    acc += p[v];
    if (acc > u * total) return v;
  }
  return p.length - 1;
}

/** Top-n ids by logprob, best first (ties: lower id first). */
export function topN(lsm: Float64Array, n: number): number[] {
  return [...lsm.keys()].sort((a, b) => lsm[b] - lsm[a] || a - b).slice(0, n);
}

export interface RefResult {
  tokens: number[];
  reason: 'stop' | 'length';
  stopToken?: number;
}

/** The same model run one request at a time, without paging; same RNG draws as the engine. */
export function reference(prompt: number[], o: { maxTokens: number; temperature: number; seed: number; stop: number[] }): RefResult {
  const rng = new Xoshiro128(o.seed);
  const ctx = [...prompt];
  const tokens: number[] = [];
  while (tokens.length < o.maxTokens) {
    const t = sampleFrom(logitsOf(ctx), o.temperature, rng.nextFloat());
    if (o.stop.includes(t)) return { tokens, reason: 'stop', stopToken: t };
    tokens.push(t);
    ctx.push(t);
  }
  return { tokens, reason: 'length' };
}

export class FakeModel implements NativeModel {
  readonly backendName = 'fake';
  readonly deviceMemory = undefined;
  readonly weightDeviceBytes = 0;
  readonly kvBytesPerToken = 4;
  readonly weightBytes = 0;
  readonly weightsLocked = false;
  readonly lockError = undefined;
  readonly codedWeights = { matrices: 0, sourceBytes: 0, codedBytes: 0, escapes: 0 };
  readonly kv: Int32Array;
  readonly batches: StepBatch[] = [];
  readonly violations: string[] = [];
  /** Throw (as a native exception would) on the next step. */
  failNext: string | null = null;
  /** Called at the start of every step (tests use it to abort mid-flight). */
  onStep: ((batch: StepBatch, index: number) => void) | null = null;
  closed = false;
  private inFlight = false;

  /** maxNumBatchedTokens: what the workspace was sized for at load (the native default, 8192, unless told). */
  constructor(readonly kvBlocks: number, readonly blockSize: number, readonly maxNumBatchedTokens = 8192) {
    this.kv = new Int32Array(kvBlocks * blockSize).fill(-1);
  }

  async step(b: StepBatch): Promise<StepResult> {
    if (this.inFlight) this.violations.push('two steps in flight');
    if (this.closed) this.violations.push('step after close');
    this.inFlight = true;
    try {
      // Like an AsyncWorker: the result arrives on a later turn of the event loop.
      await new Promise((r) => setImmediate(r));
      this.onStep?.(b, this.batches.length);
      this.batches.push(b);
      if (this.failNext !== null) {
        const m = this.failNext;
        this.failNext = null;
        throw new Error(m);
      }
      return this.run(b);
    } finally {
      this.inFlight = false;
    }
  }

  close(): void {
    this.closed = true;
  }

  private check(ok: boolean, what: string): void {
    if (!ok) {
      this.violations.push(what);
      throw new Error(`fake model: bad batch: ${what}`);
    }
  }

  private run(b: StepBatch): StepResult {
    const bs = this.blockSize;
    const n = b.sample.length;
    const T = b.tokens.length;
    const w = b.blockTableWidth;
    this.check(n > 0 && b.seqStart.length === n + 1 && b.seqStart[0] === 0 && b.seqStart[n] === T, 'seqStart');
    this.check(b.positions.length === T && b.targets.length === T, 'per-token lengths');
    for (const a of [b.temperature, b.topP, b.topK, b.uniform, b.numLogprobs, b.promptLogprobs]) this.check(a.length === n, 'per-seq lengths');
    this.check(b.blockTables.length === n * w, 'blockTables size');
    const writtenBy = new Map<number, number>();
    /** The KV state of position q of sequence s, through its block table. */
    const readKv = (s: number, q: number): number => {
      const j = Math.floor(q / bs);
      const blk = j < w ? b.blockTables[s * w + j] : -1;
      this.check(blk >= 0 && blk < this.kvBlocks, `position ${q} of sequence ${s} has no block`);
      const v = this.kv[blk * bs + (q % bs)];
      this.check(v >= 0, `KV of position ${q} missing`);
      return v;
    };
    for (let s = 0; s < n; s++) {
      const t0 = b.seqStart[s];
      const t1 = b.seqStart[s + 1];
      this.check(t1 > t0, `sequence ${s} has no tokens`);
      const p0 = b.positions[t0];
      // The step continues from the state of the position before, wherever the block table finds it.
      let state = p0 > 0 ? readKv(s, p0 - 1) : STATE0;
      for (let t = t0; t < t1; t++) {
        const p = b.positions[t];
        this.check(p === p0 + (t - t0), `positions of sequence ${s} not consecutive`);
        const slot = Math.floor(p / bs);
        this.check(slot < w, `position ${p} beyond the block table`);
        const blk = b.blockTables[s * w + slot];
        this.check(blk >= 0 && blk < this.kvBlocks, `position ${p} of sequence ${s} has no block`);
        const owner = writtenBy.get(blk);
        this.check(owner === undefined || owner === s, `block ${blk} written by two sequences`);
        writtenBy.set(blk, s);
        state = nextState(state, b.tokens[t]);
        this.kv[blk * bs + (p % bs)] = state;
      }
    }
    for (let s = 0; s < n; s++) {
      for (let j = 0; j < w; j++) {
        const blk = b.blockTables[s * w + j];
        const owner = writtenBy.get(blk);
        this.check(blk < 0 || owner === undefined || owner === s, `block ${blk} written while shared`);
      }
    }
    const topWidth = Math.max(0, ...b.numLogprobs);
    const promptTopWidth = Math.max(0, ...b.promptLogprobs);
    const r: StepResult = {
      tokens: new Int32Array(n).fill(-1),
      logprobs: new Float32Array(n).fill(NaN),
      topWidth,
      topIds: new Int32Array(n * topWidth).fill(-1),
      topLogprobs: new Float32Array(n * topWidth).fill(NaN),
      promptTopWidth,
      targetLogprobs: new Float32Array(T).fill(NaN),
      promptTopIds: new Int32Array(T * promptTopWidth).fill(-1),
      promptTopLogprobs: new Float32Array(T * promptTopWidth).fill(NaN),
    };
    for (let s = 0; s < n; s++) {
      const t0 = b.seqStart[s];
      const t1 = b.seqStart[s + 1];
      for (let t = t0; t < t1; t++) {
        const last = t === t1 - 1;
        if (b.targets[t] < 0 && !(last && b.sample[s])) continue;
        const p = b.positions[t];
        const states: number[] = [];
        for (let q = 0; q <= p; q++) states.push(readKv(s, q));
        const logits = logitsOfStates(states);
        const lsm = logSoftmax(logits);
        if (b.targets[t] >= 0) {
          r.targetLogprobs[t] = lsm[b.targets[t]];
          topN(lsm, Math.max(0, b.promptLogprobs[s])).forEach((id, k) => {
            r.promptTopIds[t * promptTopWidth + k] = id;
            r.promptTopLogprobs[t * promptTopWidth + k] = lsm[id];
          });
        }
        if (last && b.sample[s]) {
          const tok = sampleFrom(logits, b.temperature[s], b.uniform[s]);
          r.tokens[s] = tok;
          r.logprobs[s] = lsm[tok];
          topN(lsm, Math.max(0, b.numLogprobs[s])).forEach((id, k) => {
            r.topIds[s * topWidth + k] = id;
            r.topLogprobs[s * topWidth + k] = lsm[id];
          });
        }
      }
    }
    return r;
  }
}
