// KV cache sizing without the addon: bytes per token, the default from free memory, explicit sizes,
// the one-sequence-must-fit rule, and the model's context length as vLLM derives it.
import { describe, expect, it } from 'vitest';
import {
  defaultKvCacheBytes,
  derivedMaxModelLen,
  describeKvPlan,
  estimateKvBytesPerToken,
  KV_DEFAULT_MAX_TOKENS,
  planKvCache,
} from '../../src/cli/kv-plan.ts';
import type { ModelConfig } from '../../src/model/config.ts';

const GiB = 1024 ** 3;

function config(native: Partial<ModelConfig['native']>, maxPositionEmbeddings = 131072, raw: Record<string, unknown> = {}): ModelConfig {
  return { native: { numLayers: 48, numKvHeads: 4, headDim: 128, ...native }, maxPositionEmbeddings, raw } as unknown as ModelConfig;
}

/** The real Tongyi DeepResearch 30B-A3B shape with the CPU backend's f32 KV. */
const REAL = estimateKvBytesPerToken(config({}));

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
