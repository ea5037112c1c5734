import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  GENERATION_CONFIG,
  generateTensorF32,
  makeModel,
  planTensors,
  resolveMakeModelOptions,
  splitIntoShards,
} from '../../src/model/make-model.ts';
import { f32ToBf16, f32ToF16, safetensorsLayout } from '../../src/model/safetensors-writer.ts';
import { qwen3TokenizerFile } from '../../src/model/tokenizer-files.ts';
import { decodeToF32, f16ToF32, readCheckpointTensors, readSafetensorsHeader } from '../../src/gguf/safetensors-reader.ts';
import { makeTempDir, removeTempDir } from '../helpers/model-fixtures.ts';

/** Parses a safetensors file by the spec, independently of the project's reader. */
function parseRaw(file: string) {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  return { buf, n, header, dataStart: 8 + n };
}

const bytesPer: Record<string, number> = { BF16: 2, F16: 2, F32: 4 };

describe('safetensors dtype encoders', () => {
  const f32 = (...v: number[]) => Float32Array.from(v);
  const u32 = (...v: number[]) => new Float32Array(Uint32Array.from(v).buffer);

  it('rounds f32 → bf16 to nearest even', () => {
    expect([...f32ToBf16(f32(1, -2, 0, -0))]).toEqual([0x3f80, 0xc000, 0x0000, 0x8000]);
    // 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties to the even 1.
    // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: ties to the even 1 + 2^-6.
    expect([...f32ToBf16(u32(0x3f808000, 0x3f818000, 0x3f808001))]).toEqual([0x3f80, 0x3f82, 0x3f81]);
    expect([...f32ToBf16(f32(Infinity, -Infinity))]).toEqual([0x7f80, 0xff80]);
    expect(f32ToBf16(u32(0x7f7fffff))[0]).toBe(0x7f80); // rounds up into infinity
    const nan = f32ToBf16(u32(0x7f800001))[0]!;
    expect((nan & 0x7f80) === 0x7f80 && (nan & 0x7f) !== 0).toBe(true);
  });

  it('bf16 values survive bf16 → f32 → bf16', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const f = decodeToF32(new Uint8Array(all.buffer), 'BF16');
    const back = f32ToBf16(f);
    for (let i = 0; i < 65536; i++) {
      if ((i & 0x7f80) === 0x7f80 && (i & 0x7f) !== 0) continue; // NaNs: quiet but payload may change
      if (back[i] !== i) throw new Error(`bf16 ${i.toString(16)} → ${back[i]!.toString(16)}`);
    }
  });

  it('rounds f32 → f16 to nearest even, with subnormals and overflow', () => {
    expect([...f32ToF16(f32(1, -2, 65504, 65520, 1e6, 2 ** -24, 2 ** -25, 1.5 * 2 ** -25, 2 ** -26))]).toEqual([
      0x3c00, 0xc000, 0x7bff, 0x7c00, 0x7c00, 0x0001, 0x0000, 0x0001, 0x0000,
    ]);
    expect([...f32ToF16(f32(1 + 2 ** -11, 1 + 3 * 2 ** -11, 6.103515625e-5))]).toEqual([0x3c00, 0x3c02, 0x0400]);
    const all = new Uint16Array(65536).map((_, i) => i);
    const f = Float32Array.from(all, (h) => f16ToF32(h));
    const back = f32ToF16(f);
    for (let i = 0; i < 65536; i++) {
      if ((i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0) continue;
      if (back[i] !== i) throw new Error(`f16 ${i.toString(16)} → ${back[i]!.toString(16)}`);
    }
  });

  it('pads the header with spaces to 8-byte alignment', () => {
    for (const name of ['a', 'ab', 'abc', 'abcd', 'abcde']) {
      const { header } = safetensorsLayout([{ name, dtype: 'F32', shape: [3] }]);
      expect(header.length % 8).toBe(0);
      const n = Number(header.readBigUInt64LE(0));
      expect(n).toBe(header.length - 8);
      expect(JSON.parse(header.subarray(8).toString())).toEqual({
        __metadata__: { format: 'pt' },
        [name]: { dtype: 'F32', shape: [3], data_offsets: [0, 12] },
      });
    }
  });
});

describe('makeModel', () => {
  let dir: string;
  let single: string;
  let sharded: string;
  const opts = { layers: 3, hidden: 32, heads: 4, kvHeads: 2, headDim: 12, experts: 4, topK: 2, moeIntermediate: 16, intermediate: 40, vocab: 1000, mlpOnlyLayers: [1], seed: 7 };

  beforeAll(async () => {
    dir = makeTempDir('make-model');
    single = path.join(dir, 'single');
    sharded = path.join(dir, 'sharded');
    await makeModel(single, opts);
    await makeModel(sharded, { ...opts, shards: 3 });
  });
  afterAll(() => removeTempDir(dir));

  it('writes config.json with every Qwen3MoeConfig field', () => {
    const cfg = JSON.parse(fs.readFileSync(path.join(single, 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({
      architectures: ['Qwen3MoeForCausalLM'],
      model_type: 'qwen3_moe',
      vocab_size: 1000,
      hidden_size: 32,
      intermediate_size: 40,
      moe_intermediate_size: 16,
      num_hidden_layers: 3,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 12,
      hidden_act: 'silu',
      max_position_embeddings: 40960,
      rms_norm_eps: 1e-6,
      rope_theta: 1e6,
      rope_scaling: null,
      attention_bias: false,
      attention_dropout: 0,
      decoder_sparse_step: 1,
      num_experts: 4,
      num_experts_per_tok: 2,
      norm_topk_prob: true,
      output_router_logits: false,
      router_aux_loss_coef: 0.001,
      mlp_only_layers: [1],
      tie_word_embeddings: false,
      torch_dtype: 'bfloat16',
      bos_token_id: 151643,
      eos_token_id: 151645,
      use_cache: true,
      sliding_window: null,
      use_sliding_window: false,
      max_window_layers: 3,
    });
    expect(JSON.parse(fs.readFileSync(path.join(single, 'generation_config.json'), 'utf8'))).toEqual(GENERATION_CONFIG);
    expect(GENERATION_CONFIG.eos_token_id).toEqual([151645, 151643]);
  });

  it('copies the real Qwen3 tokenizer files', () => {
    for (const f of ['tokenizer.json', 'tokenizer_config.json'] as const) {
      expect(fs.readFileSync(path.join(single, f)).equals(fs.readFileSync(qwen3TokenizerFile(f)))).toBe(true);
    }
    const tc = JSON.parse(fs.readFileSync(path.join(single, 'tokenizer_config.json'), 'utf8'));
    expect(typeof tc.chat_template).toBe('string');
  });

  it('writes a well-formed safetensors file with the exact HF names and shapes', () => {
    const file = path.join(single, 'model.safetensors');
    const { buf, header, dataStart } = parseRaw(file);
    expect(dataStart % 8).toBe(0);
    expect(header.__metadata__).toEqual({ format: 'pt' });
    const H = 32, V = 1000, q = 48, kv = 24;
    const expected: Record<string, number[]> = {
      'model.embed_tokens.weight': [V, H],
      'model.norm.weight': [H],
      'lm_head.weight': [V, H],
    };
    for (let l = 0; l < 3; l++) {
      const p = `model.layers.${l}`;
      Object.assign(expected, {
        [`${p}.input_layernorm.weight`]: [H],
        [`${p}.post_attention_layernorm.weight`]: [H],
        [`${p}.self_attn.q_proj.weight`]: [q, H],
        [`${p}.self_attn.k_proj.weight`]: [kv, H],
        [`${p}.self_attn.v_proj.weight`]: [kv, H],
        [`${p}.self_attn.o_proj.weight`]: [H, q],
        [`${p}.self_attn.q_norm.weight`]: [12],
        [`${p}.self_attn.k_norm.weight`]: [12],
      });
      if (l === 1) {
        Object.assign(expected, { [`${p}.mlp.gate_proj.weight`]: [40, H], [`${p}.mlp.up_proj.weight`]: [40, H], [`${p}.mlp.down_proj.weight`]: [H, 40] });
      } else {
        expected[`${p}.mlp.gate.weight`] = [4, H];
        for (let e = 0; e < 4; e++) {
          Object.assign(expected, {
            [`${p}.mlp.experts.${e}.gate_proj.weight`]: [16, H],
            [`${p}.mlp.experts.${e}.up_proj.weight`]: [16, H],
            [`${p}.mlp.experts.${e}.down_proj.weight`]: [H, 16],
          });
        }
      }
    }
    const names = Object.keys(header).filter((k) => k !== '__metadata__');
    expect(names.sort()).toEqual(Object.keys(expected).sort());
    // Offsets tile the data section exactly, in order, with dtype × shape bytes each.
    const spans = names.map((n) => ({ n, ...header[n]! })).sort((a, b) => a.data_offsets[0] - b.data_offsets[0]);
    let pos = 0;
    for (const s of spans) {
      expect(s.shape).toEqual(expected[s.n]);
      expect(s.dtype).toBe('BF16');
      expect(s.data_offsets[0]).toBe(pos);
      pos = s.data_offsets[1];
      expect(pos - s.data_offsets[0]).toBe(s.shape.reduce((a, b) => a * b, 1) * bytesPer[s.dtype]!);
    }
    expect(buf.length).toBe(dataStart + pos);
  });

  it('stores the generated values rounded to bf16, with sane scales', () => {
    const o = resolveMakeModelOptions(opts);
    const plan = planTensors(o);
    const { buf, header, dataStart } = parseRaw(path.join(single, 'model.safetensors'));
    for (const name of ['lm_head.weight', 'model.layers.0.mlp.experts.3.down_proj.weight', 'model.layers.2.self_attn.k_norm.weight']) {
      const t = plan.find((x) => x.name === name)!;
      const want = f32ToBf16(generateTensorF32(7, t));
      const [a, b] = header[name]!.data_offsets;
      const got = new Uint16Array(buf.buffer.slice(buf.byteOffset + dataStart + a, buf.byteOffset + dataStart + b));
      expect(got).toEqual(want);
    }
    const stats = (name: string) => {
      const v = generateTensorF32(7, plan.find((x) => x.name === name)!);
      const mean = v.reduce((s, x) => s + x, 0) / v.length;
      const std = Math.sqrt(v.reduce((s, x) => s + (x - mean) ** 2, 0) / v.length);
      return { mean, std, min: Math.min(...v), max: Math.max(...v) };
    };
    const lm = stats('lm_head.weight');
    expect(lm.std * Math.sqrt(32)).toBeGreaterThan(8); // logits of std ≈ 10 after the final norm
    expect(lm.std * Math.sqrt(32)).toBeLessThan(12);
    const qp = stats('model.layers.0.self_attn.q_proj.weight');
    expect(qp.std).toBeCloseTo(1 / Math.sqrt(32), 1);
    const nrm = stats('model.norm.weight');
    expect(nrm.min).toBeGreaterThanOrEqual(0.9);
    expect(nrm.max).toBeLessThanOrEqual(1.1);
  });

  it('is deterministic in the seed and independent of sharding', async () => {
    const again = path.join(dir, 'again');
    const other = path.join(dir, 'other-seed');
    await makeModel(again, opts);
    await makeModel(other, { ...opts, seed: 8 });
    const f = (d: string) => fs.readFileSync(path.join(d, 'model.safetensors'));
    expect(f(again).equals(f(single))).toBe(true);
    expect(f(other).equals(f(single))).toBe(false);

    const a = readCheckpointTensors(single);
    const b = readCheckpointTensors(sharded);
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    const bytes = (t: { file: string; offset: number; byteLength: number }) => fs.readFileSync(t.file).subarray(t.offset, t.offset + t.byteLength);
    for (const [name, t] of a) expect(bytes(b.get(name)!).equals(bytes(t)), name).toBe(true);
  });

  it('writes consistent shards and model.safetensors.index.json', () => {
    const files = fs.readdirSync(sharded).filter((f) => f.endsWith('.safetensors')).sort();
    expect(files).toEqual(['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors']);
    expect(fs.existsSync(path.join(sharded, 'model.safetensors'))).toBe(false);
    const index = JSON.parse(fs.readFileSync(path.join(sharded, 'model.safetensors.index.json'), 'utf8'));
    let total = 0;
    const seen = new Set<string>();
    for (const f of files) {
      const { header } = parseRaw(path.join(sharded, f));
      for (const [name, e] of Object.entries(header)) {
        if (name === '__metadata__') continue;
        expect(index.weight_map[name]).toBe(f);
        expect(seen.has(name)).toBe(false);
        seen.add(name);
        total += e.data_offsets[1] - e.data_offsets[0];
      }
    }
    expect(Object.keys(index.weight_map).length).toBe(seen.size);
    expect(index.metadata.total_size).toBe(total);
  });

  it('re-making into the same directory replaces the old weights', async () => {
    const d = path.join(dir, 'remake');
    await makeModel(d, { ...opts, shards: 2 });
    await makeModel(d, opts);
    expect(fs.readdirSync(d).filter((f) => f.startsWith('model')).sort()).toEqual(['model.safetensors']);
  });

  it('supports tied embeddings, f32/f16 and decoder_sparse_step', async () => {
    const d = path.join(dir, 'tied');
    await makeModel(d, { ...opts, tieWordEmbeddings: true, dtype: 'f16', decoderSparseStep: 2, mlpOnlyLayers: [] });
    const h = readSafetensorsHeader(path.join(d, 'model.safetensors'));
    expect(h.tensors.has('lm_head.weight')).toBe(false);
    expect([...h.tensors.values()].every((t) => t.dtype === 'F16')).toBe(true);
    // step 2: layer 1 is sparse, layers 0 and 2 dense
    expect(h.tensors.has('model.layers.1.mlp.gate.weight')).toBe(true);
    expect(h.tensors.has('model.layers.0.mlp.gate_proj.weight')).toBe(true);
    expect(h.tensors.has('model.layers.2.mlp.gate_proj.weight')).toBe(true);
    const cfg = JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({ tie_word_embeddings: true, torch_dtype: 'float16', decoder_sparse_step: 2 });
  });

  it('writes rope_scaling verbatim', async () => {
    const d = path.join(dir, 'yarn');
    const ropeScaling = { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 32768 };
    await makeModel(d, { ...opts, layers: 1, mlpOnlyLayers: [], ropeScaling, maxPositionEmbeddings: 131072 });
    const cfg = JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8'));
    expect(cfg.rope_scaling).toEqual(ropeScaling);
    expect(cfg.max_position_embeddings).toBe(131072);
  });

  it('rejects impossible shapes with clear errors', async () => {
    expect(() => resolveMakeModelOptions({ heads: 4, kvHeads: 3 })).toThrow(/multiple of kvHeads/);
    expect(() => resolveMakeModelOptions({ experts: 4, topK: 5 })).toThrow(/topK/);
    expect(() => resolveMakeModelOptions({ headDim: 15 })).toThrow(/even/);
    expect(() => resolveMakeModelOptions({ layers: 2, mlpOnlyLayers: [2] })).toThrow(/mlpOnlyLayers/);
    expect(() => resolveMakeModelOptions({ hidden: 0 })).toThrow(/hidden/);
    expect(() => resolveMakeModelOptions({ dtype: 'f8' as never })).toThrow(/dtype/);
    await expect(makeModel(path.join(dir, 'too-many-shards'), { layers: 1, experts: 0, vocab: 10, shards: 100 })).rejects.toThrow(/shards/);
  });

  it('splits shards into non-empty groups of similar size', () => {
    const t = (name: string, n: number) => ({ name, dtype: 'F32' as const, shape: [n] });
    const groups = splitIntoShards([t('a', 100), t('b', 1), t('c', 1), t('d', 1), t('e', 100), t('f', 1)], 3);
    expect(groups.map((g) => g.map((x) => x.name))).toEqual([['a'], ['b', 'c', 'd'], ['e', 'f']]);
    expect(splitIntoShards([t('a', 1), t('b', 1)], 2).map((g) => g.length)).toEqual([1, 1]);
    expect(splitIntoShards([t('a', 1000), t('b', 1), t('c', 1)], 3).map((g) => g.length)).toEqual([1, 1, 1]);
  });
});
