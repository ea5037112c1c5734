// The engine loop: schedule → one native step → postprocess, over and over while there is
// work, asleep otherwise. Requests come in as token ids and leave as EngineEvents.
import type { NativeModel, StepBatch, StepResult } from '../native/addon-types.ts';
import { AsyncQueue } from './async-queue.ts';
import { BlockManager } from './block-manager.ts';
import { randomSeed } from './rng.ts';
import { Scheduler, type SchedulerOutput } from './scheduler.ts';
import { MAX_EVENT_BACKLOG, Sequence } from './sequence.ts';
import { buildStepBatch, checkStepResult, fillGuideMasks, promptLogprobAt, sampledLogprob, type GuideOutcome } from './step-batch.ts';
import type { Engine, EngineEvent, EngineStats, FinishReason, GenerateRequest, TokenLogprob } from './types.ts';
import { validateRequest } from './validate.ts';

export interface EngineOptions {
  model: NativeModel;
  maxModelLen: number;
  eosTokenIds: number[];
  /** Prompt and stop token ids must lie in [0, vocabSize). */
  vocabSize: number;
  maxNumSeqs?: number;
  maxNumBatchedTokens?: number;
  /** Automatic prefix caching (default true, as vLLM). */
  enablePrefixCaching?: boolean;
  /** The engine closes the model in close() (default true). */
  ownsModel?: boolean;
}

/** EngineStats plus the engine's own bookkeeping. */
export interface EngineCounters extends EngineStats {
  steps: number;
}

/** The Engine contract with the fuller counters. */
export interface LlmEngineHandle extends Engine {
  stats(): EngineCounters;
}

export const DEFAULT_MAX_NUM_SEQS = 64;
export const DEFAULT_MAX_NUM_BATCHED_TOKENS = 2048;

export function createEngine(options: EngineOptions): LlmEngineHandle {
  return new LlmEngine(options);
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

class LlmEngine implements LlmEngineHandle {
  readonly maxModelLen: number;
  readonly eosTokenIds: number[];
  private readonly model: NativeModel;
  private readonly vocabSize: number;
  private readonly ownsModel: boolean;
  private readonly blocks: BlockManager;
  private readonly scheduler: Scheduler<Sequence>;
  private readonly live = new Set<Sequence>();
  private nextId = 0;
  private wake: (() => void) | null = null;
  private closing = false;
  /** What requests arriving after close() fail with. */
  private closeReason: Error | null = null;
  private closed: Promise<void> | null = null;
  private readonly loop: Promise<void>;
  private promptTokens = 0;
  private generationTokens = 0;
  private steps = 0;

  constructor(o: EngineOptions) {
    const { model } = o;
    if (!Number.isInteger(o.maxModelLen) || o.maxModelLen < 2) throw new Error(`maxModelLen must be an integer >= 2, got ${o.maxModelLen}`);
    if (!Number.isInteger(o.vocabSize) || o.vocabSize < 1) throw new Error(`vocabSize must be a positive integer, got ${o.vocabSize}`);
    const needBlocks = Math.ceil(o.maxModelLen / model.blockSize);
    if (needBlocks > model.kvBlocks) {
      throw new Error(
        `maxModelLen ${o.maxModelLen} needs ${needBlocks} KV blocks of ${model.blockSize} tokens but the pool has ` +
          `${model.kvBlocks} (${model.kvBlocks * model.blockSize} tokens): lower max-model-len or give the KV cache more memory`,
      );
    }
    const maxNumBatchedTokens = o.maxNumBatchedTokens ?? DEFAULT_MAX_NUM_BATCHED_TOKENS;
    // The backend's workspace was sized at load for model.maxNumBatchedTokens tokens per step; a larger step is rejected there.
    if (maxNumBatchedTokens > model.maxNumBatchedTokens) {
      throw new Error(
        `max-num-batched-tokens ${maxNumBatchedTokens} is more than the model was loaded for: its workspace holds ${model.maxNumBatchedTokens} ` +
          `tokens per step (LoadOptions.maxNumBatchedTokens); load it with maxNumBatchedTokens >= ${maxNumBatchedTokens} or lower max-num-batched-tokens`,
      );
    }
    this.model = model;
    this.maxModelLen = o.maxModelLen;
    this.eosTokenIds = [...o.eosTokenIds];
    this.vocabSize = o.vocabSize;
    this.ownsModel = o.ownsModel ?? true;
    this.blocks = new BlockManager({ numBlocks: model.kvBlocks, blockSize: model.blockSize, enablePrefixCaching: o.enablePrefixCaching ?? true });
    this.scheduler = new Scheduler(this.blocks, {
      maxNumSeqs: o.maxNumSeqs ?? DEFAULT_MAX_NUM_SEQS,
      maxNumBatchedTokens,
    });
    this.loop = this.run();
  }

  generate(request: GenerateRequest): AsyncIterable<EngineEvent> {
    let seq: Sequence | null = null;
    const events = new AsyncQueue<EngineEvent>(() => {
      // The consumer went away: same as an abort.
      if (seq && !seq.finished) {
        seq.abortRequested = true;
        this.notify();
      }
    });
    try {
      if (this.closing) throw this.closeReason ?? new Error('the engine is closed');
      validateRequest(request, { maxModelLen: this.maxModelLen, vocabSize: this.vocabSize });
    } catch (e) {
      request.guide?.dispose();
      events.fail(e);
      return events;
    }
    const { params, signal } = request;
    seq = new Sequence(this.nextId++, request.promptTokens, params, params.seed ?? randomSeed(), events);
    // The consumer caught up with a paused sequence: it may run again.
    events.onTake = () => {
      if (events.size === MAX_EVENT_BACKLOG - 1) this.notify();
    };
    seq.guide = request.guide ?? null;
    this.promptTokens += seq.numPromptTokens;
    if (signal?.aborted) {
      seq.guide?.dispose();
      events.push({ type: 'finish', reason: 'abort', promptTokens: seq.numPromptTokens, completionTokens: 0 });
      events.end();
      return events;
    }
    if (signal) {
      const s = seq;
      const onAbort = () => {
        s.abortRequested = true;
        this.notify();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      seq.cleanup = () => signal.removeEventListener('abort', onAbort);
    }
    this.live.add(seq);
    this.scheduler.add(seq);
    this.notify();
    return events;
  }

  stats(): EngineCounters {
    return {
      running: this.scheduler.running.length,
      waiting: this.scheduler.waiting.length,
      kvBlocksTotal: this.blocks.numBlocks,
      kvBlocksUsed: this.blocks.numUsedBlocks,
      kvBlocksCached: this.blocks.numCachedFreeBlocks,
      numPreemptions: this.scheduler.numPreemptions,
      prefixCacheQueries: this.scheduler.prefixCacheQueries,
      prefixCacheHits: this.scheduler.prefixCacheHits,
      promptTokens: this.promptTokens,
      generationTokens: this.generationTokens,
      steps: this.steps,
    };
  }

  /**
   * After the step in flight, ends every request: with `reason` as its stream's error when given (a
   * server shutting down says so), else with finish 'abort'. Then closes the model if owned.
   */
  close(reason?: Error): Promise<void> {
    if (!this.closed) {
      this.closing = true;
      this.closeReason = reason ?? null;
      this.notify();
      this.closed = this.loop.then(() => {
        for (const seq of [...this.live]) {
          if (!reason) {
            this.finish(seq, 'abort');
          } else if (!seq.finished) {
            this.retire(seq);
            seq.events.fail(reason);
          }
        }
        if (this.ownsModel) this.model.close();
      });
    }
    return this.closed;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private async run(): Promise<void> {
    for (;;) {
      try {
        for (const seq of this.live) if (seq.abortRequested) this.finish(seq, 'abort');
        if (this.closing) return;
        if (!this.scheduler.hasWork) {
          await new Promise<void>((resolve) => (this.wake = resolve));
          continue;
        }
        const out = this.scheduler.schedule();
        if (out.chunks.length === 0) {
          // Every sequence that could run is paused for its consumer: sleep until one catches up (onTake) or aborts.
          if ([...this.scheduler.running, ...this.scheduler.waiting].some((s) => s.paused)) {
            await new Promise<void>((resolve) => (this.wake = resolve));
            continue;
          }
          throw new Error('scheduler produced an empty step while requests are pending');
        }
        const batch = buildStepBatch(out.chunks, this.eosTokenIds);
        // No await unless some sequence is guided: from one step's result to the next step's launch the loop
        // runs without yielding, so that the consumers (SSE formatting, socket writes) of the tokens just
        // produced run while the next step computes, not before it starts.
        const guided = out.chunks.some((c) => c.sample && c.seq.guide);
        const guides: GuideOutcome[] = guided ? await fillGuideMasks(batch, out.chunks, this.vocabSize) : out.chunks.map(() => 'free');
        let result: StepResult;
        try {
          const running = this.model.step(batch);
          running.catch(() => undefined); // handled below; a rejection must not count as unhandled meanwhile
          // While the native step runs on its worker threads, the consumers turn the previous step's events
          // into text and SSE chunks (and I/O, timers and aborts get their turn, also when a model resolves
          // without touching the event loop).
          await yieldToEventLoop();
          result = await running;
          checkStepResult(batch, result);
        } catch (e) {
          this.failSequences(out.chunks.map((c) => c.seq), e);
          continue;
        }
        this.steps++;
        this.scheduler.stepDone(out);
        const guidedAtLength = this.postprocess(out, batch, result, guides);
        if (guidedAtLength.length > 0) await this.finishAtLength(guidedAtLength);
      } catch (e) {
        // A bug in the policy must not take the server down: fail what is in flight, go on.
        this.failSequences([...this.live], e);
        await yieldToEventLoop();
      }
    }
  }

  /** Returns the guided sequences that reached max_tokens (finishAtLength ends them). */
  private postprocess(out: SchedulerOutput<Sequence>, batch: StepBatch, r: StepResult, guides: GuideOutcome[]): Sequence[] {
    const atLength: Sequence[] = [];
    out.chunks.forEach((c, s) => {
      const seq = c.seq;
      if (seq.finished || seq.abortRequested) return;
      if (batch.promptLogprobs[s] >= 0 && seq.promptEntries) {
        const n = batch.promptLogprobs[s];
        const t0 = batch.seqStart[s];
        for (let j = 0; j < c.numTokens; j++) {
          const target = batch.targets[t0 + j];
          if (target >= 0) seq.promptEntries[c.start + j + 1] = promptLogprobAt(r, t0 + j, target, n);
        }
        if (c.start + c.numTokens >= seq.numPromptTokens) {
          seq.promptLogprobsSent = true;
          seq.events.push({ type: 'prompt_logprobs', entries: seq.promptEntries });
        }
      }
      if (!c.sample) return;
      const token = r.tokens[s];
      const { params } = seq;
      const guide = guides[s];
      if (typeof guide === 'object') {
        this.failSequences([seq], new Error(`guided decoding failed: ${guide.error instanceof Error ? guide.error.message : String(guide.error)}`));
        return;
      }
      const isStop = params.stopTokenIds.includes(token) || (!params.ignoreEos && this.eosTokenIds.includes(token));
      // A stop token is counted, so its logprob is reported too (with the finish, as it has no text).
      const stopLogprob = isStop && params.logprobs !== null ? sampledLogprob(r, s, params.logprobs) : undefined;
      if (guide === 'complete') {
        // The guided output is complete: only a stop token was allowed. End here, even under ignore_eos.
        if (isStop) {
          seq.tokens.push(token);
          this.generationTokens++;
        }
        this.finish(seq, 'stop', isStop ? token : undefined, stopLogprob);
        return;
      }
      seq.tokens.push(token);
      this.generationTokens++;
      if (isStop) {
        this.finish(seq, 'stop', token, stopLogprob);
        return;
      }
      if (seq.guide && !seq.guide.accept(token)) {
        this.failSequences([seq], new Error(`guided decoding failed: the grammar rejects token ${token}`));
        return;
      }
      seq.events.push({ type: 'token', token, logprob: params.logprobs === null ? null : sampledLogprob(r, s, params.logprobs) });
      if (seq.numOutputTokens >= params.maxTokens) {
        if (seq.guide) atLength.push(seq);
        else this.finish(seq, 'length');
      }
    });
    return atLength;
  }

  /** A guided output that max_tokens cut exactly where it was complete ends with 'stop', else 'length'. */
  private async finishAtLength(seqs: Sequence[]): Promise<void> {
    for (const seq of seqs) {
      let reason: FinishReason = 'length';
      try {
        if (seq.guide && (await seq.guide.next(new Uint32Array(Math.ceil(this.vocabSize / 32)))) === 'complete') reason = 'stop';
      } catch {
        // The request is over either way: report the cut.
      }
      this.finish(seq, reason);
    }
  }

  /** Takes a sequence out of the engine for good: scheduler, KV blocks, guide. */
  private retire(seq: Sequence): void {
    seq.finished = true;
    this.scheduler.remove(seq);
    this.live.delete(seq);
    seq.cleanup();
    seq.guide?.dispose();
    seq.guide = null;
  }

  private finish(seq: Sequence, reason: FinishReason, stopToken?: number, stopLogprob?: TokenLogprob): void {
    if (seq.finished) return;
    this.retire(seq);
    seq.events.push({
      type: 'finish',
      reason,
      promptTokens: seq.numPromptTokens,
      completionTokens: seq.numOutputTokens,
      ...(stopToken === undefined ? {} : { stopToken }),
      ...(stopToken === undefined || stopLogprob === undefined ? {} : { stopLogprob }),
    });
    seq.events.end();
  }

  private failSequences(seqs: Sequence[], error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    for (const seq of seqs) {
      if (seq.finished) continue;
      this.retire(seq);
      seq.events.fail(new Error(`generation failed: ${message}`, { cause: error }));
    }
  }
}
