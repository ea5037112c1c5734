// One request's state inside the engine: its tokens (prompt, then generated), its KV
// bookkeeping, its RNG and the queue its events go to.
import type { AsyncQueue } from './async-queue.ts';
import type { SchedSequence } from './scheduler.ts';
import type { EngineEvent, SamplingParams, TokenGuide, TokenLogprob } from './types.ts';
import { Xoshiro128 } from './rng.ts';
import type { LogitsState } from './logits-processing.ts';

/**
 * Events a sequence may have waiting for its consumer before it is paused (not scheduled) until the
 * consumer catches up: a client that stops reading its stream stops its generation instead of
 * filling memory. A consumer that keeps up holds zero or one.
 */
export const MAX_EVENT_BACKLOG = 64;

export class Sequence implements SchedSequence {
  readonly tokens: number[];
  readonly numPromptTokens: number;
  blockTable: number[] = [];
  blockHashes: string[] = [];
  numComputed = 0;
  readonly rng: Xoshiro128;
  /** entries[p] = logprob of prompt token p given tokens before it; entries[0] stays null. */
  promptEntries: (TokenLogprob | null)[] | null;
  promptLogprobsSent = false;
  abortRequested = false;
  finished = false;
  /** Penalty/bias bookkeeping, created by logits-processing.ts for requests that use them. */
  logitsState: LogitsState | null = null;
  /** Guided decoding (request.guide); disposed and cleared when the sequence ends. */
  guide: TokenGuide | null = null;
  /** Detaches the abort listener; set by the engine. */
  cleanup: () => void = () => {};

  constructor(
    readonly id: number,
    promptTokens: readonly number[],
    readonly params: SamplingParams,
    seed: number,
    readonly events: AsyncQueue<EngineEvent>,
  ) {
    this.tokens = [...promptTokens];
    this.numPromptTokens = promptTokens.length;
    this.rng = new Xoshiro128(seed);
    this.promptEntries = params.promptLogprobs === null ? null : new Array<TokenLogprob | null>(promptTokens.length).fill(null);
  }

  get cacheSalt(): string | undefined {
    return this.params.cacheSalt;
  }

  get numOutputTokens(): number {
    return this.tokens.length - this.numPromptTokens;
  }

  /** Still collecting prompt logprobs: every prompt position must be computed, none cached. */
  get wantsPromptLogprobs(): boolean {
    return this.promptEntries !== null && !this.promptLogprobsSent;
  }

  get usePrefixCache(): boolean {
    return !this.wantsPromptLogprobs;
  }

  /** Its consumer has fallen MAX_EVENT_BACKLOG events behind: skip it until that changes. */
  get paused(): boolean {
    return this.events.size >= MAX_EVENT_BACKLOG;
  }
}
