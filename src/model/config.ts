// config.json (Qwen3MoeForCausalLM, as transformers reads it) → the shape the engine and the native side use.
import fs from 'node:fs';
import path from 'node:path';
import type { NativeModelConfig, WeightDType } from '../native/addon-types.ts';
import { ropeTables } from './rope.ts';
import { ConfigError, checkRopeTables, parseTokenIds, validateModelFields, type TokenIdSource } from './config-validate.ts';

export { ConfigError, SUPPORTED_ARCHITECTURES } from './config-validate.ts';

export interface ModelConfig {
  dir: string;
  native: NativeModelConfig;
  /** Absolute paths of the safetensors files, from the index when sharded; empty for loadFormat 'dummy'. */
  files: string[];
  /** 'dummy' (vLLM's --load-format dummy): random weights of the config's shapes, no safetensors needed. */
  loadFormat: 'safetensors' | 'dummy';
  maxPositionEmbeddings: number;
  eosTokenIds: number[];
  /**
   * eos_token_id of config.json and generation_config.json as given (each a valid id list). Not yet
   * checked against vocab_size: the server does that at load (checkTokenIdsInVocab), where they become stop ids.
   */
  eosSources: TokenIdSource[];
  bosTokenId: number | null;
  /** torch_dtype as declared (informational: each tensor carries its own dtype). */
  dtype: WeightDType;
  raw: Record<string, unknown>;
}

function readJson(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read ${file}: ${(e as Error).message}`);
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new ConfigError(`${file}: invalid JSON (${(e as Error).message})`);
  }
}

function safetensorsFiles(dir: string): string[] {
  const index = path.join(dir, 'model.safetensors.index.json');
  if (fs.existsSync(index)) {
    const raw = readJson(index);
    const map = raw.weight_map;
    if (typeof map !== 'object' || map === null) throw new ConfigError(`${index}: missing "weight_map"`);
    const names = [...new Set(Object.values(map as Record<string, unknown>).map(String))].sort();
    return names.map((n) => {
      const f = path.join(dir, n);
      if (!fs.existsSync(f)) throw new ConfigError(`${index}: shard ${n} does not exist`);
      return f;
    });
  }
  const single = path.join(dir, 'model.safetensors');
  if (fs.existsSync(single)) return [single];
  const any = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort();
  if (any.length === 0) throw new ConfigError(`${dir}: no safetensors weights (model.safetensors or model.safetensors.index.json; --load-format dummy serves random weights of config.json's shapes)`);
  return any.map((f) => path.join(dir, f));
}

export interface LoadConfigOptions {
  /** 'dummy': the directory needs only config.json (and the tokenizer files the server reads); default 'safetensors'. */
  loadFormat?: 'safetensors' | 'dummy';
}

export function loadModelConfig(dirIn: string, options: LoadConfigOptions = {}): ModelConfig {
  const loadFormat = options.loadFormat ?? 'safetensors';
  const dir = path.resolve(dirIn);
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new ConfigError(`model directory ${dir} does not exist`);
  const file = path.join(dir, 'config.json');
  const raw = readJson(file);
  const m = validateModelFields(raw, file);
  const rope = ropeTables(m.headDim, m.ropeTheta, m.ropeScaling, m.maxPositionEmbeddings);
  checkRopeTables(rope, raw, file);

  const eosSources = [parseTokenIds(raw, 'eos_token_id', file)];
  const genFile = path.join(dir, 'generation_config.json');
  if (fs.existsSync(genFile)) eosSources.unshift(parseTokenIds(readJson(genFile), 'eos_token_id', genFile));
  const torchDtype = String(raw.torch_dtype ?? raw.dtype ?? 'bfloat16');
  const dtype: WeightDType = torchDtype === 'float32' ? 'f32' : torchDtype === 'float16' ? 'f16' : 'bf16';

  const native: NativeModelConfig = {
    hiddenSize: m.hiddenSize,
    numLayers: m.numLayers,
    numHeads: m.numHeads,
    numKvHeads: m.numKvHeads,
    headDim: m.headDim,
    vocabSize: m.vocabSize,
    intermediateSize: m.intermediateSize,
    moeIntermediateSize: m.moeIntermediateSize,
    numExperts: m.numExperts,
    numExpertsPerTok: m.numExpertsPerTok,
    normTopkProb: m.normTopkProb,
    rmsNormEps: m.rmsNormEps,
    moeLayers: m.moeLayers,
    tieWordEmbeddings: m.tieWordEmbeddings,
    ropeInvFreq: rope.invFreq,
    ropeAttentionFactor: rope.attentionFactor,
  };
  return {
    dir,
    native,
    files: loadFormat === 'dummy' ? [] : safetensorsFiles(dir),
    loadFormat,
    maxPositionEmbeddings: m.maxPositionEmbeddings,
    eosTokenIds: [...new Set(eosSources.flatMap((s) => s.ids))],
    eosSources,
    bosTokenId: typeof raw.bos_token_id === 'number' ? raw.bos_token_id : null,
    dtype,
    raw,
  };
}
