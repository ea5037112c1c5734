// KV cache sizing without the addon: bytes per token, the default from free memory, explicit sizes,
// the one-sequence-must-fit rule, and the model's context length as vLLM derives it.
import { describe, expect, it } from 'vitest';
import {
  checkKvBudget,
  checkKvPool,
  defaultKvCacheBytes,
  DEFAULT_GPU_MEMORY_UTILIZATION,
  derivedMaxModelLen,
  describeKvPlan,
  estimateKvBytesPerToken,
  estimateWeightBytes,
  KV_DEFAULT_MAX_TOKENS,
  kvBudget,
  kvLoadOptions,
  planKvCache,
  type KvBudget,
} from '../../src/cli/kv-plan.ts';
import { cudaUsable, resolveDevice } from '../../src/cli/device.ts';
import { resolveDtype, resolveKvCacheDtype } from '../../src/cli/precision.ts';
import type { ModelConfig } from '../../src/model/config.ts';
import type { BackendInfo, NativeModelConfig } from '../../src/native/addon-types.ts';
import { planTensors, resolveMakeModelOptions, type MakeModelOptions } from '../../src/model/make-model.ts';
import { numElements } from '../../src/model/safetensors-writer.ts';

const GiB = 1024 ** 3;

function config(native: Partial<ModelConfig['native']>, maxPositionEmbeddings = 131072, raw: Record<string, unknown> = {}): ModelConfig {
  return { native: { numLayers: 48, numKvHeads: 4, headDim: 128, ...native }, maxPositionEmbeddings, raw } as unknown as ModelConfig;
}

/** The real Tongyi DeepResearch 30B-A3B shape with f32 KV (--kv-cache-dtype f32, the CPU's exact mode). */
const REAL = estimateKvBytesPerToken(config({}), 'f32');

describe('KV cache planning', () => {
  it('estimates f32 K and V over every layer: 192 KiB per token for the real model', () => {
    expect(REAL).toBe(48 * 2 * 4 * 128 * 4);
    expect(REAL).toBe(192 * 1024);
  });

  it('an explicit size buys floor(bytes / bytes-per-token / block) blocks; 128K tokens of the real model need 24 GiB', () => {
    const plan = planKvCache({ bytesPerToken: REAL, blockSize: 16, maxModelLen: 131072, kvCacheGiB: 24, freeBytes: 0, weightBytes: 0 });
    expect(plan).toMatchObject({ blocks: 8192, tokens: 131072, bytes: 24 * GiB, source: '--kv-cache-memory' });
    expect(describeKvPlan(plan, 131072)).toBe(
      'KV cache: 24.00 GiB (--kv-cache-memory), 8192 blocks of 16 tokens, 131072 tokens (196608 bytes per token); ' +
        'longest context that fits: 131072 tokens; max-model-len 131072: 1 such sequence at once',
    );
    expect(() => planKvCache({ bytesPerToken: REAL, blockSize: 16, maxModelLen: 131072, kvCacheGiB: 23.9, freeBytes: 0, weightBytes: 0 })).toThrow(
      /the KV cache \(23\.9 GiB\) holds 130512 tokens but max-model-len is 131072 \(needs 24\.00 GiB\): pass --kv-cache-memory 24 or a smaller --max-model-len/,
    );
  });

  it('the default takes half the free memory, leaves the weights room, and stops where more would idle', () => {
    // Plenty of memory, small model: capped at KV_DEFAULT_MAX_TOKENS tokens.
    const small = defaultKvCacheBytes({ bytesPerToken: 512, maxModelLen: 4096, freeBytes: 20 * GiB, weightBytes: 1e6 });
    expect(small.bytes).toBe(KV_DEFAULT_MAX_TOKENS * 512);
    // Half of 80 GiB free, the weights small: 40 GiB (under the cap: 256K tokens of 192 KiB, 48 GiB).
    const half = defaultKvCacheBytes({ bytesPerToken: REAL, maxModelLen: 131072, freeBytes: 80 * GiB, weightBytes: 10 * GiB });
    expect(half.bytes).toBe(40 * GiB);
    expect(half.source).toBe('default: 50% of 80.00 GiB free');
    expect(defaultKvCacheBytes({ bytesPerToken: REAL, maxModelLen: 131072, freeBytes: 200 * GiB, weightBytes: 10 * GiB }).bytes).toBe(48 * GiB);
    // 61 GiB of weights in 100 GiB free: 90 - 61 = 29 GiB.
    const fit = defaultKvCacheBytes({ bytesPerToken: REAL, maxModelLen: 131072, freeBytes: 100 * GiB, weightBytes: 61 * GiB });
    expect(fit.bytes).toBeCloseTo(29 * GiB, 0);
    // Not enough room for the weights at all: nothing, and planning says what to change.
    expect(defaultKvCacheBytes({ bytesPerToken: REAL, maxModelLen: 131072, freeBytes: 20 * GiB, weightBytes: 61 * GiB }).bytes).toBe(0);
    expect(() => planKvCache({ bytesPerToken: REAL, blockSize: 16, maxModelLen: 32768, freeBytes: 20 * GiB, weightBytes: 61 * GiB })).toThrow(
      /the default KV cache \(0\.00 GiB, 90% of 20\.00 GiB free less 61\.00 GiB of weights\) holds 0 tokens but max-model-len is 32768.*--kv-cache-memory 6 or a smaller --max-model-len/,
    );
  });

  it('rejects nonsense sizes', () => {
    const base = { bytesPerToken: 512, blockSize: 16, maxModelLen: 64, freeBytes: GiB, weightBytes: 0 };
    expect(() => planKvCache({ ...base, kvCacheGiB: 0 })).toThrow(/positive number of GiB/);
    expect(() => planKvCache({ ...base, kvCacheGiB: NaN })).toThrow(/positive number of GiB/);
    expect(() => planKvCache({ ...base, blockSize: 0 })).toThrow(/blockSize must be a positive integer/);
  });

  it("derives the context length as vLLM does: yarn's original length times its factor", () => {
    expect(derivedMaxModelLen(config({}, 40960))).toBe(40960);
    const yarn = { rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 32768 } };
    expect(derivedMaxModelLen(config({}, 40960, yarn))).toBe(131072);
    expect(derivedMaxModelLen(config({}, 2048, { rope_scaling: { type: 'linear', factor: 2 } }))).toBe(4096);
    expect(derivedMaxModelLen(config({}, 2048, { rope_scaling: null }))).toBe(2048);
  });
});

describe('KV sizing by backend: a budget before the load, the native pool checked after it', () => {
  const BF16 = estimateKvBytesPerToken(config({}), 'bf16');
  const cpuBase = { backend: 'cpu' as const, bytesPerToken: REAL, maxModelLen: 131072, freeBytes: 80 * GiB, weightBytes: 10 * GiB };
  const cudaBase = { ...cpuBase, backend: 'cuda' as const, bytesPerToken: BF16 };

  it('bf16 KV (--kv-cache-dtype bf16, CUDA\'s default): half the f32 bytes, 96 KiB per token for the real model', () => {
    expect(BF16).toBe(96 * 1024);
    expect(estimateKvBytesPerToken(config({}), 'bf16')).toBe(BF16);
    expect(estimateKvBytesPerToken(config({}), 'f32')).toBe(REAL);
    expect(REAL).toBe(2 * BF16);
  });

  it("--dtype: 'auto' is bfloat16 unless the checkpoint is float32; a named one wins", () => {
    expect(resolveDtype(undefined, 'bf16')).toBe('bfloat16');
    expect(resolveDtype('auto', 'f16')).toBe('bfloat16');
    expect(resolveDtype('auto', 'f32')).toBe('float32');
    expect(resolveDtype('float32', 'bf16')).toBe('float32');
    expect(resolveDtype('bfloat16', 'f32')).toBe('bfloat16');
  });

  it("--kv-cache-dtype: 'auto' follows --dtype on the CPU and is bf16 on CUDA; f32 is the CPU's only, refused on CUDA naming the flag", () => {
    expect(resolveKvCacheDtype(undefined, 'cpu', 'bfloat16')).toBe('bf16');
    expect(resolveKvCacheDtype('auto', 'cpu', 'bfloat16')).toBe('bf16');
    expect(resolveKvCacheDtype('auto', 'cpu', 'float32')).toBe('f32');
    expect(resolveKvCacheDtype('bf16', 'cpu', 'float32')).toBe('bf16');
    expect(resolveKvCacheDtype('f32', 'cpu', 'bfloat16')).toBe('f32');
    expect(resolveKvCacheDtype('auto', 'cuda', 'float32')).toBe('bf16');
    expect(resolveKvCacheDtype('bf16', 'cuda', 'bfloat16')).toBe('bf16');
    expect(() => resolveKvCacheDtype('f32', 'cuda', 'float32')).toThrow(/--kv-cache-dtype f32 is for the CPU backend/);
  });

  it('the start-up line names the dtype beside the bytes per token', () => {
    const plan = checkKvPool({ blocks: 8192, blockSize: 16, bytesPerToken: BF16, maxModelLen: 131072, budget: kvBudget({ ...cpuBase, kvCacheGiB: 12 }) });
    expect(describeKvPlan(plan, 131072, 'bf16')).toMatch(/^KV cache: 12\.00 GiB \(--kv-cache-memory\), 8192 blocks of 16 tokens, 131072 tokens \(bf16, 98304 bytes per token\);/);
  });

  it('--kv-cache-memory is a byte budget on either backend; without it the CPU takes its default from free memory, CUDA a share of the device', () => {
    for (const base of [cpuBase, cudaBase]) {
      const b = kvBudget({ ...base, kvCacheGiB: 12 });
      expect(b).toMatchObject({ kind: 'bytes', bytes: 12 * GiB, explicit: true, source: '--kv-cache-memory' });
      expect(kvLoadOptions(b)).toEqual({ kvCacheBytes: 12 * GiB });
      // --gpu-memory-utilization does not size the pool next to --kv-cache-memory
      expect(kvLoadOptions(kvBudget({ ...base, kvCacheGiB: 12, gpuMemoryUtilization: 0.5 }))).toEqual({ kvCacheBytes: 12 * GiB });
    }
    const cpu = kvBudget(cpuBase);
    expect(cpu).toMatchObject({ kind: 'bytes', bytes: 40 * GiB, explicit: false, source: 'default: 50% of 80.00 GiB free' });
    expect(kvLoadOptions(cpu)).toEqual({ kvCacheBytes: 40 * GiB });
    // The CPU ignores --gpu-memory-utilization.
    expect(kvBudget({ ...cpuBase, gpuMemoryUtilization: 0.5 })).toEqual(cpu);
    const cuda = kvBudget(cudaBase);
    expect(cuda).toMatchObject({ kind: 'share', gpuMemoryUtilization: DEFAULT_GPU_MEMORY_UTILIZATION, explicit: false });
    expect(DEFAULT_GPU_MEMORY_UTILIZATION).toBe(0.9);
    expect(kvLoadOptions(cuda)).toEqual({ gpuMemoryUtilization: 0.9 });
    expect(kvLoadOptions(kvBudget({ ...cudaBase, gpuMemoryUtilization: 0.5 }))).toEqual({ gpuMemoryUtilization: 0.5 });
    expect(kvBudget({ ...cudaBase, gpuMemoryUtilization: 1 }).source).toBe('--gpu-memory-utilization 1');
    // Budgets in bytes are whole bytes (LoadOptions.kvCacheBytes).
    expect(Number.isInteger((kvBudget({ ...cpuBase, kvCacheGiB: 0.1 }) as { bytes: number }).bytes)).toBe(true);
  });

  it('--gpu-memory-utilization must lie in (0, 1]; --kv-cache-memory must be positive', () => {
    for (const v of [0, -0.1, 1.01, NaN, Infinity]) {
      expect(() => kvBudget({ ...cudaBase, gpuMemoryUtilization: v })).toThrow(/--gpu-memory-utilization must be a number in \(0, 1\]/);
    }
    for (const base of [cpuBase, cudaBase]) expect(() => kvBudget({ ...base, kvCacheGiB: 0 })).toThrow(/positive number of GiB/);
  });

  it("a byte budget is checked before the load at the backend's estimate, with planKvCache's message", () => {
    const b = kvBudget({ ...cudaBase, kvCacheGiB: 11.9 });
    if (b.kind !== 'bytes') throw new Error('expected bytes');
    expect(() => checkKvBudget(b, { bytesPerToken: BF16, blockSize: 16, maxModelLen: 131072 })).toThrow(
      /the KV cache \(11\.9 GiB\) holds 129968 tokens but max-model-len is 131072 \(needs 12\.00 GiB\): pass --kv-cache-memory 12 or a smaller --max-model-len/,
    );
    // The same 11.9 GiB hold 128K tokens... of neither f32 nor bf16 KV; 12 GiB hold it in bf16 only.
    const twelve = kvBudget({ ...cudaBase, kvCacheGiB: 12 }) as KvBudget & { kind: 'bytes' };
    expect(checkKvBudget(twelve, { bytesPerToken: BF16, blockSize: 16, maxModelLen: 131072 })).toMatchObject({ blocks: 8192, tokens: 131072 });
    expect(() => checkKvBudget(twelve, { bytesPerToken: REAL, blockSize: 16, maxModelLen: 131072 })).toThrow(/--kv-cache-memory 24 /);
  });

  it("after the load the pool is checked with the backend's own figures (blocks, bytes per token), whatever was estimated", () => {
    const bytes = kvBudget({ ...cpuBase, kvCacheGiB: 24 });
    // The backend made 8192 blocks of 16 tokens at 192 KiB: one 128K sequence fits.
    const plan = checkKvPool({ blocks: 8192, blockSize: 16, bytesPerToken: REAL, maxModelLen: 131072, budget: bytes });
    expect(plan).toEqual({ blocks: 8192, blockSize: 16, bytesPerToken: REAL, tokens: 131072, bytes: 24 * GiB, source: '--kv-cache-memory' });
    // One block short: the flag-naming error planKvCache gives before the load.
    expect(() => checkKvPool({ blocks: 8191, blockSize: 16, bytesPerToken: REAL, maxModelLen: 131072, budget: bytes })).toThrow(
      /the KV cache \(24 GiB\) holds 131056 tokens but max-model-len is 131072 \(needs 24\.00 GiB\): pass --kv-cache-memory 24 or a smaller --max-model-len/,
    );
    // The CPU default names where its size came from.
    const def = kvBudget({ ...cpuBase, freeBytes: 20 * GiB, weightBytes: 61 * GiB });
    expect(() => checkKvPool({ blocks: 0, blockSize: 16, bytesPerToken: REAL, maxModelLen: 32768, budget: def })).toThrow(
      /the default KV cache \(0\.00 GiB, 90% of 20\.00 GiB free less 61\.00 GiB of weights\) holds 0 tokens but max-model-len is 32768.*--kv-cache-memory 6 or a smaller --max-model-len/,
    );
    expect(() => checkKvPool({ blocks: -1, blockSize: 16, bytesPerToken: REAL, maxModelLen: 64, budget: def })).toThrow(/blocks must be an integer >= 0/);
  });

  it('a CUDA pool sized by --gpu-memory-utilization that misses one sequence names the share that would fit, or says none does', () => {
    const share = kvBudget(cudaBase);
    // An 80 GiB device: 6 GiB of bf16 KV (65536 tokens) where 12 GiB are needed; 6 GiB more is 0.075 of the device.
    const total = 80 * GiB;
    expect(() => checkKvPool({ blocks: 4096, blockSize: 16, bytesPerToken: BF16, maxModelLen: 131072, budget: share, deviceTotalBytes: total })).toThrow(
      /^the KV cache \(6\.00 GiB: what --gpu-memory-utilization 0\.9 left after the weights and workspace\) holds 65536 tokens but max-model-len is 131072 \(needs 12\.00 GiB\): pass --gpu-memory-utilization 0\.98 or a smaller --max-model-len$/,
    );
    // 4 GiB (43680 tokens): 8 GiB more would take the share past 1.
    const blocks = Math.floor((4 * GiB) / BF16 / 16);
    expect(() => checkKvPool({ blocks, blockSize: 16, bytesPerToken: BF16, maxModelLen: 131072, budget: share, deviceTotalBytes: total })).toThrow(
      /holds 43680 tokens.*the device's 80\.00 GiB cannot hold it beside the weights: pass a smaller --max-model-len$/,
    );
    const half = kvBudget({ ...cudaBase, gpuMemoryUtilization: 0.5 });
    expect(() => checkKvPool({ blocks, blockSize: 16, bytesPerToken: BF16, maxModelLen: 131072, budget: half, deviceTotalBytes: total })).toThrow(
      /--gpu-memory-utilization 0\.5 left.*pass --gpu-memory-utilization 0\.61 or a smaller --max-model-len/,
    );
    // Nothing left even at 1: only a shorter context helps.
    expect(() => checkKvPool({ blocks: 0, blockSize: 16, bytesPerToken: BF16, maxModelLen: 131072, budget: share, deviceTotalBytes: 64 * GiB })).toThrow(
      /holds 0 tokens.*the device's 64\.00 GiB cannot hold it beside the weights: pass a smaller --max-model-len/,
    );
    // Without the device's size, every flag that could help.
    expect(() => checkKvPool({ blocks: 0, blockSize: 16, bytesPerToken: BF16, maxModelLen: 131072, budget: share })).toThrow(
      /pass a larger --gpu-memory-utilization, --kv-cache-memory 12, or a smaller --max-model-len/,
    );
    const ok = checkKvPool({ blocks: 8192, blockSize: 16, bytesPerToken: BF16, maxModelLen: 131072, budget: share, deviceTotalBytes: total });
    expect(ok).toMatchObject({ tokens: 131072, bytes: 12 * GiB, source: 'default: --gpu-memory-utilization 0.9' });
    expect(describeKvPlan(ok, 32768)).toMatch(/^KV cache: 12\.00 GiB \(default: --gpu-memory-utilization 0\.9\), 8192 blocks of 16 tokens, 131072 tokens \(98304 bytes per token\); .*32768: 4 such sequences at once$/);
  });

  it("the weights' size from the config's shapes alone (--load-format dummy, no files to stat) is the checkpoint's", () => {
    const shapes: MakeModelOptions[] = [
      { layers: 48, hidden: 2048, heads: 32, kvHeads: 4, headDim: 128, experts: 128, topK: 8, moeIntermediate: 768, intermediate: 6144, vocab: 151936 },
      { layers: 3, hidden: 32, heads: 4, kvHeads: 1, headDim: 12, experts: 4, topK: 2, moeIntermediate: 16, intermediate: 48, mlpOnlyLayers: [0], vocab: 1000 },
      { layers: 2, hidden: 64, heads: 2, kvHeads: 2, headDim: 32, experts: 8, topK: 2, tieWordEmbeddings: true, vocab: 500, decoderSparseStep: 2 },
    ];
    for (const opts of shapes) {
      const o = resolveMakeModelOptions(opts);
      const params = planTensors(o).reduce((a, t) => a + numElements(t.shape), 0);
      const native = {
        hiddenSize: o.hidden, numLayers: o.layers, numHeads: o.heads, numKvHeads: o.kvHeads, headDim: o.headDim, vocabSize: o.vocab,
        intermediateSize: o.intermediate, moeIntermediateSize: o.moeIntermediate, numExperts: o.experts, tieWordEmbeddings: o.tieWordEmbeddings,
        moeLayers: planTensors(o).filter((t) => /^model\.layers\.\d+\.input_layernorm/.test(t.name)).map((_, l) =>
          planTensors(o).some((t) => t.name === `model.layers.${l}.mlp.gate.weight`)),
      } as NativeModelConfig;
      expect(estimateWeightBytes(native)).toBe(params * 2);
      expect(estimateWeightBytes(native, 4)).toBe(params * 4);
    }
  });
});

describe('--device', () => {
  const cpu: BackendInfo = { name: 'cpu', available: true, simd: 'avx2', threads: 2 };
  const notCompiled: BackendInfo = { name: 'cuda', compiled: false, available: false, detail: 'not compiled in (npm install found no CUDA toolkit)', devices: [] };
  const noDriver: BackendInfo = { name: 'cuda', compiled: true, archs: 'sm_80 sm_89 sm_90a', available: false, detail: 'no CUDA driver', devices: [] };
  const gpu: BackendInfo = {
    name: 'cuda', compiled: true, archs: 'sm_80 sm_89 sm_90a', available: true,
    devices: [{ ordinal: 0, name: 'NVIDIA H100 80GB HBM3', memoryBytes: 80 * GiB, computeCapability: '9.0' }],
  };

  it("auto is CUDA exactly when the addon reports it usable; cpu is always the CPU", () => {
    expect(resolveDevice('auto', [cpu, gpu])).toBe('cuda');
    expect(resolveDevice('auto', [cpu, notCompiled])).toBe('cpu');
    expect(resolveDevice('auto', [cpu, noDriver])).toBe('cpu');
    expect(resolveDevice('auto', [cpu])).toBe('cpu');
    expect(resolveDevice('cpu', [cpu, gpu])).toBe('cpu');
    expect(resolveDevice('cuda', [cpu, gpu])).toBe('cuda');
    expect(cudaUsable([cpu, gpu])).toBe(true);
    expect(cudaUsable([cpu, noDriver])).toBe(false);
  });

  it('cuda where it is not usable fails saying whether it is not compiled in or not usable here, and why', () => {
    expect(() => resolveDevice('cuda', [cpu, notCompiled])).toThrow(
      /^--device cuda: CUDA is not compiled into this build of moeserve: not compiled in \(npm install found no CUDA toolkit\); .*--device cpu$/,
    );
    expect(() => resolveDevice('cuda', [cpu])).toThrow(/CUDA is not compiled into this build/);
    expect(() => resolveDevice('cuda', [cpu, noDriver])).toThrow(
      /^--device cuda: CUDA is compiled in \(sm_80 sm_89 sm_90a\) but not usable here: no CUDA driver; pass --device cpu$/,
    );
  });
});
