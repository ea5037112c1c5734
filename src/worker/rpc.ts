// Calls into worker threads: a TypeScript module runs in each worker (through boot.mjs) and serves
// named methods; the main thread calls them as promises. Used to keep CPU-heavy work (tokenizing,
// template rendering, grammar compilation) off the event loop that serves every other request.
import { parentPort, Worker, workerData, type ResourceLimits } from 'node:worker_threads';

/** An error as it crosses the thread boundary: enough to rebuild an ApiError / RequestError / TemplateError. */
export interface SerializedError {
  name: string;
  message: string;
  param?: string | null;
  status?: number;
}

type Reply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: SerializedError };
type Call = { id: number; method: string; args: unknown[] };

export type Handlers = Record<string, (...args: never[]) => unknown>;

/**
 * A handler's result whose `list` (ArrayBuffers inside `value`) moves to the caller instead of being
 * copied; the caller receives `value` alone. The worker must not touch those buffers afterwards.
 */
export class Transfer<T> {
  constructor(
    readonly value: T,
    readonly list: ArrayBuffer[],
  ) {}
}

/** Worker side: answers calls with `handlers` (sync or async); thrown errors travel back serialized. */
export function serveCalls(handlers: Handlers): void {
  const port = parentPort;
  if (!port) throw new Error('serveCalls() must run in a worker thread');
  port.on('message', async ({ id, method, args }: Call) => {
    let reply: Reply;
    let transfer: ArrayBuffer[] = [];
    try {
      const fn = handlers[method] as ((...a: unknown[]) => unknown) | undefined;
      if (!fn) throw new Error(`worker has no method ${method}`);
      let value = await fn(...args);
      if (value instanceof Transfer) {
        transfer = value.list;
        value = value.value;
      }
      reply = { id, ok: true, value };
    } catch (err) {
      const e = err as Partial<SerializedError> & Error;
      reply = {
        id,
        ok: false,
        error: {
          name: String(e?.name ?? 'Error'),
          message: String(e?.message ?? err),
          ...(e?.param !== undefined ? { param: e.param } : {}),
          ...(typeof e?.status === 'number' ? { status: e.status } : {}),
        },
      };
    }
    port.postMessage(reply, transfer);
  });
}

/** The data the worker's module was started with (WorkerOptions.data). */
export function workerInput<T>(): T {
  return (workerData as { data: T }).data;
}

export interface WorkerOptions {
  /** The module to run: a file URL (import.meta.url-relative). */
  module: URL;
  /** Passed to the module (workerInput()); structured-cloned once per worker start. */
  data?: unknown;
  /** Heap limits: a hostile input then kills the worker (its calls fail), not the server. */
  resourceLimits?: ResourceLimits;
  /** Turns a worker's error back into the error class the caller expects. */
  reviveError?: (error: SerializedError) => Error;
  /** Names the worker in errors ("tokenizer worker"). */
  label: string;
  /**
   * Called when the worker dies on its own (crash, heap limit, exit), after its calls in flight were
   * failed, with the error they got; not called for close(). State the worker held is gone: the next
   * call starts a fresh one.
   */
  onExit?: (error: Error) => void;
}

const BOOT = new URL('./boot.mjs', import.meta.url);

/** One worker thread, started on first use and again after it dies; calls are answered in any order. */
export class WorkerThread {
  private worker: Worker | null = null;
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private closed = false;

  constructor(private readonly options: WorkerOptions) {}

  /** Calls in flight on this worker. */
  get load(): number {
    return this.pending.size;
  }

  call<T>(method: string, args: unknown[], transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.closed) return Promise.reject(new Error(`${this.options.label} is closed`));
    const worker = this.start();
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      try {
        worker.postMessage({ id, method, args } satisfies Call, transfer);
      } catch (err) {
        reject(err as Error); // arguments that cannot be cloned: nothing was sent
        return;
      }
      if (this.pending.size === 0) worker.ref();
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
    });
  }

  /** Stops the worker; calls in flight fail. */
  async close(): Promise<void> {
    this.closed = true;
    const w = this.worker;
    this.worker = null;
    this.failAll(new Error(`${this.options.label} is closed`));
    if (w) await w.terminate();
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const { module, data, resourceLimits, reviveError, label } = this.options;
    const worker = new Worker(BOOT, { workerData: { module: module.href, data }, resourceLimits });
    // An idle worker must not keep the process alive (a CLI run ends when its work does); a busy one does.
    worker.unref();
    worker.on('message', (reply: Reply) => {
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      if (this.pending.size === 0) worker.unref();
      if (reply.ok) p.resolve(reply.value);
      else p.reject(reviveError ? reviveError(reply.error) : Object.assign(new Error(reply.error.message), { name: reply.error.name }));
    });
    const died = (err: Error) => {
      if (this.worker !== worker) return;
      this.worker = null;
      const error = new Error(`${label} failed: ${err.message}`, { cause: err });
      this.failAll(error);
      this.options.onExit?.(error);
    };
    worker.on('error', died);
    worker.on('exit', (code) => died(new Error(`exited with code ${code}`)));
    this.worker = worker;
    return worker;
  }

  private failAll(error: Error): void {
    const calls = [...this.pending.values()];
    this.pending.clear();
    for (const p of calls) p.reject(error);
  }
}
