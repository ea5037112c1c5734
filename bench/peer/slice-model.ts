// The "slice" checkpoint of the peer benchmark: Tongyi DeepResearch 30B-A3B's real layer shapes with
// few layers, generated once into bench/.cache/ (git-ignored) with its BF16 GGUF beside it, and reused
// while the shape, the seed and the converter options are unchanged.
import fs from 'node:fs';
import path from 'node:path';
import { makeModel, type MakeModelOptions } from '../../src/model/make-model.ts';
import { convertToGguf } from '../../src/gguf/convert.ts';

/** One layer of Tongyi DeepResearch 30B-A3B (Qwen3-30B-A3B): the shapes every kernel sees. */
export const SLICE_SHAPE = {
  hidden: 2048,
  heads: 32,
  kvHeads: 4,
  headDim: 128,
  experts: 128,
  topK: 8,
  moeIntermediate: 768,
  intermediate: 6144,
  vocab: 151936,
  dtype: 'bf16',
  maxPositionEmbeddings: 131072,
  ropeTheta: 1e6,
  rmsNormEps: 1e-6,
} as const satisfies MakeModelOptions;

export function sliceOptions(layers: number): MakeModelOptions {
  return { seed: 1, layers, ...SLICE_SHAPE };
}

export interface SliceFiles {
  /** The Hugging Face checkpoint directory (what moeserve serves). */
  dir: string;
  /** BF16 GGUF of the same weights (norms and router F32), for llama.cpp. */
  gguf: string;
  options: MakeModelOptions;
}

function log(msg: string): void {
  console.log(`[slice] ${msg}`);
}

/** Generates (or reuses) the slice checkpoint and its GGUF under `cacheDir`. */
export async function ensureSlice(cacheDir: string, layers: number): Promise<SliceFiles> {
  const options = sliceOptions(layers);
  const dir = path.join(cacheDir, `peer-slice-${layers}l`);
  const gguf = path.join(dir, 'model-bf16.gguf');
  const key = JSON.stringify({ options, gguf: 'bf16' });
  const marker = path.join(dir, '.complete');
  if (fs.existsSync(marker) && fs.readFileSync(marker, 'utf8') === key && fs.existsSync(gguf)) return { dir, gguf, options };

  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  try {
    let t = performance.now();
    let lastPrint = 0;
    log(`generating a ${layers}-layer checkpoint with the real layer shapes into ${dir} (once)`);
    await makeModel(tmp, {
      ...options,
      onProgress: (done, total) => {
        const now = performance.now();
        if (now - lastPrint > 10_000) {
          lastPrint = now;
          log(`  ${(done / 2 ** 30).toFixed(2)} / ${(total / 2 ** 30).toFixed(2)} GiB`);
        }
      },
    });
    log(`  checkpoint written in ${((performance.now() - t) / 1000).toFixed(0)} s`);
    t = performance.now();
    log('converting to a BF16 GGUF (norms and router F32)');
    await convertToGguf(tmp, path.join(tmp, 'model-bf16.gguf'), { weightType: 'bf16', name: `slice-${layers}l` });
    log(`  GGUF written in ${((performance.now() - t) / 1000).toFixed(0)} s`);
    fs.writeFileSync(path.join(tmp, '.complete'), key);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  return { dir, gguf, options };
}
