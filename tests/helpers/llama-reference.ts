// llama.cpp (through node-llama-cpp's prebuilt CPU binaries) as the external reference: teacher-forced
// next-token log-probabilities of a GGUF model at every position of a token sequence.
//
// How the numbers are obtained: one context, one sequence, F32 KV cache, flash attention off, the whole
// sequence in one batch (batchSize = its length) when it is at most 1024 tokens, and controlledEvaluate
// asking at every position (or the last N) for raw logits. With no sampling options node-llama-cpp's sampler chain is the greedy sampler alone, which
// picks a token without touching the logits, so these are llama.cpp's output logits.
//  - default: the top-N logits plus `totalLogitWeight` = Σ exp(logit − max) over the whole vocabulary
//    (llama/addon/AddonContext.cpp), so logprob = logit − max − ln(totalLogitWeight): the true
//    log-softmax, with the normaliser summed in float32 by the addon (≈1e-4 nats; measured 5e-5).
//  - exact: every logit of the vocabulary (≈10× slower: a 151936-entry Map per position) and the
//    log-softmax in float64 here.
import { getLlama, LlamaLogLevel, type ControlledEvaluateInputItem, type Llama, type LlamaModel, type Token } from 'node-llama-cpp';

export interface TopLogprob {
  token: number;
  logprob: number;
}

export interface LlamaTeacherForcedOptions {
  /**
   * The KV cache's storage (default F32, flash attention off). BF16 runs with flash attention on: llama.cpp's CPU
   * flash attention widens bf16 K and V rows to f32 (rounding only the query to bf16 for its dot with K), where
   * without it the softmax would be rounded to bf16 for the product with V as well.
   */
  kvCache?: 'F32' | 'BF16';
  /** Context threads (default 2). The result does not depend on it. */
  threads?: number;
  /** Fetch every logit and take the log-softmax in float64; also returns it (vocab-sized, per position). */
  exact?: boolean;
  /**
   * Ask for logits at the last N positions only (default: every position). Fetching a position's
   * logits costs far more than evaluating it, so long prompts (32K+) must use this.
   */
  lastPositions?: number;
  /**
   * Tokens per llama_decode (node-llama-cpp sets n_ubatch = n_batch). Default: the whole sequence in one
   * batch, up to 1024: without flash attention a batch holds a batch × context × heads f32 KQ matrix,
   * 1024 × 32K × 4 heads × 4 B = 512 MiB, so long prompts must go in several batches.
   */
  batchSize?: number;
}

export interface LlamaTeacherForcedResult {
  /** The position of top[0]: tokens.length - lastPositions, or 0. */
  start: number;
  /** top[i]: the topN most likely next tokens after tokens[0..start + i], best first. */
  top: TopLogprob[][];
  /** full[i]: log-softmax over the whole vocabulary after tokens[0..start + i] (only with `exact`). */
  full?: Float64Array[];
  /** The vocabulary size llama.cpp reports (only with `exact`). */
  vocabSize?: number;
}

let llamaPromise: Promise<Llama> | undefined;

/** One Llama instance per process (loading the bindings is the slow part). */
export function sharedLlama(): Promise<Llama> {
  llamaPromise ??= getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, progressLogs: false });
  return llamaPromise;
}

export async function loadReferenceModel(ggufPath: string): Promise<LlamaModel> {
  const llama = await sharedLlama();
  return llama.loadModel({ modelPath: ggufPath, gpuLayers: 0, useMmap: true });
}

function logSoftmax(logits: Map<number, number>, vocabSize: number): Float64Array {
  const out = new Float64Array(vocabSize).fill(-Infinity);
  let max = -Infinity;
  for (const [tok, v] of logits) {
    if (!Number.isFinite(v)) throw new Error(`llama.cpp returned a non-finite logit ${v} for token ${tok}`);
    out[tok] = v;
    if (v > max) max = v;
  }
  let sum = 0;
  for (let i = 0; i < vocabSize; i++) sum += Math.exp(out[i]! - max);
  const lse = max + Math.log(sum);
  for (let i = 0; i < vocabSize; i++) out[i] = out[i]! - lse;
  return out;
}

function topN(lp: Float64Array, n: number): TopLogprob[] {
  const best: TopLogprob[] = [];
  for (let i = 0; i < lp.length; i++) {
    const v = lp[i]!;
    if (best.length < n || v > best[best.length - 1]!.logprob) {
      let j = best.length < n ? best.length : best.length - 1;
      if (best.length < n) best.push({ token: i, logprob: v });
      while (j > 0 && best[j - 1]!.logprob < v) {
        best[j] = best[j - 1]!;
        j--;
      }
      best[j] = { token: i, logprob: v };
    }
  }
  return best;
}

/** The default batch size: the whole sequence when short (the existing parity numbers), else 1024. */
export const MAX_DEFAULT_BATCH = 1024;

/**
 * Teacher-forced top-N next-token logprobs at every position of `tokens` (position i: the distribution
 * after tokens[0..i]), or at the last `opts.lastPositions` of them. `model` may be a GGUF path (loaded
 * and disposed here) or an already loaded model.
 */
export async function llamaTeacherForced(
  model: string | LlamaModel,
  tokens: number[],
  topNCount: number,
  opts: LlamaTeacherForcedOptions = {},
): Promise<LlamaTeacherForcedResult> {
  if (tokens.length === 0) throw new Error('llamaTeacherForced: no tokens');
  const owned = typeof model === 'string';
  const m = owned ? await loadReferenceModel(model) : model;
  try {
    for (const t of tokens) {
      if (!Number.isInteger(t) || t < 0) throw new Error(`llamaTeacherForced: bad token ${t}`);
    }
    const last = opts.lastPositions ?? tokens.length;
    if (!Number.isInteger(last) || last < 1 || last > tokens.length) {
      throw new Error(`llamaTeacherForced: lastPositions must be in 1..${tokens.length} (got ${opts.lastPositions})`);
    }
    const start = tokens.length - last;
    const batchSize = opts.batchSize ?? Math.min(tokens.length, MAX_DEFAULT_BATCH);
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`llamaTeacherForced: bad batchSize ${opts.batchSize}`);
    const context = await m.createContext({
      contextSize: Math.max(256, Math.ceil(tokens.length / 256) * 256),
      batchSize,
      sequences: 1,
      threads: opts.threads ?? 2,
      flashAttention: opts.kvCache === 'BF16',
      experimentalKvCacheKeyType: opts.kvCache ?? 'F32',
      experimentalKvCacheValueType: opts.kvCache ?? 'F32',
    });
    try {
      const seq = context.getSequence();
      const generateNext = opts.exact
        ? { logits: true }
        : { logits: { filter: { tokens: [], includeTop: topNCount } }, totalLogitWeight: true };
      const input: ControlledEvaluateInputItem[] = tokens.map((t, i) => (i < start ? (t as Token) : [t as Token, { generateNext }]));
      const res = await seq.controlledEvaluate(input);
      const top: TopLogprob[][] = [];
      const full: Float64Array[] = [];
      // In exact mode every position's logits cover llama_vocab_n_tokens(), the GGUF's vocabulary.
      const vocabSize = opts.exact ? (res[start]?.next.logits?.size ?? 0) : undefined;
      for (let i = start; i < tokens.length; i++) {
        const next = res[i]?.next;
        const logits = next?.logits;
        if (!logits) throw new Error(`llama.cpp returned no logits at position ${i}`);
        if (opts.exact) {
          if (logits.size !== vocabSize) throw new Error(`llama.cpp returned ${logits.size} logits at position ${i}, ${vocabSize} at position ${start}`);
          const lp = logSoftmax(logits, vocabSize);
          top.push(topN(lp, topNCount));
          full.push(lp);
        } else {
          const weight = next.totalLogitWeight;
          if (weight === undefined || !(weight >= 1) || !Number.isFinite(weight)) throw new Error(`llama.cpp returned total logit weight ${weight} at position ${i}`);
          const entries = [...logits.entries()].sort((a, b) => b[1] - a[1]);
          if (!entries.every(([, v]) => Number.isFinite(v))) throw new Error(`llama.cpp returned a non-finite logit at position ${i}`);
          // The weight is relative to the largest logit, which is the first of the top-N.
          const lse = entries[0]![1] + Math.log(weight);
          top.push(entries.map(([token, v]) => ({ token, logprob: v - lse })));
        }
      }
      return { start, top, full: opts.exact ? full : undefined, vocabSize };
    } finally {
      await context.dispose();
    }
  } finally {
    if (owned) await m.dispose();
  }
}
