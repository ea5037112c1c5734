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

export type BackendName = 'cpu' | 'cuda';

export interface LoadOptions {
  /** Absolute paths of every safetensors file of the checkpoint (ignored, may be empty, for loadFormat 'dummy'). */
  files: string[];
  config: NativeModelConfig;
  /** 'safetensors' (default): the files; 'dummy': the config's shapes filled with random bf16 weights where the backend keeps them. */
  loadFormat?: 'safetensors' | 'dummy';
  /** Which backend runs the model (default 'cpu'); 'cuda' rejects with the reason when it is not compiled in or not usable. */
  backend?: BackendName;
  /** CUDA device ordinal (default 0). */
  device?: number;
  /** CPU: worker threads. CUDA: host threads for load-time work. */
  threads: number;
  /**
   * The most tokens one step may carry (the engine's max-num-batched-tokens; default 8192): the workspace is
   * sized for it at load, and a larger step is rejected.
   */
  maxNumBatchedTokens?: number;
  /**
   * The KV pool, sized after the weights are placed, from exactly one of: kvBlocks (that many blocks),
   * kvCacheBytes (as many blocks as fit), or, for a device backend only, gpuMemoryUtilization (the blocks that
   * fit in this share of the device's memory less what the weights and workspace took, vLLM's meaning).
   */
  kvBlocks?: number;
  kvCacheBytes?: number;
  gpuMemoryUtilization?: number;
  /** Tokens per KV block. */
  blockSize: number;
  /** Lock the weights in RAM (mlock) so that idle experts are never paged out; a failure is reported, not fatal. */
  mlock?: boolean;
  /**
   * Code bf16 matrices whose columns are a multiple of 128 into a lossless 12-bit form at load (default true;
   * only where the kernel set reads it, today avx512bf16): a memory-bound decode step reads a quarter fewer bytes.
   */
  codeWeights?: boolean;
  /** CPU kernel set by name ('scalar' | 'avx2' | 'avx512' | 'avx512bf16'); default the best this CPU runs. */
  cpuKernels?: string;
  /**
   * The KV cache's storage: 'bf16' (k and v rounded to nearest even as they are written, half the memory of
   * 'f32') or 'f32' (exact, CPU only: the CUDA backend rejects it). Default: the backend's, bf16 on CUDA and f32
   * on the CPU (the addon's defaults are the exact mode; the CLI's are bf16, src/cli/precision.ts).
   */
  kvCacheDtype?: 'bf16' | 'f32';
  /**
   * Activations of the CPU's matmuls on bf16 weights: 'f32' (default, exact: weights widened, f32 fmas) or 'bf16'
   * (rounded to bf16 first and multiplied on vdpbf16ps, as llama.cpp runs bf16 weights; the router stays exact,
   * and with a bf16 KV cache q is rounded to bf16 after RoPE). Only the avx512bf16 kernels have the bf16 mode;
   * other kernel sets and CUDA run 'f32' whatever is asked.
   */
  activations?: 'bf16' | 'f32';
  /** Called from the JS thread as weights are validated and paged in (CPU) or uploaded (CUDA). */
  onProgress?: (done: number, total: number) => void;
}

export interface BackendInfo {
  name: BackendName;
  /** CPU: 'avx512bf16' | 'avx512' | 'avx2' | 'scalar'. */
  simd?: string;
  /** CPU: the kernel set in use ('avx512' | 'avx2' | 'scalar'; MOESERVE_SIMD may lower it). */
  kernels?: string;
  threads?: number;
  /** Whether a model can run on it here. */
  available: boolean;
  /** Why not, when not available. */
  detail?: string;
  /** CUDA: whether this build has the CUDA backend, and the GPU architectures it was compiled for. */
  compiled?: boolean;
  archs?: string;
  /** CUDA: the devices the driver reports. */
  devices?: CudaDevice[];
}

export interface CudaDevice {
  ordinal: number;
  name: string;
  /** Total device memory in bytes. */
  memoryBytes: number;
  /** Compute capability, e.g. '9.0'. */
  computeCapability: string;
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
  /** The backend running it: 'cpu/<kernel set>' or 'cuda/<device name>'. */
  readonly backendName: string;
  /** The device's memory after the weights, workspace and KV pool were placed (CUDA); undefined for the CPU. */
  readonly deviceMemory: { name: string; totalBytes: number; freeBytes: number } | undefined;
  /** Bytes of backend memory holding the weights (0 for the CPU, which reads the mapping in place). */
  readonly weightDeviceBytes: number;
  /** The most tokens one step may carry (LoadOptions.maxNumBatchedTokens). */
  readonly maxNumBatchedTokens: number;
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
