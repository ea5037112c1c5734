// Lays scheduled chunks out as the native StepBatch (typed arrays, see addon-types.ts) and
// reads a StepResult back per chunk.
import type { StepBatch, StepResult } from '../native/addon-types.ts';
import type { ScheduledChunk } from './scheduler.ts';
import type { Sequence } from './sequence.ts';
import type { GuideStatus, TokenLogprob, TopLogprob } from './types.ts';
import { addLogitsProcessing } from './logits-processing.ts';

/** `eosTokenIds`: the engine's EOS ids (min_tokens keeps them from being sampled too early). */
export function buildStepBatch(chunks: readonly ScheduledChunk<Sequence>[], eosTokenIds: readonly number[] = []): StepBatch {
  const numSeqs = chunks.length;
  let numTokens = 0;
  let width = 1;
  for (const c of chunks) {
    numTokens += c.numTokens;
    width = Math.max(width, c.seq.blockTable.length);
  }
  const b: StepBatch = {
    tokens: new Int32Array(numTokens),
    positions: new Int32Array(numTokens),
    seqStart: new Int32Array(numSeqs + 1),
    blockTables: new Int32Array(numSeqs * width).fill(-1),
    blockTableWidth: width,
    sample: new Uint8Array(numSeqs),
    temperature: new Float32Array(numSeqs),
    topP: new Float32Array(numSeqs),
    topK: new Int32Array(numSeqs),
    uniform: new Float32Array(numSeqs),
    numLogprobs: new Int32Array(numSeqs),
    promptLogprobs: new Int32Array(numSeqs),
    targets: new Int32Array(numTokens).fill(-1),
  };
  let t = 0;
  chunks.forEach((c, s) => {
    const { seq } = c;
    const { params } = seq;
    b.seqStart[s] = t;
    const wantPrompt = seq.wantsPromptLogprobs;
    for (let j = 0; j < c.numTokens; j++, t++) {
      const pos = c.start + j;
      b.tokens[t] = seq.tokens[pos];
      b.positions[t] = pos;
      if (wantPrompt && pos + 1 < seq.numPromptTokens) b.targets[t] = seq.tokens[pos + 1];
    }
    b.blockTables.set(seq.blockTable, s * width);
    b.sample[s] = c.sample ? 1 : 0;
    b.temperature[s] = params.temperature;
    b.topP[s] = params.topP;
    b.topK[s] = params.topK;
    // One draw per sampled token and none otherwise: the stream depends only on the seed.
    b.uniform[s] = c.sample ? seq.rng.nextFloat() : 0;
    b.numLogprobs[s] = params.logprobs ?? -1;
    b.promptLogprobs[s] = wantPrompt ? (params.promptLogprobs ?? -1) : -1;
  });
  b.seqStart[numSeqs] = t;
  addLogitsProcessing(b, chunks, eosTokenIds);
  return b;
}

/** Per chunk: what its guide said ('free' without one or when not sampling), or the error it threw. */
export type GuideOutcome = GuideStatus | { error: unknown };

/**
 * Guided decoding: asks the guide of every sequence that samples in this step for its mask and lays
 * the rows out as batch.allowedMask / hasMask (left unset when no sequence is masked).
 */
export async function fillGuideMasks(
  batch: StepBatch,
  chunks: readonly ScheduledChunk<Sequence>[],
  vocabSize: number,
): Promise<GuideOutcome[]> {
  const words = Math.ceil(vocabSize / 32);
  const outcomes: GuideOutcome[] = chunks.map(() => 'free');
  let mask: Uint32Array | null = null;
  let has: Uint8Array | null = null;
  // Every guide is asked at once: guides served by one worker (src/guided) answer a step in one round trip.
  const pending: Promise<void>[] = [];
  for (let s = 0; s < chunks.length; s++) {
    const { seq, sample } = chunks[s];
    if (!sample || !seq.guide) continue;
    mask ??= new Uint32Array(chunks.length * words);
    const hasMask = (has ??= new Uint8Array(chunks.length));
    let status: Promise<GuideStatus>;
    try {
      status = seq.guide.next(mask.subarray(s * words, (s + 1) * words));
    } catch (error) {
      status = Promise.reject(error);
    }
    pending.push(
      status.then(
        (st) => {
          outcomes[s] = st;
          if (st !== 'free') hasMask[s] = 1;
        },
        (error: unknown) => {
          outcomes[s] = { error };
        },
      ),
    );
  }
  await Promise.all(pending);
  if (mask && has && has.some((h) => h === 1)) {
    batch.allowedMask = mask;
    batch.hasMask = has;
  }
  return outcomes;
}

function topList(ids: Int32Array, lps: Float32Array, offset: number, n: number): TopLogprob[] {
  const top: TopLogprob[] = [];
  for (let j = 0; j < n; j++) {
    const id = ids[offset + j];
    if (id < 0) break;
    top.push({ token: id, logprob: lps[offset + j] });
  }
  return top;
}

/** The sampled token of sequence s with its logprob and top-n (n = the request's logprobs). */
export function sampledLogprob(r: StepResult, s: number, n: number): TokenLogprob {
  return {
    token: r.tokens[s],
    logprob: r.logprobs[s],
    top: topList(r.topIds, r.topLogprobs, s * r.topWidth, Math.min(n, r.topWidth)),
  };
}

/** Prompt logprob read at batch token t: the logprob of the target (next prompt token) there. */
export function promptLogprobAt(r: StepResult, t: number, target: number, n: number): TokenLogprob {
  return {
    token: target,
    logprob: r.targetLogprobs[t],
    top: topList(r.promptTopIds, r.promptTopLogprobs, t * r.promptTopWidth, Math.min(n, r.promptTopWidth)),
  };
}

/** Checks the result's shape against the batch: a malformed result must not be half-applied. */
export function checkStepResult(b: StepBatch, r: StepResult): void {
  const numSeqs = b.sample.length;
  const numTokens = b.tokens.length;
  const bad = (what: string) => new Error(`native step returned a malformed result: ${what}`);
  if (r.tokens.length !== numSeqs || r.logprobs.length !== numSeqs) throw bad('tokens/logprobs length');
  if (r.topIds.length !== numSeqs * r.topWidth || r.topLogprobs.length !== numSeqs * r.topWidth) throw bad('top width');
  if (r.targetLogprobs.length !== numTokens) throw bad('targetLogprobs length');
  if (r.promptTopIds.length !== numTokens * r.promptTopWidth || r.promptTopLogprobs.length !== numTokens * r.promptTopWidth) {
    throw bad('prompt top width');
  }
  for (let s = 0; s < numSeqs; s++) {
    if (b.sample[s] && r.tokens[s] < 0) throw bad(`no token sampled for sequence ${s}`);
  }
}
