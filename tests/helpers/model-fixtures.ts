// Generated test models, cached on disk so the many test files of a run (each its own worker) and
// later runs share them. A cache entry is keyed by the options AND the source of the code that writes
// it (make-model, safetensors writer, converter...), so a change to that code never serves stale files.
// Entries are built in a private temporary path and renamed into place, so concurrent builders of the
// same key are safe.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeModel, type MakeModelOptions } from '../../src/model/make-model.ts';
import { convertToGguf } from '../../src/gguf/convert.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const TEST_TMP_PREFIX = 'moeserve-test-';

const GENERATOR_SOURCES = [
  'src/model/make-model.ts',
  'src/model/safetensors-writer.ts',
  'src/model/tokenizer-files.ts',
];
const CONVERTER_SOURCES = [
  ...GENERATOR_SOURCES,
  'src/gguf/convert.ts',
  'src/gguf/gguf-writer.ts',
  'src/gguf/safetensors-reader.ts',
  'src/gguf/tokenizer-metadata.ts',
];

function sourceHash(files: string[]): string {
  const h = crypto.createHash('sha256');
  for (const f of files) h.update(f).update(fs.readFileSync(path.join(ROOT, f)));
  return h.digest('hex');
}

function key(parts: unknown[]): string {
  return crypto.createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 20);
}

/** Options as a canonical value: sorted keys, functions dropped. */
function canonical(opts: MakeModelOptions): unknown {
  const o = opts as Record<string, unknown>;
  return Object.keys(o).filter((k) => o[k] !== undefined && typeof o[k] !== 'function').sort().map((k) => [k, o[k]]);
}

const inProcess = new Map<string, Promise<string>>();
const PRUNE_AFTER_MS = 3 * 24 * 3600 * 1000;
let pruned = false;

/** Removes cache entries unused for days (entries are touched on every use), e.g. after code changes. */
function pruneOldEntries(): void {
  if (pruned) return;
  pruned = true;
  const tmp = os.tmpdir();
  for (const name of fs.readdirSync(tmp)) {
    if (!name.startsWith(`${TEST_TMP_PREFIX}model-`) && !name.startsWith(`${TEST_TMP_PREFIX}gguf-`)) continue;
    const full = path.join(tmp, name);
    try {
      if (Date.now() - fs.statSync(full).mtimeMs > PRUNE_AFTER_MS) fs.rmSync(full, { recursive: true, force: true });
    } catch {
      // raced with another process: nothing to do
    }
  }
}

async function cached(target: string, build: (tmp: string) => Promise<void>): Promise<string> {
  let p = inProcess.get(target);
  if (!p) {
    p = (async () => {
      pruneOldEntries();
      if (fs.existsSync(target)) {
        const now = new Date();
        fs.utimesSync(target, now, now);
        return target;
      }
      const tmp = `${target}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
      try {
        await build(tmp);
        try {
          fs.renameSync(tmp, target);
        } catch (e) {
          // Another worker finished the same entry first: theirs is identical, keep it.
          if (!fs.existsSync(target)) throw e;
        }
      } finally {
        fs.rmSync(tmp, { recursive: true, force: true });
      }
      return target;
    })();
    inProcess.set(target, p);
    p.catch(() => inProcess.delete(target));
  }
  return p;
}

/** A generated Qwen3-MoE checkpoint directory for these options (made once, then reused). */
export function testModel(opts: MakeModelOptions = {}): Promise<string> {
  const dir = path.join(os.tmpdir(), `${TEST_TMP_PREFIX}model-${key([canonical(opts), sourceHash(GENERATOR_SOURCES)])}`);
  return cached(dir, (tmp) => makeModel(tmp, opts));
}

/** The checkpoint for `opts` and its GGUF conversion (F32 by default), both cached. */
export async function testGguf(opts: MakeModelOptions = {}, weightType: 'f32' | 'bf16' = 'f32'): Promise<{ modelDir: string; ggufPath: string }> {
  const modelDir = await testModel(opts);
  const file = path.join(os.tmpdir(), `${TEST_TMP_PREFIX}gguf-${key([canonical(opts), weightType, sourceHash(CONVERTER_SOURCES)])}.gguf`);
  const ggufPath = await cached(file, (tmp) => convertToGguf(modelDir, tmp, { weightType }));
  return { modelDir, ggufPath };
}

/** A fresh empty directory under the OS temp dir; remove it with removeTempDir. */
export function makeTempDir(label = 'tmp'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `${TEST_TMP_PREFIX}${label}-`));
}

export function removeTempDir(dir: string): void {
  if (!path.basename(dir).startsWith(TEST_TMP_PREFIX)) throw new Error(`refusing to remove ${dir}: not a test temp dir`);
  fs.rmSync(dir, { recursive: true, force: true });
}

/** A writable copy of a (cached) model directory, for tests that damage or edit a checkpoint. */
export function copyModelDir(src: string, label = 'copy'): string {
  const dst = makeTempDir(label);
  fs.cpSync(src, dst, { recursive: true });
  return dst;
}
