// The GGUF writer and the HF → llama.cpp qwen3moe converter, checked with node-llama-cpp's own GGUF
// parser (pure JS, independent of ours) and by reading tensor bytes back from the file.
import fs from 'node:fs';
import path from 'node:path';
import { readGgufFileInfo, type GgufFileInfo } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToGguf } from '../../src/gguf/convert.ts';
import { GGUFValueType, GgufWriter } from '../../src/gguf/gguf-writer.ts';
import { readCheckpointTensors, readTensorF32 } from '../../src/gguf/safetensors-reader.ts';
import { makeModel } from '../../src/model/make-model.ts';
import { copyModelDir, makeTempDir, removeTempDir, testModel } from '../helpers/model-fixtures.ts';

async function info(file: string): Promise<GgufFileInfo> {
  return readGgufFileInfo(file, { logWarnings: false });
}

/** A tensor's data from the GGUF file, as f32 (F32 and BF16 only). */
function tensorData(file: string, gi: GgufFileInfo, name: string): Float32Array {
  const t = gi.tensorInfo!.find((x) => x.name === name);
  if (!t) throw new Error(`no tensor ${name}`);
  const n = t.dimensions.reduce<number>((a, b) => a * Number(b), 1);
  const eb = t.ggmlType === 0 ? 4 : 2;
  const buf = Buffer.alloc(n * eb);
  const fd = fs.openSync(file, 'r');
  fs.readSync(fd, buf, 0, buf.length, Number(t.fileOffset));
  fs.closeSync(fd);
  if (eb === 4) return new Float32Array(buf.buffer, buf.byteOffset, n).slice();
  const out = new Float32Array(n);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < n; i++) bits[i] = buf.readUInt16LE(2 * i) << 16;
  return out;
}

/** Bitwise equality of float arrays (vitest's deep equality is far too slow for millions of elements). */
function same(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

describe('GgufWriter', () => {
  let dir: string;
  beforeAll(() => {
    dir = makeTempDir('gguf-writer');
  });
  afterAll(() => removeTempDir(dir));

  it('writes metadata of every type and aligned tensors that an independent parser reads back', async () => {
    const w = new GgufWriter();
    w.addString('general.architecture', 'llama');
    w.addUint32('t.u32', 4000000000);
    w.addInt32('t.i32', -7);
    w.addFloat32('t.f32', 0.5);
    w.addBool('t.bool', true);
    w.addString('t.str', 'héllo');
    w.addArray('t.u8', GGUFValueType.UINT8, [1, 255]);
    w.addArray('t.i16', GGUFValueType.INT16, [-300, 300]);
    w.addArray('t.u64', GGUFValueType.UINT64, [2n ** 40n]);
    w.addArray('t.f64', GGUFValueType.FLOAT64, [Math.PI]);
    w.addArray('t.strs', GGUFValueType.STRING, ['a', '', 'ĠĠ', '<|im_end|>']);
    w.addArray('t.i32s', GGUFValueType.INT32, [1, -2, 3]);
    const a = Float32Array.from([1, 2, 3]);
    const b = Float32Array.from({ length: 10 }, (_, i) => i - 4.5);
    w.addTensor({ name: 'a', ne: [3], type: 'F32' }, () => [new Uint8Array(a.buffer)]);
    // Two chunks for one tensor; ne = [5, 2]: two rows of five.
    w.addTensor({ name: 'b', ne: [5, 2], type: 'F32' }, function* () {
      yield new Uint8Array(b.buffer, 0, 20);
      yield new Uint8Array(b.buffer, 20, 20);
    });
    const file = path.join(dir, 'types.gguf');
    await w.write(file);
    const gi = await info(file);
    const md = gi.metadata as unknown as Record<string, Record<string, unknown>>;
    expect(gi.version).toBe(3);
    expect(md.t).toMatchObject({ u32: 4000000000, i32: -7, f32: 0.5, bool: true, str: 'héllo', u8: [1, 255], i16: [-300, 300], f64: [Math.PI], strs: ['a', '', 'ĠĠ', '<|im_end|>'], i32s: [1, -2, 3] });
    expect(BigInt((md.t!.u64 as Array<number | bigint>)[0]!)).toBe(2n ** 40n);
    const ti = gi.tensorInfo!;
    expect(ti.map((t) => [t.name, t.dimensions.map(Number), t.ggmlType])).toEqual([['a', [3], 0], ['b', [5, 2], 0]]);
    expect(Number(ti[0]!.offset)).toBe(0);
    expect(Number(ti[1]!.offset)).toBe(32); // 12 bytes, padded to the 32-byte alignment
    expect(gi.infoEndOffset! % 32).toBe(0);
    expect(tensorData(file, gi, 'a')).toEqual(a);
    expect(tensorData(file, gi, 'b')).toEqual(b);
    expect(fs.statSync(file).size).toBe(gi.infoEndOffset! + 32 + 64);
  });

  it('refuses duplicates and tensors whose bytes do not match their shape', async () => {
    const w = new GgufWriter();
    w.addUint32('k', 1);
    expect(() => w.addUint32('k', 2)).toThrow(/duplicate key/);
    expect(() => w.addUint32('neg', -1)).toThrow(/u32/);
    w.addTensor({ name: 'x', ne: [4], type: 'F32' }, () => [new Uint8Array(12)]);
    expect(() => w.addTensor({ name: 'x', ne: [4], type: 'F32' }, () => [])).toThrow(/duplicate tensor/);
    expect(() => w.addTensor({ name: 'y'.repeat(64), ne: [1], type: 'F32' }, () => [])).toThrow(/63-byte/);
    await expect(w.write(path.join(dir, 'bad.gguf'))).rejects.toThrow(/produced 12 bytes, expected 16/);
  });
});

describe('convertToGguf (HF Qwen3-MoE → llama.cpp qwen3moe)', () => {
  // Layer 1 dense and wider (40) than the experts (16): exercises the dense-as-experts form and padding.
  const opts = { layers: 3, hidden: 32, heads: 4, kvHeads: 2, headDim: 12, experts: 4, topK: 2, moeIntermediate: 16, intermediate: 40, mlpOnlyLayers: [1], seed: 3 };
  let dir: string;
  let modelDir: string;
  let f32File: string;
  let bf16File: string;
  let f32: GgufFileInfo;
  let bf16: GgufFileInfo;

  beforeAll(async () => {
    dir = makeTempDir('convert');
    modelDir = await testModel(opts);
    f32File = path.join(dir, 'f32.gguf');
    bf16File = path.join(dir, 'bf16.gguf');
    await convertToGguf(modelDir, f32File, { weightType: 'f32', name: 'tiny' });
    await convertToGguf(modelDir, bf16File, { weightType: 'bf16', name: 'tiny' });
    f32 = await info(f32File);
    bf16 = await info(bf16File);
  });
  afterAll(() => removeTempDir(dir));

  it('writes llama.cpp qwen3moe hyper-parameters', () => {
    const md = f32.metadata as unknown as Record<string, any>;
    expect(md.general).toMatchObject({ architecture: 'qwen3moe', type: 'model', name: 'tiny', file_type: 0, quantization_version: 2 });
    expect((bf16.metadata as unknown as Record<string, any>).general.file_type).toBe(32);
    expect(md.qwen3moe).toEqual({
      block_count: 3,
      context_length: 40960,
      embedding_length: 32,
      feed_forward_length: 40,
      attention: { head_count: 4, head_count_kv: 2, layer_norm_rms_epsilon: Math.fround(1e-6), key_length: 12, value_length: 12 },
      rope: { freq_base: 1e6 },
      expert_count: 4,
      expert_used_count: 2,
      expert_feed_forward_length: 40,
    });
  });

  it('writes the Qwen3 tokenizer as llama.cpp does (gpt2/qwen2, padded to vocab_size)', () => {
    const tok = (f32.metadata as unknown as Record<string, any>).tokenizer;
    expect(tok.ggml.model).toBe('gpt2');
    expect(tok.ggml.pre).toBe('qwen2');
    expect(tok.ggml.tokens.length).toBe(151936);
    expect(tok.ggml.token_type.length).toBe(151936);
    expect(tok.ggml.tokens.slice(151643, 151646)).toEqual(['<|endoftext|>', '<|im_start|>', '<|im_end|>']);
    expect(tok.ggml.tokens[151667]).toBe('<think>');
    expect(tok.ggml.tokens[151669]).toBe('[PAD151669]');
    expect(tok.ggml.tokens[151935]).toBe('[PAD151935]');
    expect(tok.ggml.tokens[220]).toBe('Ġ');
    // NORMAL, CONTROL (special), USER_DEFINED (<think>), UNUSED (padding)
    expect([tok.ggml.token_type[0], tok.ggml.token_type[151645], tok.ggml.token_type[151667], tok.ggml.token_type[151700]]).toEqual([1, 3, 4, 5]);
    expect(tok.ggml.merges.length).toBe(151387);
    expect(tok.ggml.merges[0]).toBe('Ġ Ġ');
    expect([tok.ggml.bos_token_id, tok.ggml.eos_token_id, tok.ggml.padding_token_id, tok.ggml.add_bos_token]).toEqual([151643, 151645, 151643, false]);
    expect(tok.chat_template).toContain('<|im_start|>');
  });

  it('names and shapes every tensor as llama.cpp qwen3moe expects (ne = reversed HF shape)', () => {
    const F = 40;
    const want: Record<string, number[]> = { 'token_embd.weight': [32, 151936], 'output_norm.weight': [32], 'output.weight': [32, 151936] };
    for (let l = 0; l < 3; l++) {
      Object.assign(want, {
        [`blk.${l}.attn_norm.weight`]: [32],
        [`blk.${l}.attn_q.weight`]: [32, 48],
        [`blk.${l}.attn_k.weight`]: [32, 24],
        [`blk.${l}.attn_v.weight`]: [32, 24],
        [`blk.${l}.attn_output.weight`]: [48, 32],
        [`blk.${l}.attn_q_norm.weight`]: [12],
        [`blk.${l}.attn_k_norm.weight`]: [12],
        [`blk.${l}.ffn_norm.weight`]: [32],
        [`blk.${l}.ffn_gate_inp.weight`]: [32, 4],
        [`blk.${l}.ffn_gate_exps.weight`]: [32, F, 4],
        [`blk.${l}.ffn_up_exps.weight`]: [32, F, 4],
        [`blk.${l}.ffn_down_exps.weight`]: [F, 32, 4],
      });
    }
    const got = Object.fromEntries(f32.tensorInfo!.map((t) => [t.name, t.dimensions.map(Number)]));
    expect(got).toEqual(want);
    expect(f32.tensorInfo!.every((t) => t.ggmlType === 0)).toBe(true);
    for (const t of bf16.tensorInfo!) {
      const keepF32 = t.dimensions.length === 1 || t.name.endsWith('ffn_gate_inp.weight');
      expect([t.name, t.ggmlType]).toEqual([t.name, keepF32 ? 0 : 30]);
    }
    for (const t of f32.tensorInfo!) expect(Number(t.offset) % 32).toBe(0);
  });

  it('copies the weights exactly (bf16 → f32 is exact), experts stacked and zero-padded', () => {
    const src = readCheckpointTensors(modelDir);
    const hf = (name: string) => readTensorF32(src.get(name)!);
    const g = (name: string) => tensorData(f32File, f32, name);
    expect(same(g('token_embd.weight'), hf('model.embed_tokens.weight'))).toBe(true);
    expect(same(g('output.weight'), hf('lm_head.weight'))).toBe(true);
    expect(same(g('blk.2.attn_k.weight'), hf('model.layers.2.self_attn.k_proj.weight'))).toBe(true);
    expect(same(g('blk.2.attn_k.weight'), hf('model.layers.1.self_attn.k_proj.weight'))).toBe(false);
    expect(same(g('blk.0.attn_q_norm.weight'), hf('model.layers.0.self_attn.q_norm.weight'))).toBe(true);
    expect(same(g('blk.0.ffn_gate_inp.weight'), hf('model.layers.0.mlp.gate.weight'))).toBe(true);
    const H = 32, F = 40, I = 16;
    const gate = g('blk.0.ffn_gate_exps.weight');
    const down = g('blk.0.ffn_down_exps.weight');
    for (let e = 0; e < 4; e++) {
      const eg = gate.subarray(e * F * H, (e + 1) * F * H);
      expect(same(eg.subarray(0, I * H), hf(`model.layers.0.mlp.experts.${e}.gate_proj.weight`))).toBe(true);
      expect(eg.subarray(I * H).every((x) => x === 0)).toBe(true);
      const ed = down.subarray(e * H * F, (e + 1) * H * F);
      const hd = hf(`model.layers.0.mlp.experts.${e}.down_proj.weight`);
      for (let r = 0; r < H; r++) {
        expect(same(ed.subarray(r * F, r * F + I), hd.subarray(r * I, (r + 1) * I))).toBe(true);
        expect(ed.subarray(r * F + I, (r + 1) * F).every((x) => x === 0)).toBe(true);
      }
    }
    // The dense layer: every expert is the MLP, the router is zero.
    expect(g('blk.1.ffn_gate_inp.weight').every((x) => x === 0)).toBe(true);
    for (const [gg, hh] of [['gate', 'gate_proj'], ['up', 'up_proj'], ['down', 'down_proj']] as const) {
      const stacked = g(`blk.1.ffn_${gg}_exps.weight`);
      const mlp = hf(`model.layers.1.mlp.${hh}.weight`);
      for (let e = 0; e < 4; e++) expect(same(stacked.subarray(e * mlp.length, (e + 1) * mlp.length), mlp)).toBe(true);
    }
    // BF16 output keeps the checkpoint's bf16 values bit for bit.
    expect(same(tensorData(bf16File, bf16, 'blk.2.ffn_up_exps.weight'), g('blk.2.ffn_up_exps.weight'))).toBe(true);
  });

  it('converts a sharded checkpoint to the same file', async () => {
    const sharded = path.join(dir, 'sharded');
    await makeModel(sharded, { ...opts, shards: 4 });
    const out = path.join(dir, 'sharded.gguf');
    await convertToGguf(sharded, out, { weightType: 'f32', name: 'tiny' });
    expect(fs.readFileSync(out).equals(fs.readFileSync(f32File))).toBe(true);
  });

  it('handles tied embeddings, an all-dense model and yarn', async () => {
    const m = path.join(dir, 'tied');
    await makeModel(m, { layers: 1, hidden: 16, heads: 2, kvHeads: 1, headDim: 8, experts: 0, intermediate: 24, tieWordEmbeddings: true, ropeScaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 8192 } });
    const out = path.join(dir, 'tied.gguf');
    await convertToGguf(m, out);
    const gi = await info(out);
    expect(gi.tensorInfo!.some((t) => t.name === 'output.weight')).toBe(false);
    const md = gi.metadata as unknown as Record<string, any>;
    expect(md.qwen3moe.expert_count).toBe(1);
    expect(md.qwen3moe.expert_used_count).toBe(1);
    expect(md.qwen3moe.expert_feed_forward_length).toBe(24);
    expect(md.qwen3moe.rope.scaling).toEqual({ type: 'yarn', factor: 4, original_context_length: 8192 });
  });

  it('fails with precise errors on what llama.cpp cannot express or the checkpoint lacks', async () => {
    const edit = (d: string, patch: Record<string, unknown>) => {
      const f = path.join(d, 'config.json');
      fs.writeFileSync(f, JSON.stringify({ ...JSON.parse(fs.readFileSync(f, 'utf8')), ...patch }));
    };
    const d = copyModelDir(modelDir, 'convert-bad');
    try {
      const out = path.join(d, 'x.gguf');
      edit(d, { norm_topk_prob: false });
      await expect(convertToGguf(d, out)).rejects.toThrow(/norm_topk_prob=false/);
      edit(d, { norm_topk_prob: true, rope_scaling: { rope_type: 'yarn', factor: 4, beta_fast: 16 } });
      await expect(convertToGguf(d, out)).rejects.toThrow(/beta_fast/);
      edit(d, { rope_scaling: { rope_type: 'yarn', factor: 4, attention_factor: 0.5 } });
      await expect(convertToGguf(d, out)).rejects.toThrow(/attention_factor/);
      edit(d, { rope_scaling: null, mlp_only_layers: [] });
      await expect(convertToGguf(d, out)).rejects.toThrow(/tensor model\.layers\.1\.mlp\.gate\.weight is missing/);
      edit(d, { mlp_only_layers: [1], moe_intermediate_size: 17 });
      await expect(convertToGguf(d, out)).rejects.toThrow(/model\.safetensors: tensor model\.layers\.0\.mlp\.experts\.0\.gate_proj\.weight has shape \[16,32\], expected \[17,32\]/);
      edit(d, { architectures: ['LlamaForCausalLM'] });
      await expect(convertToGguf(d, out)).rejects.toThrow(/not Qwen3MoeForCausalLM/);
    } finally {
      removeTempDir(d);
    }
  });
});
