// A single-consumer push queue exposed as an AsyncIterable: the engine pushes events as steps
// complete, the HTTP layer pulls them with `for await`. push() never blocks; a producer that must
// not run ahead of its consumer watches `size` and `onTake` (the engine pauses a sequence whose
// events pile up).

export class AsyncQueue<T> implements AsyncIterableIterator<T> {
  private readonly items: T[] = [];
  private readonly pending: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void }[] = [];
  private ended = false;
  private error: unknown = undefined;
  private failed = false;

  /** Runs after the consumer takes a queued item (size has just dropped by one). */
  onTake: (() => void) | null = null;

  /** `onCancel` runs once when the consumer stops early (break/return/throw in `for await`). */
  constructor(private readonly onCancel?: () => void) {}

  get closed(): boolean {
    return this.ended || this.failed;
  }

  /** Items pushed and not yet taken. */
  get size(): number {
    return this.items.length;
  }

  push(item: T): void {
    if (this.closed) return;
    const p = this.pending.shift();
    if (p) p.resolve({ value: item, done: false });
    else this.items.push(item);
  }

  /** Ends the stream after the items already pushed. */
  end(): void {
    if (this.closed) return;
    this.ended = true;
    for (const p of this.pending.splice(0)) p.resolve({ value: undefined, done: true });
  }

  /** Ends the stream with an error, raised after the items already pushed. */
  fail(error: unknown): void {
    if (this.closed) return;
    this.failed = true;
    this.error = error;
    for (const p of this.pending.splice(0)) p.reject(error);
  }

  next(): Promise<IteratorResult<T>> {
    if (this.items.length > 0) {
      const value = this.items.shift() as T;
      this.onTake?.();
      return Promise.resolve({ value, done: false });
    }
    if (this.failed) {
      const e = this.error;
      // Raise once; afterwards the iterator is simply done.
      this.failed = false;
      this.ended = true;
      this.error = undefined;
      return Promise.reject(e);
    }
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this.pending.push({ resolve, reject }));
  }

  return(): Promise<IteratorResult<T>> {
    const wasOpen = !this.closed;
    this.items.length = 0;
    this.ended = true;
    this.failed = false;
    for (const p of this.pending.splice(0)) p.resolve({ value: undefined, done: true });
    if (wasOpen) this.onCancel?.();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}
