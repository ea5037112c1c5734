// The optional logits-processing fields of a StepBatch (see addon-types.ts): min_p, the presence /
// frequency / repetition penalties with their CSR token lists, logit_bias, and min_tokens' ban on
// stop tokens. A field is set only when a sequence that samples in this step uses it, so a batch of
// plain requests carries none of them and costs one pass over the chunks.
import type { StepBatch } from '../native/addon-types.ts';
import type { ScheduledChunk } from './scheduler.ts';
import type { Sequence } from './sequence.ts';
import type { SamplingParams } from './types.ts';

/** Per-sequence bookkeeping, built on first use and kept up to date incrementally. */
export class LogitsState {
  /** Distinct generated tokens → times generated, over the first `counted` generated tokens. */
  readonly outputCounts = new Map<number, number>();
  private counted = 0;
  private promptDistinct: Int32Array | null = null;
  private bias: { ids: Int32Array; values: Float32Array } | null = null;

  constructor(private readonly seq: Sequence) {}

  /** Brings outputCounts up to the sequence's current tokens (a stop token is never counted: it ends the request). */
  syncOutputs(): Map<number, number> {
    const { tokens, numPromptTokens } = this.seq;
    for (let i = numPromptTokens + this.counted; i < tokens.length; i++) {
      const t = tokens[i];
      this.outputCounts.set(t, (this.outputCounts.get(t) ?? 0) + 1);
    }
    this.counted = tokens.length - numPromptTokens;
    return this.outputCounts;
  }

  /** The prompt's distinct tokens (computed once; the prompt never changes). */
  promptTokens(): Int32Array {
    if (!this.promptDistinct) this.promptDistinct = Int32Array.from(new Set(this.seq.tokens.slice(0, this.seq.numPromptTokens)));
    return this.promptDistinct;
  }

  /** logit_bias as arrays (parsed once). */
  userBias(): { ids: Int32Array; values: Float32Array } {
    if (!this.bias) {
      const entries = Object.entries(this.seq.params.logitBias ?? {});
      this.bias = { ids: Int32Array.from(entries, ([id]) => Number(id)), values: Float32Array.from(entries, ([, v]) => v) };
    }
    return this.bias;
  }
}

const usesOutputs = (p: SamplingParams) => (p.presencePenalty ?? 0) !== 0 || (p.frequencyPenalty ?? 0) !== 0 || usesPrompt(p);
const usesPrompt = (p: SamplingParams) => (p.repetitionPenalty ?? 1) !== 1;
const hasUserBias = (p: SamplingParams) => p.logitBias !== undefined && Object.keys(p.logitBias).length > 0;

/** Token ids min_tokens forbids for now: the stop ids and, unless ignoreEos, EOS; none once enough tokens are out. */
function bannedNow(seq: Sequence, eosTokenIds: readonly number[]): number[] {
  const { params } = seq;
  if (seq.numOutputTokens >= (params.minTokens ?? 0)) return [];
  return params.ignoreEos ? params.stopTokenIds : [...params.stopTokenIds, ...eosTokenIds];
}

/** Fills the optional logits-processing fields of `b`, whose sequence s is chunks[s]. */
export function addLogitsProcessing(b: StepBatch, chunks: readonly ScheduledChunk<Sequence>[], eosTokenIds: readonly number[]): void {
  let minP = false;
  let presence = false;
  let frequency = false;
  let repetition = false;
  let bias = false;
  for (const c of chunks) {
    if (!c.sample) continue;
    const p = c.seq.params;
    minP ||= (p.minP ?? 0) > 0;
    presence ||= (p.presencePenalty ?? 0) !== 0;
    frequency ||= (p.frequencyPenalty ?? 0) !== 0;
    repetition ||= usesPrompt(p);
    bias ||= hasUserBias(p) || (p.minTokens ?? 0) > c.seq.numOutputTokens;
  }
  if (!(minP || presence || frequency || repetition || bias)) return;

  const numSeqs = chunks.length;
  const perSeq = (get: (p: SamplingParams) => number | undefined, off: number) =>
    Float32Array.from(chunks, (c) => (c.sample ? (get(c.seq.params) ?? off) : off));
  if (minP) b.minP = perSeq((p) => p.minP, 0);
  if (presence) b.presencePenalty = perSeq((p) => p.presencePenalty, 0);
  if (frequency) b.frequencyPenalty = perSeq((p) => p.frequencyPenalty, 0);
  if (repetition) b.repetitionPenalty = perSeq((p) => p.repetitionPenalty, 1);

  const states = chunks.map((c) => {
    if (!c.sample) return null;
    const p = c.seq.params;
    if (!usesOutputs(p) && !hasUserBias(p) && !(p.minTokens ?? 0)) return null;
    return (c.seq.logitsState ??= new LogitsState(c.seq));
  });

  if (presence || frequency || repetition) {
    const outputs = chunks.map((c, s) => (states[s] && usesOutputs(c.seq.params) ? states[s].syncOutputs() : null));
    const start = new Int32Array(numSeqs + 1);
    outputs.forEach((m, s) => (start[s + 1] = start[s] + (m?.size ?? 0)));
    const ids = new Int32Array(start[numSeqs]);
    const counts = new Int32Array(start[numSeqs]);
    outputs.forEach((m, s) => {
      let k = start[s];
      for (const [id, n] of m ?? []) {
        ids[k] = id;
        counts[k++] = n;
      }
    });
    b.outputTokenStart = start;
    b.outputTokenIds = ids;
    b.outputTokenCounts = counts;
  }
  if (repetition) {
    const prompts = chunks.map((c, s) => (states[s] && usesPrompt(c.seq.params) ? states[s].promptTokens() : null));
    const start = new Int32Array(numSeqs + 1);
    prompts.forEach((a, s) => (start[s + 1] = start[s] + (a?.length ?? 0)));
    const ids = new Int32Array(start[numSeqs]);
    prompts.forEach((a, s) => a && ids.set(a, start[s]));
    b.promptTokenStart = start;
    b.promptTokenIds = ids;
  }
  if (bias) {
    const user = chunks.map((c, s) => (states[s] && hasUserBias(c.seq.params) ? states[s].userBias() : null));
    const banned = chunks.map((c) => (c.sample ? bannedNow(c.seq, eosTokenIds) : []));
    const start = new Int32Array(numSeqs + 1);
    for (let s = 0; s < numSeqs; s++) start[s + 1] = start[s] + (user[s]?.ids.length ?? 0) + banned[s].length;
    const ids = new Int32Array(start[numSeqs]);
    const values = new Float32Array(start[numSeqs]);
    for (let s = 0; s < numSeqs; s++) {
      let k = start[s];
      const u = user[s];
      if (u) {
        ids.set(u.ids, k);
        values.set(u.values, k);
        k += u.ids.length;
      }
      // -inf added to a logit removes the token from the draw and from greedy's argmax.
      for (const id of banned[s]) {
        ids[k] = id;
        values[k++] = -Infinity;
      }
    }
    b.biasStart = start;
    b.biasIds = ids;
    b.biasValues = values;
  }
}
