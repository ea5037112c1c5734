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
  | { type: 'finish'; reason: FinishReason; promptTokens: number; completionTokens: number; stopToken?: number };

export interface GenerateRequest {
  promptTokens: number[];
  params: SamplingParams;
  /** Aborting ends the request within one step and frees its KV blocks. */
  signal?: AbortSignal;
}

export interface EngineStats {
  running: number;
  waiting: number;
  kvBlocksTotal: number;
  kvBlocksUsed: number;
}

export interface Engine {
  readonly maxModelLen: number;
  readonly eosTokenIds: number[];
  /** Rejects (before any event) with a RequestError when the request cannot be served. */
  generate(request: GenerateRequest): AsyncIterable<EngineEvent>;
  stats(): EngineStats;
  close(): Promise<void>;
}

/** A request the engine refuses; the HTTP layer maps it to an OpenAI-shaped 400. */
export class RequestError extends Error {
  constructor(message: string, readonly param: string | null = null) {
    super(message);
    this.name = 'RequestError';
  }
}
