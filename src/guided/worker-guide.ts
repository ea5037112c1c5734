// A TokenGuide whose grammar state lives in the grammar worker (a GrammarGuide there, named by id).
//
// accept() must stay synchronous, so it records the token, and the next next() sends it to the
// worker, which accepts it before computing the mask. accept() still answers from the mask that
// next() returned (exactly the tokens the worker's matcher accepts); only a token accepted without a
// mask in between ('free' steps, or several accept() calls in a row) is taken on trust, and if the
// worker's matcher rejects it, the following next() rejects with "the grammar rejects token N".
import type { GuideStatus, TokenGuide } from '../engine/types.ts';
import type { StepResult } from './step-batcher.ts';

/** What a guide needs of its GuidedDecoding. */
export interface GuideLink {
  readonly words: number;
  /** Why guides made by worker `generation` cannot go on (the worker died, or closed); null if they can. */
  lost(generation: number): Error | null;
  step(id: number, tokens: number[]): Promise<StepResult>;
  dispose(id: number, generation: number): void;
}

export class WorkerGuide implements TokenGuide {
  private tokens: number[] = [];
  /** The allowed tokens of the last next(), until a token is accepted. */
  private lastMask: Uint32Array | null = null;
  private failure: Error | null = null;
  private pending = false;
  private disposed = false;

  constructor(
    private readonly link: GuideLink,
    private readonly id: number,
    private readonly generation: number,
  ) {}

  async next(row: Uint32Array): Promise<GuideStatus> {
    this.check();
    if (this.failure) throw this.failure;
    if (row.length !== this.link.words) throw new Error(`guide: mask row has ${row.length} words, the vocabulary needs ${this.link.words}`);
    if (this.pending) throw new Error('guide: next() called again before the previous one settled');
    const lost = this.link.lost(this.generation);
    if (lost) throw (this.failure = lost);
    const tokens = this.tokens;
    this.tokens = [];
    this.lastMask = null;
    this.pending = true;
    let result: StepResult;
    try {
      result = await this.link.step(this.id, tokens);
    } catch (err) {
      // The worker died or closed: this guide's grammar state is gone for good.
      throw (this.failure = err as Error);
    } finally {
      this.pending = false;
    }
    this.check();
    const { outcome, row: mask } = result;
    if (typeof outcome === 'object') throw (this.failure = new Error(outcome.error));
    if (outcome !== 'free') {
      row.set(mask);
      this.lastMask = mask;
    }
    return outcome;
  }

  accept(token: number): boolean {
    this.check();
    const mask = this.lastMask;
    this.lastMask = null;
    if (mask && ((mask[token >>> 5] >>> (token & 31)) & 1) === 0) return false;
    this.tokens.push(token);
    return true;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.lastMask = null;
    this.link.dispose(this.id, this.generation);
  }

  private check(): void {
    if (this.disposed) throw new Error('guide: used after dispose()');
  }
}
