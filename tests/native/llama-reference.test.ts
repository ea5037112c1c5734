// The external reference itself: llama.cpp (node-llama-cpp's prebuilt CPU binaries) must load our
// converted GGUFs and give well-formed, deterministic teacher-forced distributions; and the converter's
// dense-layer form (every expert a copy of the MLP, zero router) must be exactly a dense MLP in
// llama.cpp's own arithmetic.
import fs from 'node:fs';
import path from 'node:path';
import type { LlamaModel } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToGguf } from '../../src/gguf/convert.ts';
import { readCheckpointTensors, type StTensor } from '../../src/gguf/safetensors-reader.ts';
import { SafetensorsWriter, type TensorSpec } from '../../src/model/safetensors-writer.ts';
import { llamaTeacherForced, loadReferenceModel, type TopLogprob } from '../helpers/llama-reference.ts';
import { makeTempDir, removeTempDir, testGguf } from '../helpers/model-fixtures.ts';

// "<|im_start|>user\nHello, world! What is the capital of France?<|im_end|>\n<|im_start|>assistant\n" and more.
const PROMPT = [151644, 872, 198, 9707, 11, 1879, 0, 3555, 374, 279, 6722, 315, 9625, 30, 151645, 198, 151644, 77091, 198,
  151667, 198, 785, 6722, 315, 9625, 374, 12095, 13, 151668, 271, 785, 6722, 374, 12095, 13, 151645, 198, 42, 1000, 151935];

function maxDiff(a: TopLogprob[][], b: TopLogprob[][]): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) {
    for (let j = 0; j < a[i]!.length; j++) {
      if (a[i]![j]!.token !== b[i]![j]!.token) return Infinity;
      d = Math.max(d, Math.abs(a[i]![j]!.logprob - b[i]![j]!.logprob));
    }
  }
  return d;
}

describe('llama.cpp reference on converted GGUFs', () => {
  // head_dim 24 (not a power of two), 2 KV heads for 4 query heads, top-2 of 8 experts, layer 1 dense.
  const opts = { layers: 3, hidden: 64, heads: 4, kvHeads: 2, headDim: 24, experts: 8, topK: 2, moeIntermediate: 32, intermediate: 32, mlpOnlyLayers: [1], seed: 11 };
  let modelDir: string;
  let model: LlamaModel;
  let tmp: string;

  beforeAll(async () => {
    tmp = makeTempDir('llama-ref');
    const g = await testGguf(opts);
    modelDir = g.modelDir;
    model = await loadReferenceModel(g.ggufPath);
  });
  afterAll(async () => {
    await model?.dispose();
    if (tmp) removeTempDir(tmp);
  });

  it('returns finite, normalised full-vocabulary distributions', async () => {
    const r = await llamaTeacherForced(model, PROMPT.slice(0, 6), 5, { exact: true });
    expect(r.vocabSize).toBe(151936);
    expect(r.full).toHaveLength(6);
    for (const lp of r.full!) {
      expect(lp.length).toBe(151936);
      let max = -Infinity;
      let sum = 0;
      for (const v of lp) {
        if (!Number.isFinite(v)) throw new Error(`non-finite logprob ${v}`);
        max = Math.max(max, v);
        sum += Math.exp(v);
      }
      expect(Math.abs(sum - 1)).toBeLessThan(1e-9);
      expect(max).toBeLessThan(0);
    }
    for (const top of r.top) {
      expect(top).toHaveLength(5);
      for (let j = 1; j < 5; j++) expect(top[j]!.logprob).toBeLessThanOrEqual(top[j - 1]!.logprob);
    }
    // The context matters: not every position predicts the same token.
    expect(new Set(r.top.map((t) => t[0]!.token)).size).toBeGreaterThan(1);
  });

  it('fast mode (top-N + total logit weight) agrees with the float64 log-softmax', async () => {
    const tokens = PROMPT.slice(0, 8);
    const exact = await llamaTeacherForced(model, tokens, 5, { exact: true });
    const fast = await llamaTeacherForced(model, tokens, 5);
    expect(maxDiff(fast.top, exact.top)).toBeLessThan(1e-3);
  });

  it('is deterministic and prefix-consistent (causal, batch-size independent)', async () => {
    const a = await llamaTeacherForced(model, PROMPT, 5);
    const b = await llamaTeacherForced(model, PROMPT, 5);
    expect(maxDiff(a.top, b.top)).toBe(0);
    const prefix = await llamaTeacherForced(model, PROMPT.slice(0, 13), 5);
    expect(maxDiff(prefix.top, a.top.slice(0, 13))).toBeLessThan(1e-4);
  });

  it('reads yarn rope scaling from the converted metadata', async () => {
    const yarn = await testGguf({ ...opts, ropeScaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 256 } });
    const tokens = PROMPT.slice(0, 24);
    const plain = await llamaTeacherForced(model, tokens, 5);
    const scaled = await llamaTeacherForced(yarn.ggufPath, tokens, 5);
    // Same weights (the seed decides them); position 0 has no rotation at all, later ones differ.
    expect(maxDiff(plain.top.slice(0, 1), scaled.top.slice(0, 1))).toBeLessThan(1e-4);
    expect(maxDiff(plain.top, scaled.top)).toBeGreaterThan(1e-3);
  });

  /**
   * Rewrites the checkpoint so that layer 1 is a real MoE layer (a random router, layer 0's) whose
   * experts are all copies of layer 1's dense MLP, except expert `odd` (if given), which is replaced by
   * layer 0's expert 0.
   */
  async function denseAsMoeCheckpoint(out: string, odd?: number): Promise<void> {
    fs.mkdirSync(out, { recursive: true });
    const cfg = JSON.parse(fs.readFileSync(path.join(modelDir, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(out, 'config.json'), JSON.stringify({ ...cfg, mlp_only_layers: [] }));
    for (const f of ['generation_config.json', 'tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(modelDir, f), path.join(out, f));
    const src = readCheckpointTensors(modelDir);
    const plan: Array<{ spec: TensorSpec; from: StTensor }> = [];
    for (const [name, t] of src) {
      if (name.startsWith('model.layers.1.mlp.')) continue;
      plan.push({ spec: { name, dtype: t.dtype, shape: t.shape }, from: t });
    }
    const router = src.get('model.layers.0.mlp.gate.weight')!;
    plan.push({ spec: { name: 'model.layers.1.mlp.gate.weight', dtype: router.dtype, shape: router.shape }, from: router });
    for (let e = 0; e < opts.experts; e++) {
      for (const p of ['gate_proj', 'up_proj', 'down_proj']) {
        const from = e === odd ? src.get(`model.layers.0.mlp.experts.0.${p}.weight`)! : src.get(`model.layers.1.mlp.${p}.weight`)!;
        plan.push({ spec: { name: `model.layers.1.mlp.experts.${e}.${p}.weight`, dtype: from.dtype, shape: from.shape }, from });
      }
    }
    const w = await SafetensorsWriter.create(path.join(out, 'model.safetensors'), plan.map((p) => p.spec));
    for (const { spec, from } of plan) {
      const fd = fs.openSync(from.file, 'r');
      const buf = Buffer.alloc(from.byteLength);
      fs.readSync(fd, buf, 0, buf.length, from.offset);
      fs.closeSync(fd);
      await w.write(spec.name, buf);
    }
    await w.close();
  }

  it('expresses a dense layer exactly (zero router, every expert the MLP), and the check is sensitive', async () => {
    const same = path.join(tmp, 'moe-same');
    const odd = path.join(tmp, 'moe-odd');
    await denseAsMoeCheckpoint(same);
    await denseAsMoeCheckpoint(odd, 3);
    await convertToGguf(same, `${same}.gguf`);
    await convertToGguf(odd, `${odd}.gguf`);
    const tokens = PROMPT.slice(0, 24);
    const dense = await llamaTeacherForced(model, tokens, 5);
    const moe = await llamaTeacherForced(`${same}.gguf`, tokens, 5);
    const moeOdd = await llamaTeacherForced(`${odd}.gguf`, tokens, 5);
    // Only the renormalised weights' rounding differs (they sum to 1 within an ulp or two).
    expect(maxDiff(dense.top, moe.top)).toBeLessThan(1e-4);
    // One different expert, picked by the router for some tokens: visibly different distributions.
    expect(maxDiff(dense.top, moeOdd.top)).toBeGreaterThan(1e-2);
  });
});
