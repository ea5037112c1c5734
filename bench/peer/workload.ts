// What both engines are asked to do, identically: prompts of random ordinary token ids (no BOS, no
// chat template, no tokenizer on either side), distinct for every run and stream so that no prefix
// cache can help, greedy sampling, and a fixed number of output tokens whatever is sampled (EOS ignored).

/** Qwen3's ordinary tokens are the ids below this (151643 = <|endoftext|> starts the special ones). */
const ORDINARY_TOKENS = 151643;

export interface Workload {
  /** Prefill: one prompt of this many tokens, one output token. */
  prefillTokens: number;
  /** Decode: one stream, a short prompt, then this many output tokens. */
  decodeTokens: number;
  /** Concurrency levels: this many streams at once, each a short distinct prompt + concurrentTokens. */
  concurrency: number[];
  concurrentTokens: number;
  /** The "short prompt" of decode and concurrency runs. */
  shortPromptTokens: number;
}

export const DEFAULT_WORKLOAD: Workload = {
  prefillTokens: 512,
  decodeTokens: 128,
  concurrency: [4, 16, 32],
  concurrentTokens: 64,
  shortPromptTokens: 16,
};

/**
 * Deterministic prompt: `length` ids from an xorshift32 stream seeded by `key` (a phase/run/stream
 * number); distinct keys give distinct prompts from the first token on.
 */
export function promptTokens(key: number, length: number): number[] {
  let s = (Math.imul(key + 1, 2654435761) ^ 0x9e3779b9) >>> 0 || 1;
  const out = new Array<number>(length);
  for (let i = 0; i < length; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = s % ORDINARY_TOKENS;
  }
  return out;
}

/** Keys that never collide between phases, runs and streams. */
export function promptKey(phase: 'warmup' | 'prefill' | 'decode' | 'concurrent' | 'touch', run: number, stream = 0, level = 0): number {
  const p = { warmup: 0, prefill: 1, decode: 2, concurrent: 3, touch: 4 }[phase];
  return ((p * 1000 + run) * 1000 + level) * 1000 + stream;
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
