// config.json validation (issue 11): every field the forward pass depends on is checked at load, and a bad
// value fails naming the file, the key and the value. Each case rewrites config.json in a copy of a generated
// model and loads it through loadModelConfig (validation fails before any weight is opened); the eos range
// checks and one full load go through loadServedModel, as the server loads a model. The real-shape
// Qwen3-MoE configs and the generated ones pass the same validation.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadServedModel } from '../../src/cli/load-model.ts';
import { loadModelConfig } from '../../src/model/config.ts';
import { ConfigError, LIMITS, checkRopeTables, validateModelFields } from '../../src/model/config-validate.ts';
import { buildConfigJson, isMoeLayer, resolveMakeModelOptions, type MakeModelOptions } from '../../src/model/make-model.ts';
import { ropeTables } from '../../src/model/rope.ts';
import { SLICE_SHAPE } from '../../bench/peer/slice-model.ts';
import { copyModelDir, removeTempDir, testModel } from '../helpers/model-fixtures.ts';

// Real vocabulary (the tokenizer's eos ids are in range), a dense layer 0 and sparse layer 1, tiny widths.
const SMALL: MakeModelOptions = {
  layers: 2, hidden: 32, heads: 4, kvHeads: 2, headDim: 16, experts: 4, topK: 2, moeIntermediate: 16,
  intermediate: 48, mlpOnlyLayers: [0], seed: 5, maxPositionEmbeddings: 4096,
};

/** Qwen3-30B-A3B's config.json (the base of Tongyi DeepResearch 30B-A3B), as published. */
const QWEN3_30B_A3B: Record<string, unknown> = {
  architectures: ['Qwen3MoeForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 151643,
  decoder_sparse_step: 1, eos_token_id: 151645, head_dim: 128, hidden_act: 'silu', hidden_size: 2048,
  initializer_range: 0.02, intermediate_size: 6144, max_position_embeddings: 40960, max_window_layers: 48,
  mlp_only_layers: [], model_type: 'qwen3_moe', moe_intermediate_size: 768, norm_topk_prob: true,
  num_attention_heads: 32, num_experts: 128, num_experts_per_tok: 8, num_hidden_layers: 48, num_key_value_heads: 4,
  output_router_logits: false, rms_norm_eps: 1e-6, rope_scaling: null, rope_theta: 1000000.0,
  router_aux_loss_coef: 0.001, sliding_window: null, tie_word_embeddings: false, torch_dtype: 'bfloat16',
  transformers_version: '4.51.0', use_cache: true, use_sliding_window: false, vocab_size: 151936,
};

let dir = '';
let cfgFile = '';
let genFile = '';
let tokCfgFile = '';
let pristine: Record<string, unknown> = {};
let pristineGen = '';
let pristineTokCfg = '';

/** config.json = the generated one with `patch` applied (an undefined value deletes the key). */
function writeConfig(patch: Record<string, unknown>): void {
  const cfg: Record<string, unknown> = { ...pristine, ...patch };
  for (const [k, v] of Object.entries(patch)) if (v === undefined) delete cfg[k];
  fs.writeFileSync(cfgFile, JSON.stringify(cfg));
}

function restore(): void {
  fs.writeFileSync(cfgFile, JSON.stringify(pristine));
  fs.writeFileSync(genFile, pristineGen);
  fs.writeFileSync(tokCfgFile, pristineTokCfg);
}

function errorOf(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a ConfigError, but the load succeeded');
}

function expectMentions(err: Error, needles: string[]): void {
  expect(err).toBeInstanceOf(ConfigError);
  for (const n of needles) expect(err.message).toContain(n);
}

const shown = (v: unknown) => (v === undefined ? 'missing' : JSON.stringify(v));

beforeAll(async () => {
  dir = copyModelDir(await testModel(SMALL), 'config-validation');
  cfgFile = path.join(dir, 'config.json');
  genFile = path.join(dir, 'generation_config.json');
  tokCfgFile = path.join(dir, 'tokenizer_config.json');
  pristine = JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
  pristineGen = fs.readFileSync(genFile, 'utf8');
  pristineTokCfg = fs.readFileSync(tokCfgFile, 'utf8');
});

afterAll(() => {
  if (dir) removeTempDir(dir);
});

interface Case {
  patch: Record<string, unknown>;
  /** The key as the message names it (nested: "rope_scaling.factor"). */
  key: string;
  value: unknown;
  also?: string[];
}

const yarn = (extra: Record<string, unknown>) => ({ rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 1024, ...extra } });

const CASES: Record<string, Case> = {
  // The list
  'hidden_act gelu': { patch: { hidden_act: 'gelu' }, key: 'hidden_act', value: 'gelu', also: ['silu'] },
  'attention_bias true': { patch: { attention_bias: true }, key: 'attention_bias', value: true, also: ['not implemented'] },
  'sliding window switched on': {
    patch: { use_sliding_window: true, sliding_window: 4096 }, key: 'use_sliding_window', value: true, also: ['"sliding_window" 4096', 'not implemented'],
  },
  'rope_theta 0': { patch: { rope_theta: 0 }, key: 'rope_theta', value: 0 },
  'rms_norm_eps -1': { patch: { rms_norm_eps: -1 }, key: 'rms_norm_eps', value: -1 },
  'norm_topk_prob "false"': { patch: { norm_topk_prob: 'false' }, key: 'norm_topk_prob', value: 'false', also: ['JSON boolean'] },
  'vocab_size 1e12': { patch: { vocab_size: 1e12 }, key: 'vocab_size', value: 1e12, also: [`${LIMITS.vocab}`] },
  // Unimplemented features
  'hidden_act not a string': { patch: { hidden_act: 5 }, key: 'hidden_act', value: 5 },
  'layer_types with sliding layers': { patch: { layer_types: ['sliding_attention', 'full_attention'] }, key: 'layer_types', value: ['sliding_attention', 'full_attention'] },
  'partial_rotary_factor 0.5': { patch: { partial_rotary_factor: 0.5 }, key: 'partial_rotary_factor', value: 0.5 },
  // Booleans
  'attention_bias "false"': { patch: { attention_bias: 'false' }, key: 'attention_bias', value: 'false' },
  'use_sliding_window "true"': { patch: { use_sliding_window: 'true' }, key: 'use_sliding_window', value: 'true' },
  'tie_word_embeddings 1': { patch: { tie_word_embeddings: 1 }, key: 'tie_word_embeddings', value: 1 },
  // Floats
  'rope_theta negative': { patch: { rope_theta: -10000 }, key: 'rope_theta', value: -10000 },
  'rope_theta 1': { patch: { rope_theta: 1 }, key: 'rope_theta', value: 1 },
  'rope_theta a string': { patch: { rope_theta: '1e6' }, key: 'rope_theta', value: '1e6' },
  'rope_theta overflowing float32': { patch: { rope_theta: 1e300 }, key: 'rope_theta', value: 1e300, also: ['float32'] },
  'rms_norm_eps 0': { patch: { rms_norm_eps: 0 }, key: 'rms_norm_eps', value: 0 },
  'rms_norm_eps 1': { patch: { rms_norm_eps: 1 }, key: 'rms_norm_eps', value: 1 },
  'rms_norm_eps 0 in float32': { patch: { rms_norm_eps: 1e-50 }, key: 'rms_norm_eps', value: 1e-50 },
  'rms_norm_eps a string': { patch: { rms_norm_eps: '1e-6' }, key: 'rms_norm_eps', value: '1e-6' },
  // Dimensions
  'vocab_size 0': { patch: { vocab_size: 0 }, key: 'vocab_size', value: 0 },
  'vocab_size fractional': { patch: { vocab_size: 151936.5 }, key: 'vocab_size', value: 151936.5 },
  'vocab_size a string': { patch: { vocab_size: '151936' }, key: 'vocab_size', value: '151936' },
  'vocab_size missing': { patch: { vocab_size: undefined }, key: 'vocab_size', value: undefined },
  'hidden_size 0': { patch: { hidden_size: 0 }, key: 'hidden_size', value: 0 },
  'hidden_size 1e9': { patch: { hidden_size: 1e9 }, key: 'hidden_size', value: 1e9 },
  'num_hidden_layers 0': { patch: { num_hidden_layers: 0 }, key: 'num_hidden_layers', value: 0 },
  'num_hidden_layers 1e6': { patch: { num_hidden_layers: 1e6 }, key: 'num_hidden_layers', value: 1e6 },
  'num_attention_heads 0': { patch: { num_attention_heads: 0 }, key: 'num_attention_heads', value: 0 },
  'num_key_value_heads not dividing': { patch: { num_key_value_heads: 3 }, key: 'num_key_value_heads', value: 3 },
  'num_key_value_heads above heads': { patch: { num_key_value_heads: 8 }, key: 'num_key_value_heads', value: 8 },
  'head_dim odd': { patch: { head_dim: 15 }, key: 'head_dim', value: 15, also: ['even'] },
  'head_dim 0': { patch: { head_dim: 0 }, key: 'head_dim', value: 0 },
  'head_dim 1e6': { patch: { head_dim: 1e6 }, key: 'head_dim', value: 1e6 },
  'head_dim missing, hidden/heads odd': { patch: { head_dim: undefined, hidden_size: 36 }, key: 'head_dim', value: undefined, also: ['= 9'] },
  'intermediate_size 0 with a dense layer': { patch: { intermediate_size: 0 }, key: 'intermediate_size', value: 0 },
  'intermediate_size missing with a dense layer': { patch: { intermediate_size: undefined }, key: 'intermediate_size', value: undefined },
  'moe_intermediate_size negative': { patch: { moe_intermediate_size: -5 }, key: 'moe_intermediate_size', value: -5 },
  'num_experts negative': { patch: { num_experts: -1 }, key: 'num_experts', value: -1 },
  'num_experts 1e9': { patch: { num_experts: 1e9 }, key: 'num_experts', value: 1e9 },
  'num_experts_per_tok 0': { patch: { num_experts_per_tok: 0 }, key: 'num_experts_per_tok', value: 0 },
  'num_experts_per_tok above num_experts': { patch: { num_experts_per_tok: 9 }, key: 'num_experts_per_tok', value: 9, also: ['[1, 4]'] },
  'decoder_sparse_step 0': { patch: { decoder_sparse_step: 0 }, key: 'decoder_sparse_step', value: 0 },
  'mlp_only_layers out of range': { patch: { mlp_only_layers: [5] }, key: 'mlp_only_layers', value: [5], also: ['[0, 1]'] },
  'mlp_only_layers strings': { patch: { mlp_only_layers: ['0'] }, key: 'mlp_only_layers', value: ['0'] },
  'mlp_only_layers not a list': { patch: { mlp_only_layers: 0 }, key: 'mlp_only_layers', value: 0 },
  'max_position_embeddings 0': { patch: { max_position_embeddings: 0 }, key: 'max_position_embeddings', value: 0 },
  'max_position_embeddings 1e12': { patch: { max_position_embeddings: 1e12 }, key: 'max_position_embeddings', value: 1e12 },
  // rope_scaling
  'rope_scaling a string': { patch: { rope_scaling: 'yarn' }, key: 'rope_scaling', value: 'yarn' },
  'rope_scaling unsupported type': { patch: { rope_scaling: { rope_type: 'dynamic', factor: 2 } }, key: 'rope_scaling.rope_type', value: 'dynamic' },
  'rope_scaling legacy type key': { patch: { rope_scaling: { type: 'longrope', factor: 2 } }, key: 'rope_scaling.type', value: 'longrope' },
  'rope_scaling factor below 1': { patch: yarn({ factor: 0.5 }), key: 'rope_scaling.factor', value: 0.5 },
  'rope_scaling factor missing': { patch: { rope_scaling: { rope_type: 'yarn' } }, key: 'rope_scaling.factor', value: undefined },
  'rope_scaling linear factor a string': { patch: { rope_scaling: { rope_type: 'linear', factor: '4' } }, key: 'rope_scaling.factor', value: '4' },
  'rope_scaling factor huge': { patch: yarn({ factor: 1e9 }), key: 'rope_scaling.factor', value: 1e9 },
  'rope_scaling original length 1e12': { patch: yarn({ original_max_position_embeddings: 1e12 }), key: 'rope_scaling.original_max_position_embeddings', value: 1e12 },
  'rope_scaling beta_fast negative': { patch: yarn({ beta_fast: -1 }), key: 'rope_scaling.beta_fast', value: -1 },
  'rope_scaling beta_slow a string': { patch: yarn({ beta_slow: '1' }), key: 'rope_scaling.beta_slow', value: '1' },
  'rope_scaling mscale negative': { patch: yarn({ mscale: -10 }), key: 'rope_scaling.mscale', value: -10 },
  'rope_scaling attention_factor 0': { patch: yarn({ attention_factor: 0 }), key: 'rope_scaling.attention_factor', value: 0 },
  'rope_scaling truncate "yes"': { patch: yarn({ truncate: 'yes' }), key: 'rope_scaling.truncate', value: 'yes' },
  // Identity and token ids (their type; the range is checked where they become stop ids, below)
  'architectures not Qwen3-MoE': { patch: { architectures: ['LlamaForCausalLM'] }, key: 'architectures', value: ['LlamaForCausalLM'] },
  'eos_token_id a string': { patch: { eos_token_id: '<|im_end|>' }, key: 'eos_token_id', value: '<|im_end|>' },
  'eos_token_id fractional in a list': { patch: { eos_token_id: [151645, 1.5] }, key: 'eos_token_id', value: [151645, 1.5] },
  'eos_token_id negative': { patch: { eos_token_id: -1 }, key: 'eos_token_id', value: -1 },
};

describe('config.json: a bad value fails at load naming the file, the key and the value', () => {
  it('the generated model loads (the edits below are the only difference)', () => {
    restore();
    const cfg = loadModelConfig(dir);
    expect(cfg.native.moeLayers).toEqual([false, true]);
    expect(cfg.native.normTopkProb).toBe(true);
    expect(cfg.eosTokenIds).toEqual([151645, 151643]);
  });

  it.each(Object.entries(CASES))('%s', (_, c) => {
    writeConfig(c.patch);
    try {
      const err = errorOf(() => loadModelConfig(dir));
      expectMentions(err, [cfgFile, `"${c.key}"`, shown(c.value), ...(c.also ?? [])]);
    } finally {
      restore();
    }
  });

  it('a value is shown cut short', () => {
    writeConfig({ hidden_act: 'x'.repeat(500) });
    try {
      const err = errorOf(() => loadModelConfig(dir));
      expectMentions(err, [cfgFile, '"hidden_act"', `"${'x'.repeat(40)}`]);
      expect(err.message.length).toBeLessThan(cfgFile.length + 200);
    } finally {
      restore();
    }
  });

  it('generation_config.json: a malformed eos_token_id names that file', () => {
    fs.writeFileSync(genFile, JSON.stringify({ eos_token_id: [151645, 'x'] }));
    try {
      expectMentions(errorOf(() => loadModelConfig(dir)), [genFile, '"eos_token_id"', '[151645,"x"]']);
    } finally {
      restore();
    }
  });
});

describe('eos ids outside the vocabulary fail when the server loads the model, not per request', () => {
  const opts = { dir: '', threads: 1, kvCacheGiB: 0.01, maxModelLen: 256 };
  const rejection = async (): Promise<Error> => {
    const outcome = await loadServedModel({ ...opts, dir }).then(
      async (m) => { await m.engine.close(); return null; },
      (e: unknown) => e as Error,
    );
    if (!outcome) throw new Error('expected a ConfigError, but the load succeeded');
    return outcome;
  };

  it('config.json eos_token_id 1e9', async () => {
    writeConfig({ eos_token_id: 1e9 });
    try {
      expectMentions(await rejection(), [cfgFile, '"eos_token_id"', '1000000000', '"vocab_size" is 151936']);
    } finally {
      restore();
    }
  });

  it('generation_config.json eos_token_id, one of a list', async () => {
    fs.writeFileSync(genFile, JSON.stringify({ ...JSON.parse(pristineGen) as object, eos_token_id: [151645, 151936] }));
    try {
      expectMentions(await rejection(), [genFile, '"eos_token_id"', '[151645,151936]', 'holds 151936']);
    } finally {
      restore();
    }
  });

  it("tokenizer_config.json's eos_token beyond a smaller vocab_size", async () => {
    // The config files' ids are in range; the tokenizer's <|im_end|> (151645) is not.
    writeConfig({ vocab_size: 151000, eos_token_id: 0 });
    fs.writeFileSync(genFile, JSON.stringify({ eos_token_id: 0 }));
    try {
      expectMentions(await rejection(), [tokCfgFile, '"eos_token"', '"<|im_end|>"', '151645', '"vocab_size" is 151000']);
    } finally {
      restore();
    }
  });

  it("generation_config.json's sampling defaults: a bad one fails at load, not as a 400 on every request", async () => {
    for (const [key, value, rule] of [['top_p', 2, '(0, 1]'], ['temperature', -1, '>= 0'], ['top_k', 1.5, 'integer >= -1'], ['top_p', '0.9', '(0, 1]']] as const) {
      fs.writeFileSync(genFile, JSON.stringify({ ...(JSON.parse(pristineGen) as object), [key]: value }));
      try {
        expectMentions(await rejection(), [genFile, `"${key}"`, JSON.stringify(value), rule]);
      } finally {
        restore();
      }
    }
  });

  it('the pristine model loads and serves end to end (the checks are wired in, and pass valid configs)', async () => {
    restore();
    const loaded = await loadServedModel({ ...opts, dir });
    try {
      expect(loaded.config.native.vocabSize).toBe(151936);
      expect(loaded.engine.eosTokenIds).toEqual(expect.arrayContaining([151645, 151643]));
    } finally {
      await loaded.engine.close();
    }
  });
});

describe('real and generated configs pass validation', () => {
  const validate = (raw: Record<string, unknown>) => {
    const file = '/models/x/config.json';
    const m = validateModelFields(raw, file);
    checkRopeTables(ropeTables(m.headDim, m.ropeTheta, m.ropeScaling, m.maxPositionEmbeddings), raw, file);
    return m;
  };

  it("Qwen3-30B-A3B's config.json", () => {
    const m = validate(QWEN3_30B_A3B);
    expect(m).toMatchObject({ hiddenSize: 2048, numLayers: 48, numHeads: 32, numKvHeads: 4, headDim: 128, vocabSize: 151936,
      numExperts: 128, numExpertsPerTok: 8, moeIntermediateSize: 768, intermediateSize: 6144, normTopkProb: true,
      tieWordEmbeddings: false, rmsNormEps: 1e-6, ropeTheta: 1e6, ropeScaling: null, maxPositionEmbeddings: 40960 });
    expect(m.moeLayers).toEqual(Array(48).fill(true));
  });

  it('the same with 128K context by yarn, a shipped sliding_window left off, and transformers-style nulls', () => {
    const m = validate({ ...QWEN3_30B_A3B, sliding_window: 4096, use_sliding_window: false,
      rope_scaling: { rope_type: 'yarn', factor: 4.0, original_max_position_embeddings: 32768 }, mlp_only_layers: null, head_dim: null,
      layer_types: Array(48).fill('full_attention'), partial_rotary_factor: 1 });
    expect(m.ropeScaling).toMatchObject({ type: 'yarn', factor: 4, originalMaxPositionEmbeddings: 32768 });
    expect(m.headDim).toBe(64);  // hidden / heads, transformers' fallback
    // use_sliding_window true without a window slides nothing
    expect(() => validate({ ...QWEN3_30B_A3B, use_sliding_window: true })).not.toThrow();
    expect(() => validate({ ...QWEN3_30B_A3B, hidden_act: 'swish', rope_scaling: { type: 'linear', factor: 2 } })).not.toThrow();
  });

  it('generated configs of every shape make-model writes', () => {
    const shapes: MakeModelOptions[] = [
      {}, SMALL, SLICE_SHAPE, { layers: 1, experts: 0 }, { layers: 4, decoderSparseStep: 2, tieWordEmbeddings: true, normTopkProb: false },
      { ropeScaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 32768 }, maxPositionEmbeddings: 131072 },
      { ropeScaling: { rope_type: 'yarn', factor: 2, beta_fast: 16, beta_slow: 2, mscale: 1, mscale_all_dim: 0.5, truncate: false } },
    ];
    for (const s of shapes) {
      const o = resolveMakeModelOptions(s);
      const m = validate(buildConfigJson(o));
      expect(m.moeLayers).toEqual(Array.from({ length: o.layers }, (_, i) => isMoeLayer(i, o)));
    }
  });
});
