// The interface both engines are measured through, so that the harness treats them identically.

export interface PrefillSample {
  /** From sending the prompt to having its first output token. */
  ms: number;
}

export interface DecodeSample {
  /** Time to the first output token (prompt + first step). */
  firstTokenMs: number;
  /** From the first output token to the last. */
  decodeMs: number;
  /** Output tokens received (the first included). */
  tokens: number;
}

export interface ConcurrentSample {
  /** From starting every stream to the end of the last one. */
  ms: number;
  /** Output tokens of all streams together. */
  tokens: number;
  /** Engine-specific observations (e.g. how llama.cpp batched the sequences). */
  notes?: Record<string, number | string>;
}

export interface PeerEngine {
  readonly name: string;
  /** The process doing the engine's work (a server's child process, or this one). */
  readonly pid: number;
  /** One prompt, one greedy output token. */
  prefill(prompt: number[]): Promise<PrefillSample>;
  /** One stream: `prompt`, then exactly `maxTokens` greedy tokens (EOS ignored). */
  decode(prompt: number[], maxTokens: number): Promise<DecodeSample>;
  /** Every prompt as its own stream at once, each exactly `maxTokens` greedy tokens (EOS ignored). */
  concurrent(prompts: number[][], maxTokens: number): Promise<ConcurrentSample>;
  /** CPU time (ms, all threads) of the process doing this engine's work, cumulative. */
  cpuMs(): number;
  /** What the engine was configured with (recorded in the results). */
  describe(): Record<string, unknown>;
  close(): Promise<void>;
}
