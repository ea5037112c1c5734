// Building StepBatch arrays by hand for native tests: each entry is one sequence's slice of a step.
import type { NativeModel, StepBatch, StepResult } from '../../src/native/addon-types.ts';

export interface SeqSlice {
  /** The tokens fed in this step and the position of the first one. */
  tokens: number[];
  start: number;
  /** Block ids of the sequence (covering every position up to the last fed one). */
  blocks: number[];
  /** Top-N logprobs at every fed position (-1 = none). */
  promptLogprobs?: number;
  /** Next-token targets per fed position (-1 = none). */
  targets?: number[];
  sample?: boolean;
  temperature?: number;
  topP?: number;
  topK?: number;
  uniform?: number;
  numLogprobs?: number;
}

export function buildBatch(seqs: SeqSlice[]): StepBatch {
  const width = Math.max(1, ...seqs.map((s) => s.blocks.length));
  const tokens: number[] = [];
  const positions: number[] = [];
  const targets: number[] = [];
  const seqStart = [0];
  const tables = new Int32Array(seqs.length * width).fill(-1);
  seqs.forEach((s, i) => {
    s.tokens.forEach((t, j) => {
      tokens.push(t);
      positions.push(s.start + j);
      targets.push(s.targets?.[j] ?? -1);
    });
    seqStart.push(tokens.length);
    tables.set(s.blocks, i * width);
  });
  return {
    tokens: Int32Array.from(tokens),
    positions: Int32Array.from(positions),
    seqStart: Int32Array.from(seqStart),
    blockTables: tables,
    blockTableWidth: width,
    sample: Uint8Array.from(seqs.map((s) => (s.sample ? 1 : 0))),
    temperature: Float32Array.from(seqs.map((s) => s.temperature ?? 0)),
    topP: Float32Array.from(seqs.map((s) => s.topP ?? 1)),
    topK: Int32Array.from(seqs.map((s) => s.topK ?? 0)),
    uniform: Float32Array.from(seqs.map((s) => s.uniform ?? 0)),
    numLogprobs: Int32Array.from(seqs.map((s) => s.numLogprobs ?? -1)),
    promptLogprobs: Int32Array.from(seqs.map((s) => s.promptLogprobs ?? -1)),
    targets: Int32Array.from(targets),
  };
}

export interface PositionTop {
  ids: number[];
  logprobs: number[];
}

/** The prompt top-N of every token of sequence `seq` in a step result. */
export function promptTops(batch: StepBatch, res: StepResult, seq: number): PositionTop[] {
  const out: PositionTop[] = [];
  const w = res.promptTopWidth;
  for (let t = batch.seqStart[seq]!; t < batch.seqStart[seq + 1]!; t++) {
    out.push({
      ids: Array.from(res.promptTopIds.subarray(t * w, (t + 1) * w)),
      logprobs: Array.from(res.promptTopLogprobs.subarray(t * w, (t + 1) * w)),
    });
  }
  return out;
}

export async function runStep(model: NativeModel, seqs: SeqSlice[]): Promise<{ batch: StepBatch; res: StepResult }> {
  const batch = buildBatch(seqs);
  return { batch, res: await model.step(batch) };
}

/** Deterministic pseudo-random token ids in [0, limit). */
export function randomTokens(n: number, seed: number, limit = 151643): number[] {
  let s = seed >>> 0 || 1;
  return Array.from({ length: n }, () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s % limit;
  });
}
