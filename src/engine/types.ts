// What the HTTP layer sees of the engine: requests of token ids in, a stream of events out.

export interface SamplingParams {
  maxTokens: number;
  /** 0 = greedy. */
  temperature: number;
  /** 1 = off. */
  topP: number;
  /** 0 = off. */
  topK: number;
  /** Same seed, same output. Undefined: a random seed. */
  seed?: number;
  /** Generation ends (finish 'stop') after one of these is sampled; it is not returned as text. */
  stopTokenIds: number[];
  ignoreEos: boolean;
  /** Top-N logprobs (0..20) for each generated token; null = none. */
  logprobs: number | null;
  /** Top-N logprobs (0..20) for each prompt token (echo); null = none. */
  promptLogprobs: number | null;
  // ---- logits processing (vLLM semantics); absent = off. They shape the draw, never the reported logprobs. ----
  /** Drop tokens whose probability is below minP × the top token's (0..1; 0 = off). */
  minP?: number;
  /** Subtracted once from the logit of every token generated so far (0 = off). */
  presencePenalty?: number;
  /** Subtracted from a token's logit per time it was generated so far (0 = off). */
  frequencyPenalty?: number;
  /** Logits of tokens in the prompt or the output: divided by it when positive, multiplied when not (> 0; 1 = off). */
  repetitionPenalty?: number;
  /** Token id → added to its logit before anything else (OpenAI logit_bias; finite values). */
  logitBias?: Readonly<Record<number, number>>;
  /** The stop token ids (and EOS unless ignoreEos) cannot be sampled before this many tokens (0 = off). */
  minTokens?: number;
  /** vLLM's cache_salt: only sequences with the same salt share prefix-cache blocks (absent: unsalted). */
  cacheSalt?: string;
}

export interface TopLogprob {
  token: number;
  logprob: number;
}

export interface TokenLogprob {
  token: number;
  logprob: number;
  top: TopLogprob[];
}

export type FinishReason = 'stop' | 'length' | 'abort';

export type EngineEvent =
  /** Sent once, before any token, when promptLogprobs was asked; entry 0 is null (nothing precedes it). */
  | { type: 'prompt_logprobs'; entries: (TokenLogprob | null)[] }
  | { type: 'token'; token: number; logprob: TokenLogprob | null }
  /**
   * stopToken: the stop token (EOS or a stop_token_ids entry) that ended the request; it is counted in
   * completionTokens but sent as no 'token' event (its text is not output). stopLogprob: its logprob,
   * present when logprobs were asked, so that the logprobs cover every counted token (as vLLM's do).
   */
  | { type: 'finish'; reason: FinishReason; promptTokens: number; completionTokens: number; stopToken?: number; stopLogprob?: TokenLogprob };

export interface GenerateRequest {
  promptTokens: number[];
  params: SamplingParams;
  /** Aborting ends the request within one step and frees its KV blocks. */
  signal?: AbortSignal;
  /** Guided decoding: constrains every sampled token. The engine owns it from generate() on. */
  guide?: TokenGuide;
}

/** What a guide says about the next token (see TokenGuide.next). */
export type GuideStatus = 'free' | 'masked' | 'complete';

/**
 * A constraint on the tokens a request may sample (src/guided implements it with a grammar). The
 * engine calls next() before each sampled token and accept() with the token sampled, and dispose()
 * exactly once when the request ends, however it ends.
 */
export interface TokenGuide {
  /**
   * 'free': no constraint this time (row untouched). 'masked': row (ceil(vocabSize / 32) words) now
   * holds the allowed tokens, bit id % 32 of word id / 32. 'complete': the output is complete and row
   * allows only stop tokens; the engine ends the request with finish 'stop'.
   */
  next(row: Uint32Array): Promise<GuideStatus>;
  /**
   * Advances past the sampled token; false when the constraint rejects it. Synchronous: an
   * implementation whose state lives elsewhere (src/guided: the grammar worker) may answer from the
   * last mask and apply the token with the next next(); a token it took on trust and then finds
   * rejected makes that next() reject ("the grammar rejects token N"), failing the request one step later.
   */
  accept(token: number): boolean;
  dispose(): void;
}

/** A snapshot of the engine: gauges (as of now) and counters (monotonic since the engine started). */
export interface EngineStats {
  running: number;
  waiting: number;
  kvBlocksTotal: number;
  /** Blocks referenced by at least one request. */
  kvBlocksUsed: number;
  /** Free blocks that still hold a reusable cached prefix (not in kvBlocksUsed); evicted LRU on demand. */
  kvBlocksCached: number;
  numPreemptions: number;
  /** Prompt tokens looked up in the prefix cache at admission, and how many of them were found. */
  prefixCacheQueries: number;
  prefixCacheHits: number;
  /** Prompt tokens of every request received, and tokens sampled (a stop token included). */
  promptTokens: number;
  generationTokens: number;
}

export interface Engine {
  readonly maxModelLen: number;
  readonly eosTokenIds: number[];
  /** Rejects (before any event) with a RequestError when the request cannot be served. */
  generate(request: GenerateRequest): AsyncIterable<EngineEvent>;
  stats(): EngineStats;
  /** Ends every request (with `reason` as their error when given, else finish 'abort') and frees the engine. */
  close(reason?: Error): Promise<void>;
}

/** A request the engine refuses; the HTTP layer maps it to an OpenAI-shaped 400. */
export class RequestError extends Error {
  constructor(message: string, readonly param: string | null = null) {
    super(message);
    this.name = 'RequestError';
  }
}
