// Coalesces the guides' requests of one turn of the event loop into one round trip to the grammar
// worker: every next() started before the current task yields (as an engine step starting all its
// guided sequences' next() before awaiting any) shares one 'step' call, and disposals ride along.
import type { StepEntry, StepOutcome, StepReply } from './guide-protocol.ts';

export interface StepResult {
  outcome: StepOutcome;
  /** The mask row (a view of the reply's buffer); meaningful for 'masked' and 'complete'. */
  row: Uint32Array;
}

export interface StepTransport {
  step(entries: StepEntry[]): Promise<StepReply>;
  /** Fire and forget: failures only mean the worker (and so the guides) is gone already. */
  dispose(ids: number[]): void;
}

interface Waiting {
  entry: StepEntry;
  resolve: (r: StepResult) => void;
  reject: (e: Error) => void;
}

export class StepBatcher {
  private waiting: Waiting[] = [];
  private disposals: number[] = [];
  private scheduled = false;

  constructor(
    private readonly transport: StepTransport,
    private readonly words: number,
  ) {}

  step(entry: StepEntry): Promise<StepResult> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ entry, resolve, reject });
      this.schedule();
    });
  }

  dispose(id: number): void {
    this.disposals.push(id);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => this.flush());
  }

  /** Sends what is waiting now rather than at the end of this turn (calls posted after it see its effects). */
  flush(): void {
    this.scheduled = false;
    const batch = this.waiting;
    const ids = this.disposals;
    this.waiting = [];
    this.disposals = [];
    // Steps first: a guide disposed in this turn took its last step before (proxies never step after).
    if (batch.length > 0) {
      this.transport.step(batch.map((w) => w.entry)).then(
        (reply) => {
          const rows = new Uint32Array(reply.masks);
          batch.forEach((w, i) => w.resolve({ outcome: reply.outcomes[i], row: rows.subarray(i * this.words, (i + 1) * this.words) }));
        },
        (err: Error) => batch.forEach((w) => w.reject(err)),
      );
    }
    if (ids.length > 0) this.transport.dispose(ids);
  }
}
