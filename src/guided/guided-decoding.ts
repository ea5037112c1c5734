// Guided decoding for one model, run in one worker thread (the grammar worker, guide-worker.ts): the
// vocabulary prepared for xgrammar, grammars generated and compiled (cached, LRU), a matcher per
// request choice and its token masks all live there, so none of that blocks the event loop. One
// worker, because a compiled grammar cannot move between xgrammar (WASM) instances.
//
// Costs (in the worker, see bench/guided-mask.ts): preparing the 151,936-token vocabulary takes about
// a second on first use; compiling a grammar 10 ms to a few hundred ms (cached by grammar text); a
// mask per token is usually well under a millisecond, plus a round trip to the worker (about
// 0.04 ms), shared by all the guides whose next() starts in the same turn of the event loop. The
// worker does one thing at a time: while it compiles, running guided requests wait for their masks,
// which is why guide-grammar.ts and json-schema-grammar.ts bound what they generate.
//
// If the worker dies (a crash, its heap limit), the calls in flight and every guide it served fail
// with "grammar worker failed: ..."; the next call starts a fresh worker (compiling anew: the
// compiled grammars died with it).
import { RequestError, type TokenGuide } from '../engine/types.ts';
import { WorkerThread, type SerializedError } from '../worker/rpc.ts';
import type { GuideApi, GuideStats, GuideWorkerData } from './guide-protocol.ts';
import type { GuideOptions, GuideSpec } from './guide-spec.ts';
import { StepBatcher, type StepResult } from './step-batcher.ts';
import { checkEnumBudget } from './request-spec.ts';
import { WorkerGuide, type GuideLink } from './worker-guide.ts';

export type { GuideOptions, GuideSpec } from './guide-spec.ts';
export type { GuideStats } from './guide-protocol.ts';

export interface GuidedDecodingOptions {
  /** The model's tokenizer.json (read by the worker on first use). */
  tokenizerFile: string;
  /** Rows of the logits: the model's vocab_size (may exceed the tokenizer's, padding never allowed). */
  vocabSize: number;
  /** Tokens that end generation; a complete output allows only these. */
  stopTokenIds: readonly number[];
  /** Compiled grammars kept (default 64). */
  cacheSize?: number;
  /**
   * The worker's JS heap limit in MB (default 1024): a runaway input kills the worker, not the server.
   * With the Qwen3 vocabulary the worker runs within 64 MB; grammar texts are at most 512 Ki
   * characters. xgrammar's WASM memory is outside this limit (WASM caps it at 4 GB).
   */
  maxHeapMb?: number;
  /** The worker's module (default guide-worker.ts); tests substitute one serving the same calls. */
  workerModule?: URL;
}

/** A compiled grammar (in the worker's cache); create a guide per generated sequence. */
export class CompiledGuide {
  constructor(
    private readonly owner: GuidedDecoding,
    readonly spec: GuideSpec,
  ) {}

  /** A guide over this grammar (compiled again if the worker's cache dropped it meanwhile). */
  async createGuide(options: GuideOptions = {}): Promise<TokenGuide> {
    const [guide] = await this.owner.guides(this.spec, 1, options);
    return guide;
  }
}

/** A RequestError thrown in the worker stays a RequestError (a 400 naming the parameter). */
function reviveError(e: SerializedError): Error {
  if (e.name === 'RequestError') return new RequestError(e.message, e.param ?? null);
  return Object.assign(new Error(e.message), { name: e.name });
}

export class GuidedDecoding {
  readonly maskWords: number;
  private readonly thread: WorkerThread;
  private readonly batcher: StepBatcher;
  private readonly link: GuideLink;
  /** Counts worker deaths: guides remember the generation that made them. */
  private generation = 0;
  private death: Error | null = null;
  private closed = false;

  constructor(options: GuidedDecodingOptions) {
    if (!Number.isInteger(options.vocabSize) || options.vocabSize < 1) throw new Error(`vocabSize must be a positive integer, got ${options.vocabSize}`);
    this.maskWords = Math.ceil(options.vocabSize / 32);
    const data: GuideWorkerData = {
      tokenizerFile: options.tokenizerFile,
      vocabSize: options.vocabSize,
      stopTokenIds: [...options.stopTokenIds],
      cacheSize: options.cacheSize,
    };
    this.thread = new WorkerThread({
      module: options.workerModule ?? new URL('./guide-worker.ts', import.meta.url),
      data,
      resourceLimits: { maxOldGenerationSizeMb: options.maxHeapMb ?? 1024 },
      reviveError,
      label: 'grammar worker',
      onExit: (error) => {
        this.generation++;
        this.death = error;
      },
    });
    this.batcher = new StepBatcher(
      {
        step: (entries) => this.call('step', entries),
        dispose: (ids) => void this.call('dispose', ids).catch(() => {}),
      },
      this.maskWords,
    );
    this.link = {
      words: this.maskWords,
      lost: (generation) => this.lost(generation),
      step: (id, tokens): Promise<StepResult> => this.batcher.step({ id, tokens }),
      dispose: (id, generation) => {
        if (!this.lost(generation)) this.batcher.dispose(id);
      },
    };
  }

  /** Starts the worker, loads xgrammar and prepares the vocabulary (done lazily otherwise; call it at startup to pay early). */
  async warmup(): Promise<void> {
    await this.call('warmup');
  }

  /** Compiles (or finds in the worker's cache) the grammar of `spec`. */
  async compile(spec: GuideSpec): Promise<CompiledGuide> {
    await this.call('compile', spec);
    return new CompiledGuide(this, spec);
  }

  /** One guide per choice of a request, over the compiled grammar of `spec` (RequestError on a bad spec). */
  async guides(spec: GuideSpec, n: number, options: GuideOptions = {}): Promise<TokenGuide[]> {
    checkEnumBudget(spec);
    const ids = await this.call('guides', spec, n, { startInReasoning: options.startInReasoning === true });
    // The worker that answered is the current one: a death since would have failed the call.
    const generation = this.generation;
    return ids.map((id) => new WorkerGuide(this.link, id, generation));
  }

  /** The worker's live matchers and cached grammars, disposals made so far included (starts the worker if it is not running). */
  stats(): Promise<GuideStats> {
    this.batcher.flush();
    return this.call('stats');
  }

  /** Stops the worker; guides' calls fail from now on. Call it once, at shutdown. */
  async close(): Promise<void> {
    this.closed = true;
    await this.thread.close();
  }

  private lost(generation: number): Error | null {
    if (this.closed) return new Error('guided decoding is closed');
    if (generation !== this.generation) return new Error(`${this.death?.message ?? 'grammar worker failed'} (this guide's grammar state was lost with it)`);
    return null;
  }

  /** Posts at once (calls reach the worker in the order made); a failure to start the worker rejects, never throws. */
  private async call<K extends keyof GuideApi>(method: K, ...args: Parameters<GuideApi[K]>): Promise<ReturnType<GuideApi[K]>> {
    return this.thread.call<ReturnType<GuideApi[K]>>(method, args);
  }
}

/** Guided decoding for a model whose tokenizer.json is `tokenizerFile` (read by the worker on first use). */
export function guidedDecodingFor(tokenizerFile: string, vocabSize: number, stopTokenIds: readonly number[]): GuidedDecoding {
  return new GuidedDecoding({ tokenizerFile, vocabSize, stopTokenIds });
}
