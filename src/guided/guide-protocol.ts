// The calls the main thread makes to the grammar worker (guide-worker.ts serves them with a
// GuideService): method names, arguments and results, shared by both sides.
import type { GuideStatus } from '../engine/types.ts';
import type { GuideOptions, GuideSpec } from './guide-spec.ts';

/** What the worker starts with (WorkerOptions.data). */
export interface GuideWorkerData {
  /** The model's tokenizer.json, read and parsed in the worker on first use. */
  tokenizerFile: string;
  /** Rows of the logits: the model's vocab_size (may exceed the tokenizer's, padding never allowed). */
  vocabSize: number;
  /** Tokens that end generation; a complete output allows only these. */
  stopTokenIds: number[];
  /** Compiled grammars kept (default 64). */
  cacheSize?: number;
}

/** One guide's turn in a step: the tokens sampled since its last mask, then its next mask. */
export interface StepEntry {
  /** The guide, as guides() named it. */
  id: number;
  /** Accepted in order before the mask is computed; one rejected fails the entry. */
  tokens: number[];
}

/** A GuideStatus, or why this guide failed (the others of the step are unaffected). */
export type StepOutcome = GuideStatus | { error: string };

export interface StepReply {
  outcomes: StepOutcome[];
  /** Entry i's mask row at words [i * words, (i + 1) * words); zeros for 'free' and failed entries. Transferred. */
  masks: ArrayBuffer;
}

export interface GuideStats {
  /** Matchers alive in the worker: guides created and not yet disposed. */
  matchers: number;
  /** Compiled grammars in the worker's cache. */
  grammars: number;
}

export interface GuideApi {
  /** Loads xgrammar and prepares the vocabulary. */
  warmup(): void;
  /** Compiles (or finds in the cache) the grammar of `spec`. */
  compile(spec: GuideSpec): void;
  /** Creates `n` guides over the grammar of `spec`; returns their ids. */
  guides(spec: GuideSpec, n: number, options: GuideOptions): number[];
  /** Advances several guides and computes their masks, in one round trip. */
  step(entries: StepEntry[]): StepReply;
  /** Frees guides (unknown ids are ignored: freeing is idempotent). */
  dispose(ids: number[]): void;
  stats(): GuideStats;
}
