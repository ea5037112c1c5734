// TEST DOUBLE, not an engine: replays a fixed list of token ids for every request, so the HTTP layer
// (validation, error shapes, SSE framing, logprob rendering, stop strings) can be tested without the
// native addon. The real engine is exercised by tests/e2e/openai-api.test.ts.
import {
  RequestError,
  type Engine,
  type EngineEvent,
  type EngineStats,
  type GenerateRequest,
  type TokenLogprob,
} from '../../src/engine/types.ts';

export interface ScriptedEngineOptions {
  maxModelLen?: number;
  eosTokenIds?: number[];
  /** Milliseconds between tokens (lets tests disconnect mid-stream). */
  delayMs?: number;
}

/** A fake logprob: the chosen token first, then `n` made-up alternatives (ids token+1..). */
function fakeLogprob(token: number, position: number, n: number): TokenLogprob {
  const logprob = -0.25 - position / 100;
  const top = [{ token, logprob }];
  for (let k = 1; k < n; k++) top.push({ token: token + k, logprob: logprob - k });
  return { token, logprob, top };
}

export class ScriptedEngine implements Engine {
  readonly maxModelLen: number;
  readonly eosTokenIds: number[];
  readonly requests: GenerateRequest[] = [];
  /** Generators that ran to their end (normally, aborted, or closed by the consumer). */
  finished = 0;

  constructor(
    private readonly script: number[],
    private readonly options: ScriptedEngineOptions = {},
  ) {
    this.maxModelLen = options.maxModelLen ?? 4096;
    this.eosTokenIds = options.eosTokenIds ?? [151645];
  }

  async *generate(req: GenerateRequest): AsyncGenerator<EngineEvent> {
    this.requests.push(req);
    const { params } = req;
    if (req.promptTokens.length + params.maxTokens > this.maxModelLen) {
      throw new RequestError('scripted engine: too long', 'max_tokens');
    }
    if (params.promptLogprobs !== null) {
      yield {
        type: 'prompt_logprobs',
        entries: req.promptTokens.map((t, i) => (i === 0 ? null : fakeLogprob(t, i, params.promptLogprobs!))),
      };
    }
    let produced = 0;
    const finish = (reason: 'stop' | 'length' | 'abort', stopToken?: number): EngineEvent => ({
      type: 'finish',
      reason,
      promptTokens: req.promptTokens.length,
      completionTokens: produced,
      ...(stopToken === undefined ? {} : { stopToken }),
      // As the engine: the stop token is counted, and its logprob comes with the finish.
      ...(stopToken === undefined || params.logprobs === null ? {} : { stopLogprob: fakeLogprob(stopToken, produced, params.logprobs) }),
    });
    try {
      for (const token of this.script) {
        if (this.options.delayMs) await new Promise((r) => setTimeout(r, this.options.delayMs));
        if (req.signal?.aborted) {
          yield finish('abort');
          return;
        }
        produced++;
        if (params.stopTokenIds.includes(token)) {
          yield finish('stop', token);
          return;
        }
        yield { type: 'token', token, logprob: params.logprobs === null ? null : fakeLogprob(token, produced, params.logprobs) };
        if (produced >= params.maxTokens) {
          yield finish('length');
          return;
        }
      }
      yield finish('length');
    } finally {
      this.finished++;
    }
  }

  /** Requests whose AbortSignal fired (the server aborts only requests it gives up on). */
  get aborted(): number {
    return this.requests.filter((r) => r.signal?.aborted).length;
  }

  stats(): EngineStats {
    return {
      running: 0, waiting: 0, kvBlocksTotal: 0, kvBlocksUsed: 0, kvBlocksCached: 0, numPreemptions: 0,
      prefixCacheQueries: 0, prefixCacheHits: 0, promptTokens: 0, generationTokens: 0,
    };
  }

  async close(): Promise<void> {}
}
