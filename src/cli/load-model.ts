// A model directory → everything the server needs: native model, engine, tokenizer, chat template.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModelConfig, type ModelConfig } from '../model/config.ts';
import { loadAddon } from '../native/load-addon.ts';
import { createEngine, type LlmEngineHandle } from '../engine/engine.ts';
import { loadTokenizer, type TextTokenizer } from '../chat/tokenizer.ts';
import { createChatTemplate, type ChatTemplate } from '../chat/template.ts';
import type { SamplingDefaults } from '../server/sampling.ts';

export const DEFAULT_BLOCK_SIZE = 16;
export const DEFAULT_KV_CACHE_GIB = 4;
/** Pools larger than this many tokens only waste memory on small models (the scheduler runs at most 64 sequences). */
const KV_TOKENS_WORTH_HAVING = 256 * 1024;

export interface LoadModelOptions {
  dir: string;
  /** Default: config.json's max_position_embeddings. */
  maxModelLen?: number;
  /** Default: every core. */
  threads?: number;
  /** Memory for the paged KV cache in GiB (default DEFAULT_KV_CACHE_GIB, less when a small model needs less). */
  kvCacheGiB?: number;
  blockSize?: number;
  /** 'auto': sampling defaults from generation_config.json (vLLM's default); 'vllm'/'none': OpenAI's. */
  generationConfig?: 'auto' | 'vllm' | 'none';
  onProgress?: (done: number, total: number) => void;
}

export interface LoadedModel {
  config: ModelConfig;
  engine: LlmEngineHandle;
  tokenizer: TextTokenizer;
  template: ChatTemplate | null;
  maxModelLen: number;
  samplingDefaults: Partial<SamplingDefaults>;
  kvBlocks: number;
  blockSize: number;
  threads: number;
}

/**
 * The CPU backend keeps K and V in f32: layers × 2 × kv heads × head_dim × 4 bytes per token.
 * Used before loading to size the pool; the model reports the exact figure once loaded.
 */
export function estimateKvBytesPerToken(config: ModelConfig): number {
  const c = config.native;
  return c.numLayers * 2 * c.numKvHeads * c.headDim * 4;
}

/** Number of KV blocks: what the memory budget buys, but never more than is worth having. */
export function planKvBlocks(bytesPerToken: number, blockSize: number, maxModelLen: number, kvCacheGiB: number): number {
  const budgetTokens = Math.floor((kvCacheGiB * 1024 ** 3) / bytesPerToken);
  const tokens = Math.min(budgetTokens, Math.max(maxModelLen, KV_TOKENS_WORTH_HAVING));
  const blocks = Math.floor(tokens / blockSize);
  const needed = Math.ceil(maxModelLen / blockSize);
  if (blocks < needed) {
    const needGiB = (needed * blockSize * bytesPerToken) / 1024 ** 3;
    throw new Error(
      `the KV cache (${kvCacheGiB} GiB) holds ${blocks * blockSize} tokens but max-model-len is ${maxModelLen} ` +
        `(needs ${needGiB.toFixed(2)} GiB): pass --kv-cache-memory ${Math.ceil(needGiB)} or a smaller --max-model-len`,
    );
  }
  return blocks;
}

function samplingDefaultsFrom(dir: string): Partial<SamplingDefaults> {
  const file = path.join(dir, 'generation_config.json');
  if (!fs.existsSync(file)) return {};
  try {
    const gen = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    const out: Partial<SamplingDefaults> = {};
    if (typeof gen.temperature === 'number') out.temperature = gen.temperature;
    if (typeof gen.top_p === 'number') out.topP = gen.top_p;
    if (typeof gen.top_k === 'number') out.topK = gen.top_k;
    return out;
  } catch (err) {
    throw new Error(`${file}: invalid JSON (${(err as Error).message})`);
  }
}

export async function loadServedModel(options: LoadModelOptions): Promise<LoadedModel> {
  const config = loadModelConfig(options.dir);
  const maxModelLen = options.maxModelLen ?? config.maxPositionEmbeddings;
  if (!Number.isInteger(maxModelLen) || maxModelLen < 2) throw new Error(`max-model-len must be an integer >= 2 (got ${maxModelLen})`);
  const threads = options.threads ?? os.availableParallelism();
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  const kvBlocks = planKvBlocks(estimateKvBytesPerToken(config), blockSize, maxModelLen, options.kvCacheGiB ?? DEFAULT_KV_CACHE_GIB);
  // Tokenizer and template first: a broken tokenizer should fail before minutes of weight loading.
  const tokenizer = loadTokenizer(config.dir);
  const template = createChatTemplate(tokenizer.config);
  const samplingDefaults = options.generationConfig === 'auto' || options.generationConfig === undefined ? samplingDefaultsFrom(config.dir) : {};

  const native = await loadAddon().loadModel({
    files: config.files,
    config: config.native,
    threads,
    kvBlocks,
    blockSize,
    onProgress: options.onProgress,
  });
  try {
    const engine = createEngine({
      model: native,
      maxModelLen,
      eosTokenIds: [...new Set([...config.eosTokenIds, ...tokenizer.eosTokenIds])],
      vocabSize: config.native.vocabSize,
    });
    return { config, engine, tokenizer, template, maxModelLen, samplingDefaults, kvBlocks, blockSize, threads };
  } catch (err) {
    native.close();
    throw err;
  }
}
