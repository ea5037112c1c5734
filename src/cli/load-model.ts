// A model directory → everything the server needs: native model, engine, tokenizer, chat template.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModelConfig, type ModelConfig } from '../model/config.ts';
import { checkTokenIdsInVocab, ConfigError, show } from '../model/config-validate.ts';
import { loadAddon } from '../native/load-addon.ts';
import type { BackendName, CodedWeights } from '../native/addon-types.ts';
import { createEngine, DEFAULT_MAX_NUM_BATCHED_TOKENS, DEFAULT_MAX_NUM_SEQS, type LlmEngineHandle } from '../engine/engine.ts';
import { loadTokenizer, type TextTokenizer } from '../chat/tokenizer.ts';
import { createChatTemplate, type ChatTemplate } from '../chat/template.ts';
import type { SamplingDefaults } from '../server/sampling.ts';
import {
  checkGpuMemoryUtilization, checkKvBudget, checkKvPool, DEFAULT_BLOCK_SIZE, derivedMaxModelLen, estimateKvBytesPerToken, estimateWeightBytes,
  kvBudget, kvLoadOptions, type KvPlan,
} from './kv-plan.ts';
import {
  activationsOf, resolveDtype, resolveKvCacheDtype, type Dtype, type DTYPE_CHOICES, type KV_CACHE_DTYPE_CHOICES, type KvCacheDtype,
} from './precision.ts';
import { resolveDevice, type DeviceChoice } from './device.ts';

export { DEFAULT_BLOCK_SIZE } from './kv-plan.ts';

export interface LoadModelOptions {
  dir: string;
  /** Default: the model's context length (max_position_embeddings, times a rope_scaling factor). */
  maxModelLen?: number;
  /** Default: every core. CPU: the model's worker threads; CUDA: host threads for load-time work. */
  threads?: number;
  /** 'auto': CUDA when the addon reports it usable, else the CPU (the CLI's default). Default here: 'cpu'. */
  device?: DeviceChoice;
  /** 'auto' (= 'safetensors') | 'safetensors' | 'dummy': random weights of config.json's shapes (vLLM's convention). */
  loadFormat?: 'auto' | 'safetensors' | 'dummy';
  /** Memory for the paged KV cache in GiB, on either backend; default: a share of the free memory (CPU, see kv-plan.ts) or of the device (CUDA). */
  kvCacheGiB?: number;
  /**
   * CUDA: the share of device memory for weights, workspace and KV (vLLM's meaning; default 0.9). Ignored, with
   * a note, on the CPU and where kvCacheGiB sizes the pool.
   */
  gpuMemoryUtilization?: number;
  /** --dtype: 'auto' (default) = 'bfloat16' unless the checkpoint is float32; 'float32' is the exact mode (precision.ts). */
  dtype?: (typeof DTYPE_CHOICES)[number];
  /** --kv-cache-dtype: 'auto' (default) follows dtype (bf16, or f32 for float32 on the CPU); 'f32' is CPU only. */
  kvCacheDtype?: (typeof KV_CACHE_DTYPE_CHOICES)[number];
  blockSize?: number;
  /** Engine scheduling limits (defaults: the engine's). */
  maxNumSeqs?: number;
  maxNumBatchedTokens?: number;
  /** Automatic prefix caching (default true). */
  enablePrefixCaching?: boolean;
  /** 'auto': sampling defaults from generation_config.json (vLLM's default); 'vllm'/'none': OpenAI's. */
  generationConfig?: 'auto' | 'vllm' | 'none';
  /** Lock the weights in RAM (mlock), as llama.cpp's --mlock. */
  mlock?: boolean;
  /** Code bf16 weights losslessly at load (default true; see LoadOptions.codeWeights). */
  codeWeights?: boolean;
  onProgress?: (done: number, total: number) => void;
}

export interface LoadedModel {
  config: ModelConfig;
  engine: LlmEngineHandle;
  tokenizer: TextTokenizer;
  template: ChatTemplate | null;
  maxModelLen: number;
  samplingDefaults: Partial<SamplingDefaults>;
  /** The pool as loaded (bytes per token as the model reports it). */
  kv: KvPlan;
  dtype: Dtype;
  kvCacheDtype: KvCacheDtype;
  kvBlocks: number;
  blockSize: number;
  threads: number;
  maxNumSeqs: number;
  maxNumBatchedTokens: number;
  enablePrefixCaching: boolean;
  /** --mlock: 'off', 'locked', or why locking failed (the model runs unlocked then). */
  mlock: string;
  codedWeights: CodedWeights;
  loadFormat: 'safetensors' | 'dummy';
  device: LoadedDevice;
  /** Remarks for the start-up log (options that had no effect here). */
  notes: string[];
}

/** Where the model runs, for the start-up log. */
export interface LoadedDevice {
  backend: BackendName;
  /** NativeModel.backendName: 'cpu/<kernel set>' or 'cuda/<device name>'. */
  name: string;
  /** CUDA: the device's memory after the weights, workspace and KV pool were placed. */
  memory?: { name: string; totalBytes: number; freeBytes: number };
  /** The weights' size where they live: device memory (CUDA), the safetensors files or the generated weights (CPU). */
  weightBytes: number;
}

function samplingDefaultsFrom(dir: string): Partial<SamplingDefaults> {
  const file = path.join(dir, 'generation_config.json');
  if (!fs.existsSync(file)) return {};
  try {
    const gen = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    const out: Partial<SamplingDefaults> = {};
    // Checked here, at load: a bad default would otherwise be a 400 on every request that leaves the field out.
    const field = (key: string, ok: (v: number) => boolean, rule: string): number | undefined => {
      const v = gen[key];
      if (v === undefined || v === null) return undefined;
      if (typeof v !== 'number' || !ok(v)) throw new ConfigError(`${file}: "${key}" must be ${rule} (got ${show(v)})`);
      return v;
    };
    const temperature = field('temperature', (v) => Number.isFinite(v) && v >= 0, 'a finite number >= 0');
    const topP = field('top_p', (v) => v > 0 && v <= 1, 'a number in (0, 1]');
    const topK = field('top_k', (v) => Number.isInteger(v) && v >= -1, 'an integer >= -1 (0 or -1: off)');
    if (temperature !== undefined) out.temperature = temperature;
    if (topP !== undefined) out.topP = topP;
    if (topK !== undefined) out.topK = topK;
    return out;
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new Error(`${file}: invalid JSON (${(err as Error).message})`);
  }
}

export async function loadServedModel(options: LoadModelOptions): Promise<LoadedModel> {
  const addon = loadAddon();
  const backend = resolveDevice(options.device ?? 'cpu', addon.backends());
  const loadFormat = options.loadFormat === 'dummy' ? 'dummy' : 'safetensors';
  const config = loadModelConfig(options.dir, { loadFormat });
  const vocabFile = path.join(config.dir, 'config.json');
  checkTokenIdsInVocab(config.eosSources, config.native.vocabSize, vocabFile);
  const contextLen = derivedMaxModelLen(config);
  const maxModelLen = options.maxModelLen ?? contextLen;
  if (!Number.isInteger(maxModelLen) || maxModelLen < 2) throw new Error(`max-model-len must be an integer >= 2 (got ${maxModelLen})`);
  if (maxModelLen > contextLen) {
    throw new Error(`max-model-len ${maxModelLen} is longer than the model's context length ${contextLen} (config.json: max_position_embeddings, rope_scaling)`);
  }
  const threads = options.threads ?? os.availableParallelism();
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  const maxNumSeqs = options.maxNumSeqs ?? DEFAULT_MAX_NUM_SEQS;
  const maxNumBatchedTokens = options.maxNumBatchedTokens ?? DEFAULT_MAX_NUM_BATCHED_TOKENS;
  if (!Number.isInteger(maxNumSeqs) || maxNumSeqs < 1) throw new Error(`max-num-seqs must be a positive integer (got ${maxNumSeqs})`);
  if (!Number.isInteger(maxNumBatchedTokens) || maxNumBatchedTokens < maxNumSeqs) {
    // Every running sequence must be able to decode in the same step.
    throw new Error(`max-num-batched-tokens (${maxNumBatchedTokens}) must be an integer >= max-num-seqs (${maxNumSeqs})`);
  }
  const enablePrefixCaching = options.enablePrefixCaching ?? true;
  const notes: string[] = [];
  if (options.gpuMemoryUtilization !== undefined) {
    checkGpuMemoryUtilization(options.gpuMemoryUtilization);
    if (backend === 'cpu') notes.push(`--gpu-memory-utilization ${options.gpuMemoryUtilization} is ignored on the CPU (--kv-cache-memory sizes its KV cache, else a share of the free memory)`);
    else if (options.kvCacheGiB !== undefined) notes.push(`--gpu-memory-utilization ${options.gpuMemoryUtilization} is ignored: --kv-cache-memory sizes the KV cache`);
  }
  // The weights' size in RAM, for the CPU's default budget: the files, or for dummy weights their shapes (no files to stat).
  const fileBytes = config.files.reduce((sum, f) => sum + fs.statSync(f).size, 0);
  const ramWeightBytes = loadFormat === 'dummy' ? estimateWeightBytes(config.native) : fileBytes;
  const dtype = resolveDtype(options.dtype, config.dtype);
  const kvCacheDtype = resolveKvCacheDtype(options.kvCacheDtype, backend, dtype);
  const estimate = estimateKvBytesPerToken(config, kvCacheDtype);
  const budget = kvBudget({
    backend,
    bytesPerToken: estimate,
    maxModelLen,
    kvCacheGiB: options.kvCacheGiB,
    gpuMemoryUtilization: options.gpuMemoryUtilization,
    freeBytes: os.freemem(),
    weightBytes: ramWeightBytes,
  });
  // A byte budget too small for one sequence fails here, before minutes of weight loading; the pool the
  // backend makes is checked again below with its own figures.
  if (budget.kind === 'bytes') checkKvBudget(budget, { bytesPerToken: estimate, blockSize, maxModelLen });
  // Tokenizer and template first: a broken tokenizer should fail before minutes of weight loading.
  const tokenizer = loadTokenizer(config.dir);
  // The config files' eos ids passed above, so one out of range here is tokenizer_config.json's eos_token.
  const strayEos = tokenizer.eosTokenIds.find((id) => id >= config.native.vocabSize);
  if (strayEos !== undefined) {
    throw new ConfigError(`${path.join(config.dir, 'tokenizer_config.json')}: "eos_token" ${show(tokenizer.config.eos_token)} is token ${strayEos}, ` +
      `not a token id of this model ("vocab_size" is ${config.native.vocabSize} in ${vocabFile})`);
  }
  const template = createChatTemplate(tokenizer.config);
  const samplingDefaults = options.generationConfig === 'auto' || options.generationConfig === undefined ? samplingDefaultsFrom(config.dir) : {};

  const native = await addon.loadModel({
    files: config.files,
    config: config.native,
    loadFormat,
    backend,
    threads,
    maxNumBatchedTokens,
    ...kvLoadOptions(budget),
    blockSize,
    kvCacheDtype,
    activations: activationsOf(dtype),
    mlock: options.mlock ?? false,
    codeWeights: options.codeWeights ?? true,
    onProgress: options.onProgress,
  });
  try {
    const kv = checkKvPool({
      blocks: native.kvBlocks,
      blockSize: native.blockSize,
      bytesPerToken: native.kvBytesPerToken,
      maxModelLen,
      budget,
      deviceTotalBytes: native.deviceMemory?.totalBytes,
    });
    const engine = createEngine({
      model: native,
      maxModelLen,
      eosTokenIds: [...new Set([...config.eosTokenIds, ...tokenizer.eosTokenIds])],
      vocabSize: config.native.vocabSize,
      maxNumSeqs,
      maxNumBatchedTokens,
      enablePrefixCaching,
    });
    const device: LoadedDevice = {
      backend,
      // An addon from before the CUDA backend has no backendName.
      name: native.backendName ?? backend,
      memory: native.deviceMemory ?? undefined,
      weightBytes: backend === 'cpu' ? (loadFormat === 'dummy' ? native.weightBytes || ramWeightBytes : fileBytes) : native.weightDeviceBytes,
    };
    return {
      config, engine, tokenizer, template, maxModelLen, samplingDefaults, kv, dtype, kvCacheDtype, kvBlocks: native.kvBlocks, blockSize: native.blockSize, threads,
      maxNumSeqs, maxNumBatchedTokens, enablePrefixCaching,
      mlock: !options.mlock ? 'off' : native.weightsLocked ? 'locked' : (native.lockError ?? 'not locked'),
      codedWeights: native.codedWeights,
      loadFormat,
      device,
      notes,
    };
  } catch (err) {
    native.close();
    throw err;
  }
}
