// Coding bf16 weights at load (loadModel codeWeights, native/core/coded-bf16.h): where the kernel set reads coded
// rows (avx512bf16), every codable matrix is coded, it takes about 0.77 of its bf16 bytes, and steps of every
// shape (1-4 tokens: fused row dots; 5 and more: the GEMM) give what the same checkpoint gives uncoded. Some
// weights are made large outliers first: their magnitude is rare in their row, so they are escapes, and
// dropping or misplacing one would move the logits by whole nats.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModelConfig, type ModelConfig } from '../../src/model/config.ts';
import type { NativeModel } from '../../src/native/addon-types.ts';
import { loadAddon } from '../../src/native/load-addon.ts';
import { copyModelDir, removeTempDir, testModel } from '../helpers/model-fixtures.ts';
import { promptTops, randomTokens, runStep } from '../helpers/native-steps.ts';

// K = 256 everywhere: q/k/v/gate/up (hidden), o (8 heads × 32) and down (moe_intermediate), and the lm_head.
const OPTS = { layers: 2, hidden: 256, heads: 8, kvHeads: 2, headDim: 32, experts: 8, topK: 2, moeIntermediate: 256, dtype: 'bf16' as const, seed: 21 };
const CODABLE = 1 + OPTS.layers * (4 + OPTS.experts * 3);
const TOP = 5;

function bf16(x: number): number {
  const f = new Float32Array([x]);
  return new Uint32Array(f.buffer)[0]! >>> 16;
}

/** Sets weights [row, col] of named bf16 tensors of a single-file checkpoint to `value`. */
function plantOutliers(file: string, edits: { tensor: string; row: number; col: number; value: number }[]): void {
  const buf = fs.readFileSync(file);
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  for (const e of edits) {
    const t = header[e.tensor];
    if (!t || t.dtype !== 'BF16') throw new Error(`no bf16 tensor ${e.tensor}`);
    buf.writeUInt16LE(bf16(e.value), 8 + headerLen + t.data_offsets[0] + 2 * (e.row * t.shape[1]! + e.col));
  }
  fs.writeFileSync(file, buf);
}

let dir: string;
let cfg: ModelConfig;
let coded: NativeModel;
let plain: NativeModel;
const cpu = loadAddon().backends().find((b) => b.name === 'cpu');
const kernels = cpu?.kernels;
/** Only the avx512bf16 kernel set reads coded rows: elsewhere nothing is coded and most of this file is skipped. */
const READS_CODED = kernels === 'avx512bf16';
const CAN_MEASURE_MLOCK = READS_CODED && process.platform === 'linux';
const SIZES = 'code every codable matrix where the kernels read them, and nothing when asked not to';
const MLOCK = 'with mlock, lock the coded form and not the bf16 it replaced';
const STEPS = 'a %i-token step gives the uncoded top-5 at every position';
const NEEDS = `needs the avx512bf16 kernel set; this addon runs ${kernels ?? 'no cpu'} kernels`;
const MLOCK_NEEDS = READS_CODED ? 'VmLck is read from /proc: linux only' : NEEDS;

// The CI log must say what ran: a machine without AVX-512 BF16 passes this file while testing almost nothing.
beforeAll(() => {
  const skipped = [
    ...(READS_CODED ? [] : [`"${SIZES}" (its coded part), "${STEPS.replace('%i', 'N')}" (${NEEDS})`]),
    ...(CAN_MEASURE_MLOCK ? [] : [`"${MLOCK}" (${MLOCK_NEEDS})`]),
  ];
  console.log(
    `coded-weights: cpu simd ${cpu?.simd ?? 'none'}, kernel set ${kernels ?? 'none'}` +
      (process.env.MOESERVE_SIMD ? ` (MOESERVE_SIMD=${process.env.MOESERVE_SIMD})` : '') +
      (skipped.length === 0 ? '; every suite runs' : `; skipped: ${skipped.join(', ')}`),
  );
});

beforeAll(async () => {
  dir = copyModelDir(await testModel(OPTS), 'coded');
  cfg = loadModelConfig(dir);
  expect(cfg.files).toHaveLength(1);
  const edits = [];
  // Tokens 0..39 of the lm_head get one large weight each; a few rows of attention and experts get one too.
  for (let v = 0; v < 40; v++) edits.push({ tensor: 'lm_head.weight', row: v, col: (v * 37) % OPTS.hidden, value: v % 2 ? 40 : -40 });
  for (const [l, name, rows] of [[0, 'self_attn.q_proj', 256], [1, 'self_attn.o_proj', 256], [0, 'mlp.experts.3.down_proj', 256], [1, 'mlp.experts.5.gate_proj', 256]] as const) {
    for (let i = 0; i < 6; i++) edits.push({ tensor: `model.layers.${l}.${name}.weight`, row: (i * 41) % rows, col: (i * 53 + 7) % 256, value: i % 2 ? 3 : -3 });
  }
  plantOutliers(cfg.files[0]!, edits);
  const load = (codeWeights: boolean) => loadAddon().loadModel({ files: cfg.files, config: cfg.native, threads: 2, kvBlocks: 32, blockSize: 16, codeWeights });
  coded = await load(true);
  plain = await load(false);
});

afterAll(() => {
  coded?.close();
  plain?.close();
  if (dir) removeTempDir(dir);
});

describe('coded bf16 weights', () => {
  it(SIZES, ({ skip }) => {
    expect(plain.codedWeights).toEqual({ matrices: 0, sourceBytes: 0, codedBytes: 0, escapes: 0 });
    if (!READS_CODED) {
      expect(coded.codedWeights.matrices).toBe(0);
      skip(`coded sizes not checked: ${NEEDS}`);
    }
    const w = coded.codedWeights;
    expect(w.matrices).toBe(CODABLE);
    // 256 columns: 16 + 256 + 128 bytes, padded to 448, against 512 as bf16.
    expect(w.codedBytes / w.sourceBytes).toBeCloseTo(448 / 512, 6);
    expect(w.escapes).toBeGreaterThanOrEqual(40 + 24);  // at least the planted outliers
  });

  it(MLOCK, async ({ skip }) => {
    skip(!CAN_MEASURE_MLOCK, MLOCK_NEEDS);
    const lockedKiB = () => Number(/^VmLck:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN);
    const before = lockedKiB();
    const m = await loadAddon().loadModel({ files: cfg.files, config: cfg.native, threads: 2, kvBlocks: 4, blockSize: 16, mlock: true });
    try {
      if (!m.weightsLocked) {
        expect(m.lockError).toMatch(/^mlock of .+ failed: /);
        return;
      }
      const fileBytes = fs.statSync(cfg.files[0]!).size;
      const w = m.codedWeights;
      const grew = (lockedKiB() - before) * 1024;
      expect(grew).toBeGreaterThanOrEqual(fileBytes - w.sourceBytes + w.codedBytes - 1024 * 1024);
      expect(grew).toBeLessThan(fileBytes - w.sourceBytes + w.codedBytes + 1024 * 1024);
    } finally {
      m.close();
    }
  });

  it.for([1, 2, 3, 4, 5, 6, 16, 40])(STEPS, async (T, { skip }) => {
    skip(!READS_CODED, NEEDS);
    // Prompts made of the outlier tokens and others, so that the planted lm_head weights decide some top-5s.
    const tokens = randomTokens(T, 100 + T).map((t, i) => (i % 3 === 0 ? i % 40 : t));
    const seq = { tokens, start: 0, blocks: [0, 1, 2], promptLogprobs: TOP, sample: true };
    const a = await runStep(coded, [seq]);
    const b = await runStep(plain, [seq]);
    const ta = promptTops(a.batch, a.res, 0);
    const tb = promptTops(b.batch, b.res, 0);
    // Not bit for bit: an escape's product is added in f32, where the plain kernels carry x as bf16 hi + lo
    // (2^-17 relative), which on a planted weight of 40 is a few 1e-4 nats; a dropped escape moves whole nats.
    let planted = 0;
    ta.forEach((p, i) => {
      expect(p.ids, `position ${i}`).toEqual(tb[i]!.ids);
      p.logprobs.forEach((l, j) => expect(Math.abs(l - tb[i]!.logprobs[j]!), `position ${i} rank ${j}`).toBeLessThan(2e-3));
      planted += p.ids.filter((id) => id < 40).length;
    });
    expect(planted, 'the planted lm_head weights reach the top-5').toBeGreaterThan(0);
    expect(a.res.tokens[0]).toBe(b.res.tokens[0]);
  });
});
