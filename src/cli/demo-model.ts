// The demo model `npm start` serves: a small random checkpoint generated once into models/demo/
// (git-ignored), under the package root whatever the working directory.
import fs from 'node:fs';
import path from 'node:path';
import { makeModel, type MakeModelOptions } from '../model/make-model.ts';
import { PACKAGE_ROOT } from './package-info.ts';
import { byteProgress } from './progress.ts';

export const DEMO_MODEL_DIR = path.join(PACKAGE_ROOT, 'models', 'demo');

/** Fixed so every newcomer gets the same demo (and the README's examples stay true). */
export const DEMO_MODEL_OPTIONS: MakeModelOptions = { seed: 1, layers: 2, hidden: 64, experts: 8, topK: 2, maxPositionEmbeddings: 4096 };

const COMPLETE_MARKER = '.moeserve-demo-complete';

/** Returns the demo model's directory, generating it first if it is not there (or was left half-written). */
export async function ensureDemoModel(log: (line: string) => void = console.log): Promise<string> {
  if (fs.existsSync(path.join(DEMO_MODEL_DIR, COMPLETE_MARKER))) return DEMO_MODEL_DIR;
  log(`generating the random demo model into ${DEMO_MODEL_DIR} (once)`);
  // Written under models/.cache (git-ignored) and renamed, so an interrupted run never leaves a broken demo.
  const tmp = path.join(PACKAGE_ROOT, 'models', '.cache', `demo.tmp-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(path.dirname(tmp), { recursive: true });
  const progress = byteProgress('writing weights');
  try {
    await makeModel(tmp, { ...DEMO_MODEL_OPTIONS, onProgress: (done, total) => progress.update(done, total) });
    fs.writeFileSync(path.join(tmp, COMPLETE_MARKER), JSON.stringify(DEMO_MODEL_OPTIONS) + '\n');
    fs.rmSync(DEMO_MODEL_DIR, { recursive: true, force: true });
    fs.renameSync(tmp, DEMO_MODEL_DIR);
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  } finally {
    progress.stop();
  }
  return DEMO_MODEL_DIR;
}
