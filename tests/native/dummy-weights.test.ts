// loadFormat 'dummy' (vLLM's --load-format dummy): the config's shapes filled with random bf16 weights from a
// pure function of (tensor, element) (native/core/dummy-weights.h), so a model runs from its config.json alone and
// every backend generates the same weights. Here, on the CPU: the load needs no files, the weights are the same on
// every load and every kernel set, tied embeddings are generated once, and the model's output is a real one.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModelConfig, type ModelConfig } from '../../src/model/config.ts';
import type { MakeModelOptions } from '../../src/model/make-model.ts';
import type { NativeModel } from '../../src/native/addon-types.ts';
import { loadAddon } from '../../src/native/load-addon.ts';
import { testModel } from '../helpers/model-fixtures.ts';
import { promptTops, randomTokens, runStep } from '../helpers/native-steps.ts';

const OPTS = { vocab: 2048, hidden: 64, layers: 2, experts: 8, topK: 2, decoderSparseStep: 2 } satisfies MakeModelOptions;
const models: NativeModel[] = [];
let cfg: ModelConfig;

beforeAll(async () => {
  cfg = loadModelConfig(await testModel(OPTS), { loadFormat: 'dummy' });
});
afterAll(() => models.forEach((m) => m.close()));

async function load(o: { cpuKernels?: string; tie?: boolean; mlock?: boolean; kvCacheDtype?: 'bf16' | 'f32' } = {}): Promise<NativeModel> {
  const m = await loadAddon().loadModel({
    files: [], config: { ...cfg.native, tieWordEmbeddings: o.tie ?? false }, loadFormat: 'dummy', threads: 2, kvBlocks: 8, blockSize: 16,
    cpuKernels: o.cpuKernels, mlock: o.mlock, kvCacheDtype: o.kvCacheDtype,
  });
  models.push(m);
  return m;
}

async function logprobs(m: NativeModel, tokens: number[]) {
  const { batch, res } = await runStep(m, [{ tokens, start: 0, blocks: [0, 1, 2], promptLogprobs: 5, targets: [...tokens.slice(1), -1] }]);
  return { tops: promptTops(batch, res, 0), targets: Array.from(res.targetLogprobs) };
}

/** Parameters of the config's matrices (bf16) and norms (f32), as the native side counts weightBytes. */
function expectedBytes(tie: boolean): number {
  const c = cfg.native;
  const H = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  let params = c.vocabSize * H * (tie ? 1 : 2);
  c.moeLayers.forEach((moe) => {
    params += 2 * q * H + 2 * kv * H;
    params += moe ? c.numExperts * H + c.numExperts * 3 * c.moeIntermediateSize * H : 3 * c.intermediateSize * H;
  });
  return params * 2 + (H * (1 + 2 * c.numLayers) + 2 * c.headDim * c.numLayers) * 4;
}

describe("loadFormat 'dummy' on the CPU", () => {
  const tokens = randomTokens(40, 3, OPTS.vocab);

  it('needs no files, and gives finite, normalised, non-uniform distributions', async () => {
    const m = await load();
    expect(m.weightBytes).toBe(expectedBytes(false));
    const { tops, targets } = await logprobs(m, tokens);
    for (const t of tops) {
      expect(t.logprobs.every((x) => Number.isFinite(x) && x <= 0)).toBe(true);
      // A uniform distribution over 2048 tokens would put every logprob at -7.62.
      expect(t.logprobs[0]! - t.logprobs[4]!).toBeGreaterThan(0.01);
    }
    expect(targets.slice(0, -1).every(Number.isFinite)).toBe(true);
  });

  it('is the same model on every load and every kernel set (the weights are a function of the shapes)', async () => {
    const a = await logprobs(await load(), tokens);
    const b = await logprobs(await load(), tokens);
    expect(b).toEqual(a);
    const scalar = await logprobs(await load({ cpuKernels: 'scalar' }), tokens);
    scalar.tops.forEach((t, i) => {
      expect(t.ids[0]).toBe(a.tops[i]!.ids[0]);
      t.logprobs.forEach((lp, k) => expect(Math.abs(lp - a.tops[i]!.logprobs[k]!)).toBeLessThan(1e-4));
    });
  });

  it('generates a tied embedding table once, for both ends of the model', async () => {
    const m = await load({ tie: true });
    expect(m.weightBytes).toBe(expectedBytes(true));
    const tied = await logprobs(m, tokens);
    const untied = await logprobs(await load(), tokens);
    expect(tied.tops.every((t) => t.logprobs.every(Number.isFinite))).toBe(true);
    // Tied, lm_head is the embedding table (scale 1), not the separately generated head: different logits.
    expect(tied.tops[0]!.logprobs).not.toEqual(untied.tops[0]!.logprobs);
  });

  it('locks the generated weights with mlock (or says why not)', async () => {
    const m = await load({ mlock: true });
    expect(m.weightsLocked || typeof m.lockError === 'string').toBe(true);
    if (!m.weightsLocked) expect(m.lockError).toMatch(/mlock of the generated weights failed/);
  });

  it('keeps the CPU KV cache in f32 by default, bf16 on request (half the bytes per token); CUDA refuses f32 naming the flag', async () => {
    const { numLayers, numKvHeads, headDim } = cfg.native;
    expect((await load()).kvBytesPerToken).toBe(numLayers * 2 * numKvHeads * headDim * 4);
    expect((await load({ kvCacheDtype: 'bf16' })).kvBytesPerToken).toBe(numLayers * 2 * numKvHeads * headDim * 2);
    const base = { files: [], config: cfg.native, loadFormat: 'dummy' as const, threads: 1, kvBlocks: 4, blockSize: 16 };
    await expect(loadAddon().loadModel({ ...base, kvCacheDtype: 'f16' as 'f32' })).rejects.toThrow("options.kvCacheDtype must be 'bf16' or 'f32'");
    await expect(loadAddon().loadModel({ ...base, backend: 'cuda', kvCacheDtype: 'f32' })).rejects.toThrow(/CUDA backend keeps its KV cache in bf16 only \(--kv-cache-dtype/);
  });

  it('refuses an unknown load format', async () => {
    await expect(loadAddon().loadModel({ files: [], config: cfg.native, loadFormat: 'pt' as 'dummy', threads: 1, kvBlocks: 4, blockSize: 16 }))
      .rejects.toThrow("options.loadFormat must be 'safetensors' or 'dummy'");
  });
});
