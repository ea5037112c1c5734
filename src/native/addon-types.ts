// The native addon's exact TypeScript type. native/addon/*.cpp implements this and nothing else;
// every call across the boundary goes through these shapes (typed arrays, plain numbers).

export type WeightDType = 'bf16' | 'f16' | 'f32';

/** The model shape as the native side needs it; derived from config.json by src/model/config.ts. */
export interface NativeModelConfig {
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  /** Dense MLP width (layers where moeLayers[i] is false). */
  intermediateSize: number;
  moeIntermediateSize: number;
  numExperts: number;
  numExpertsPerTok: number;
  normTopkProb: boolean;
  rmsNormEps: number;
  /** One entry per layer: true for a sparse MoE block, false for a dense MLP. */
  moeLayers: boolean[];
  tieWordEmbeddings: boolean;
  /** headDim/2 inverse frequencies, already adjusted for rope_scaling (yarn). */
  ropeInvFreq: Float32Array;
  /** cos/sin are multiplied by this (yarn's attention factor; 1 otherwise). */
  ropeAttentionFactor: number;
}

export interface LoadOptions {
  /** Absolute paths of every safetensors file of the checkpoint. */
  files: string[];
  config: NativeModelConfig;
  threads: number;
  /** Number of KV blocks in the pool and tokens per block. */
  kvBlocks: number;
  blockSize: number;
  /** Lock the weights in RAM (mlock) so that idle experts are never paged out; a failure is reported, not fatal. */
  mlock?: boolean;
  /**
   * Code bf16 matrices whose columns are a multiple of 128 into a lossless 12-bit form at load (default true;
   * only where the kernel set reads it, today avx512bf16): a memory-bound decode step reads a quarter fewer bytes.
   */
  codeWeights?: boolean;
  /** Called from the JS thread as weights are validated and paged in. */
  onProgress?: (done: number, total: number) => void;
}

export interface BackendInfo {
  name: 'cpu' | 'cuda';
  /** CPU: 'avx512bf16' | 'avx512' | 'avx2' | 'scalar'. */
  simd?: string;
  /** CPU: the kernel set in use ('avx512' | 'avx2' | 'scalar'; MOESERVE_SIMD may lower it). */
  kernels?: string;
  threads?: number;
  available: boolean;
  detail?: string;
}

/**
 * One engine step. Tokens of all sequences are concatenated, sequence after sequence.
 * A sequence's tokens in one step have consecutive positions; KV for every position
 * before them must already be in the sequence's blocks.
 */
export interface StepBatch {
  tokens: Int32Array;
  positions: Int32Array;
  /** numSeqs + 1 offsets into tokens. */
  seqStart: Int32Array;
  /** numSeqs × blockTableWidth block ids, padded with -1; must cover every position written. */
  blockTables: Int32Array;
  blockTableWidth: number;
  // ---- per sequence (length numSeqs) ----
  /** 1: sample a token from the sequence's last position in this step. */
  sample: Uint8Array;
  /** 0 = greedy. */
  temperature: Float32Array;
  /** 1 = off. */
  topP: Float32Array;
  /** 0 = off. */
  topK: Int32Array;
  /** A uniform draw in [0,1) from the request's own seeded RNG, used for this step's sample. */
  uniform: Float32Array;
  /** Top-N logprobs (0..20) for the sampled token; -1 = no logprobs at all. */
  numLogprobs: Int32Array;
  /** Top-N (0..20) at every token of this sequence in this step; -1 = none. */
  promptLogprobs: Int32Array;
  // ---- per token (length tokens.length) ----
  /** The token whose logprob to report at this position (the next prompt token), -1 = none. */
  targets: Int32Array;

  // ---- optional logits processing of the sampled position (vLLM semantics); absent = off ----
  // Logprobs stay those of the raw model distribution; these shape only the draw (and greedy's argmax).
  /** Per sequence: drop tokens whose probability is below minP × the top probability (0 = off). */
  minP?: Float32Array;
  /** Per sequence: subtracted once from every token already generated (0 = off). */
  presencePenalty?: Float32Array;
  /** Per sequence: subtracted per occurrence among the generated tokens (0 = off). */
  frequencyPenalty?: Float32Array;
  /** Per sequence: logits of tokens in the prompt or the output are divided (if > 0) or multiplied by it (1 = off). */
  repetitionPenalty?: Float32Array;
  /** CSR (numSeqs + 1 offsets) of the distinct generated tokens and their counts. */
  outputTokenStart?: Int32Array;
  outputTokenIds?: Int32Array;
  outputTokenCounts?: Int32Array;
  /** CSR (numSeqs + 1 offsets) of the distinct prompt tokens (for repetitionPenalty). */
  promptTokenStart?: Int32Array;
  promptTokenIds?: Int32Array;
  /** CSR (numSeqs + 1 offsets) of logit_bias entries: added to the logits before anything else. */
  biasStart?: Int32Array;
  biasIds?: Int32Array;
  biasValues?: Float32Array;
  /**
   * Guided decoding: numSeqs × ceil(vocabSize / 32) words; bit (id % 32) of word (id / 32) set = token allowed
   * (xgrammar's bitmask layout). Rows of sequences with hasMask[i] = 0 are ignored.
   */
  allowedMask?: Uint32Array;
  hasMask?: Uint8Array;
}

export interface StepResult {
  /** Per sequence: sampled token, -1 where sample was 0. */
  tokens: Int32Array;
  /** Per sequence: log-softmax of the raw logits at the sampled token (NaN where not sampled or numLogprobs is -1). */
  logprobs: Float32Array;
  /** max(numLogprobs, 0) over the batch. */
  topWidth: number;
  /** numSeqs × topWidth, best first; -1 / NaN padding. */
  topIds: Int32Array;
  topLogprobs: Float32Array;
  /** max(promptLogprobs, 0) over the batch. */
  promptTopWidth: number;
  /** Per token: logprob of targets[i] at position i; NaN where not requested. */
  targetLogprobs: Float32Array;
  /** tokens.length × promptTopWidth; -1 / NaN padding. */
  promptTopIds: Int32Array;
  promptTopLogprobs: Float32Array;
}

export interface NativeModel {
  /** Runs one step on a worker thread. At most one step may be in flight. */
  step(batch: StepBatch): Promise<StepResult>;
  /** Frees the KV pool and unmaps the weights; the model is unusable afterwards. */
  close(): void;
  readonly kvBlocks: number;
  readonly blockSize: number;
  /** Bytes of KV cache per token (all layers, K and V). */
  readonly kvBytesPerToken: number;
  readonly weightBytes: number;
  /** Whether the weights are locked in RAM (LoadOptions.mlock), and why not when that failed. */
  readonly weightsLocked: boolean;
  readonly lockError: string | undefined;
  /** What coding bf16 weights at load did (LoadOptions.codeWeights); matrices 0 when nothing was coded. */
  readonly codedWeights: CodedWeights;
}

export interface CodedWeights {
  matrices: number;
  /** Bytes of the coded matrices as bf16, and in their coded form. */
  sourceBytes: number;
  codedBytes: number;
  /** Weights kept exactly beside the codes (their exponent was not among their row's 7 most frequent). */
  escapes: number;
}

export interface Addon {
  readonly version: string;
  backends(): BackendInfo[];
  /** Validates every header and tensor against the config; rejects with a message naming file and tensor. */
  loadModel(options: LoadOptions): Promise<NativeModel>;
}
