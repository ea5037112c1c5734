// One choice of a response: an engine request turned into text deltas, with stop strings applied.
import type { Engine, FinishReason, SamplingParams, TokenGuide, TokenLogprob } from '../engine/types.ts';
import { IncrementalDetokenizer, StopStringMatcher, type Decoder } from '../chat/detokenizer.ts';
import { AsyncQueue } from '../engine/async-queue.ts';

export interface ChoiceSpec {
  index: number;
  promptTokens: number[];
  params: SamplingParams;
  stops: string[];
  includeStop: boolean;
  skipSpecialTokens: boolean;
  /** Ids the user asked to stop on (reported as stop_reason, unlike EOS). */
  userStopTokenIds: ReadonlySet<number>;
  /** Guided decoding for this choice (handed to the engine, which disposes it). */
  guide?: TokenGuide;
}

export interface GeneratedToken {
  id: number;
  logprob: TokenLogprob | null;
}

export interface ChoiceFinish {
  reason: FinishReason;
  /** vLLM's stop_reason: the stop string or user stop token that ended the choice, else null. */
  stopReason: string | number | null;
  promptTokens: number;
  completionTokens: number;
}

export interface ChoiceDelta {
  index: number;
  /** Text safe to show now (complete characters, no possible stop-string prefix). */
  text: string;
  /** The tokens consumed since the previous delta (their text may still be held back). */
  tokens: GeneratedToken[];
  /** Once, before any token, when prompt logprobs were asked. */
  promptLogprobs?: (TokenLogprob | null)[];
  finish?: ChoiceFinish;
}

/**
 * Runs one engine request. The request is aborted when `signal` aborts (client gone), when a
 * stop string ends the choice, or when the consumer stops iterating. The last delta carries finish.
 */
export async function* choiceStream(
  engine: Engine,
  decoder: Decoder,
  spec: ChoiceSpec,
  signal: AbortSignal,
): AsyncGenerator<ChoiceDelta> {
  const controller = new AbortController();
  const onAbort = () => controller.abort();
  signal.addEventListener('abort', onAbort, { once: true });
  if (signal.aborted) controller.abort();
  const detokenizer = new IncrementalDetokenizer(decoder, { skipSpecialTokens: spec.skipSpecialTokens });
  const matcher = new StopStringMatcher(spec.stops, spec.includeStop);
  const { index } = spec;
  // vLLM: stop strings are looked for only once more than min_tokens tokens are out.
  const minTokens = spec.params.minTokens ?? 0;
  let generated = 0;
  // True once the engine itself said finish; otherwise leaving this function aborts the request.
  let engineDone = false;
  try {
    const events = engine.generate({ promptTokens: spec.promptTokens, params: spec.params, signal: controller.signal, guide: spec.guide });
    for await (const event of events) {
      if (event.type === 'prompt_logprobs') {
        yield { index, text: '', tokens: [], promptLogprobs: event.entries };
      } else if (event.type === 'token') {
        generated++;
        const piece = detokenizer.push(event.token);
        const match = generated > minTokens ? matcher.push(piece) : { text: piece, stop: undefined };
        const tokens = [{ id: event.token, logprob: event.logprob }];
        if (match.stop !== undefined) {
          controller.abort(); // free the engine's slot now, not when the consumer pulls again
          const finish = { reason: 'stop' as const, stopReason: match.stop, promptTokens: spec.promptTokens.length, completionTokens: generated };
          yield { index, text: match.text, tokens, finish };
          return;
        }
        yield { index, text: match.text, tokens };
      } else {
        engineDone = true;
        const match = matcher.push(detokenizer.flush());
        let text = match.text;
        let reason: FinishReason = event.reason;
        let stopReason: string | number | null =
          event.stopToken !== undefined && spec.userStopTokenIds.has(event.stopToken) ? event.stopToken : null;
        if (match.stop !== undefined) {
          reason = 'stop';
          stopReason = match.stop;
        } else {
          text += matcher.flush();
        }
        const finish = { reason, stopReason, promptTokens: event.promptTokens, completionTokens: Math.max(event.completionTokens, generated) };
        yield { index, text, tokens: [], finish };
        return;
      }
    }
    // The engine ended the stream without a finish event: only legitimate after an abort.
    if (!controller.signal.aborted) throw new Error('engine stream ended without a finish event');
    const finish = { reason: 'abort' as const, stopReason: null, promptTokens: spec.promptTokens.length, completionTokens: generated };
    yield { index, text: '', tokens: [], finish };
  } finally {
    signal.removeEventListener('abort', onAbort);
    if (!engineDone) controller.abort();
  }
}

/** Choices started per turn of the event loop. */
const START_SLICE = 128;

export const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Interleaves several async iterables in arrival order, in time linear in the events: each source has
 * at most one next() in flight, and its result joins one ready queue. A source is asked for its next
 * item only after the consumer has taken the previous one, so a consumer that stops pulling (a client
 * that stops reading) holds the backlog in the sources, where the engine can see it and pause them.
 * Ending early (return/throw) ends them all; the first error rejects the merged stream.
 */
export async function* mergeStreams<T>(streams: AsyncIterable<T>[]): AsyncGenerator<T> {
  const iterators = streams.map((s) => s[Symbol.asyncIterator]());
  const ready = new AsyncQueue<{ i: number; result: IteratorResult<T> }>();
  const open = new Set<number>(iterators.keys());
  const pull = (i: number) => {
    iterators[i].next().then(
      (result) => ready.push({ i, result }),
      (error: unknown) => ready.fail(error),
    );
  };
  try {
    // Starting a source runs its request's set-up (engine admission included) synchronously: thousands
    // of choices start in slices, with the event loop served in between.
    for (let i = 0; i < iterators.length; i++) {
      pull(i);
      if (i % START_SLICE === START_SLICE - 1) await yieldToEventLoop();
    }
    while (open.size > 0) {
      const next = await ready.next();
      if (next.done) return;
      const { i, result } = next.value;
      if (result.done) {
        open.delete(i);
        continue;
      }
      yield result.value;
      pull(i);
    }
  } finally {
    // Close what is still open without waiting: a generator's return() queues behind its pending
    // next(), which the caller ends by aborting the requests. Unawaited rejections are swallowed.
    void ready.return();
    for (const i of open) iterators[i].return?.().catch(() => {});
  }
}

/**
 * Every choice of a response as one stream: one engine request per spec, all aborted when `signal`
 * aborts. One listener on `signal` whatever the number of choices (a listener per choice would trip
 * Node's MaxListenersExceededWarning at n > 10).
 */
export function streamChoices(engine: Engine, decoder: Decoder, specs: ChoiceSpec[], signal: AbortSignal): AsyncGenerator<ChoiceDelta> {
  const controllers = specs.map(() => new AbortController());
  const abortAll = () => {
    for (const c of controllers) c.abort();
  };
  if (signal.aborted) abortAll();
  else signal.addEventListener('abort', abortAll, { once: true });
  const merged = mergeStreams(specs.map((spec, i) => choiceStream(engine, decoder, spec, controllers[i].signal)));
  return (async function* () {
    try {
      yield* merged;
    } finally {
      // However the response ends (an error in one choice included), no choice runs on for nobody;
      // choices that finished are not affected.
      abortAll();
      signal.removeEventListener('abort', abortAll);
    }
  })();
}
