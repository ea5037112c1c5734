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

/** Why choices are aborted by the server itself: one reason object, not a DOMException per abort (thousands per request). */
const ENDED = new Error('the choice ended');

/**
 * Runs one engine request, aborted through `controller`: by the caller (client gone), here when a
 * stop string ends the choice, or when the consumer stops iterating. The last delta carries finish.
 */
export async function* choiceStream(
  engine: Engine,
  decoder: Decoder,
  spec: ChoiceSpec,
  controller: AbortController,
): AsyncGenerator<ChoiceDelta> {
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
          controller.abort(ENDED); // free the engine's slot now, not when the consumer pulls again
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
        // The stop token (EOS or a stop id) is counted and has a logprob but no text: it rides on the finish.
        const tokens = event.stopToken === undefined ? [] : [{ id: event.stopToken, logprob: event.stopLogprob ?? null }];
        yield { index, text, tokens, finish };
        return;
      }
    }
    // The engine ended the stream without a finish event: only legitimate after an abort.
    if (!controller.signal.aborted) throw new Error('engine stream ended without a finish event');
    const finish = { reason: 'abort' as const, stopReason: null, promptTokens: spec.promptTokens.length, completionTokens: generated };
    yield { index, text: '', tokens: [], finish };
  } finally {
    if (!engineDone) controller.abort(ENDED);
  }
}

/** Choices started (or checked) per turn of the event loop, where a request holds thousands. */
export const SLICE = 128;

export const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Interleaves several async iterables in arrival order, in time linear in the events: each source has
 * at most one next() in flight, and its result joins one ready queue. A source is asked for its next
 * item only after the consumer has taken the previous one, so a consumer that stops pulling (a client
 * that stops reading) holds the backlog in the sources, where the engine can see it and pause them.
 * Ending early (return/throw) ends them all; the first error rejects the merged stream.
 */
export async function* mergeStreams<T>(count: number, open: (i: number) => AsyncIterable<T>): AsyncGenerator<T> {
  const iterators: AsyncIterator<T>[] = [];
  const ready = new AsyncQueue<{ i: number; result: IteratorResult<T> }>();
  const live = new Set<number>();
  const pull = (i: number) => {
    iterators[i].next().then(
      (result) => ready.push({ i, result }),
      (error: unknown) => ready.fail(error),
    );
  };
  try {
    // Opening a source runs its request's set-up (engine admission included) synchronously: thousands
    // of choices open in slices, with the event loop served in between.
    for (let i = 0; i < count; i++) {
      iterators.push(open(i)[Symbol.asyncIterator]());
      live.add(i);
      pull(i);
      if (i % SLICE === SLICE - 1) await yieldToEventLoop();
    }
    while (live.size > 0) {
      const next = await ready.next();
      if (next.done) return;
      const { i, result } = next.value;
      if (result.done) {
        live.delete(i);
        continue;
      }
      yield result.value;
      pull(i);
    }
  } finally {
    // Close what is still open without waiting: a generator's return() queues behind its pending
    // next(), which the caller ends by aborting the requests. Unawaited rejections are swallowed.
    void ready.return();
    for (const i of live) iterators[i].return?.().catch(() => {});
  }
}

/**
 * Every choice of a response as one stream: one engine request per spec, all aborted when `signal`
 * aborts or the stream ends (an error in one choice included: none runs on for nobody). One listener
 * on `signal` whatever the number of choices (a listener per choice would trip Node's
 * MaxListenersExceededWarning at n > 10), and abort controllers only for choices started and not done.
 */
export function streamChoices(engine: Engine, decoder: Decoder, specs: ChoiceSpec[], signal: AbortSignal): AsyncGenerator<ChoiceDelta> {
  const running = new Set<AbortController>();
  const abortAll = () => {
    for (const c of running) c.abort(ENDED);
    running.clear();
  };
  signal.addEventListener('abort', abortAll, { once: true });
  const merged = mergeStreams(specs.length, (i) => {
    const controller = new AbortController();
    if (signal.aborted) controller.abort(ENDED);
    else running.add(controller);
    const stream = choiceStream(engine, decoder, specs[i], controller);
    return {
      [Symbol.asyncIterator]: () => ({
        next: async () => {
          const r = await stream.next();
          if (r.done || r.value.finish) running.delete(controller);
          return r;
        },
        // The merge closes a choice it gives up on: abort it now (its generator's own return would wait behind its next()).
        return: async () => {
          controller.abort(ENDED);
          running.delete(controller);
          return stream.return(undefined);
        },
      }),
    };
  });
  return (async function* () {
    try {
      yield* merged;
    } finally {
      abortAll();
      signal.removeEventListener('abort', abortAll);
    }
  })();
}
