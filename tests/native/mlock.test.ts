// loadModel({ mlock }): the weights are locked in RAM (the process's VmLck grows by at least the checkpoint's
// size), or, where the OS refuses (no CAP_IPC_LOCK, a small `ulimit -l`), the model still loads and says why.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModelConfig, type ModelConfig } from '../../src/model/config.ts';
import { loadAddon } from '../../src/native/load-addon.ts';
import { testModel } from '../helpers/model-fixtures.ts';

function lockedKiB(): number {
  const m = /^VmLck:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : NaN;
}

let cfg: ModelConfig;
beforeAll(async () => {
  cfg = loadModelConfig(await testModel({ layers: 1, hidden: 64, heads: 2, kvHeads: 1, headDim: 32, experts: 4, topK: 2, moeIntermediate: 32, seed: 3 }));
});

const load = (mlock?: boolean) =>
  loadAddon().loadModel({ files: cfg.files, config: cfg.native, threads: 1, kvBlocks: 4, blockSize: 16, mlock });

describe.runIf(process.platform === 'linux')('mlock', () => {
  const models: { close(): void }[] = [];
  afterAll(() => models.forEach((m) => m.close()));

  it('is off unless asked for', async () => {
    const m = await load();
    models.push(m);
    expect(m.weightsLocked).toBe(false);
    expect(m.lockError).toBeUndefined();
  });

  it('locks every weight file, or reports which one the OS refused and why', async () => {
    const before = lockedKiB();
    const m = await load(true);
    models.push(m);
    const bytes = cfg.files.reduce((s, f) => s + fs.statSync(f).size, 0);
    if (m.weightsLocked) {
      expect(m.lockError).toBeUndefined();
      expect(lockedKiB() - before).toBeGreaterThanOrEqual(Math.floor(bytes / 1024));
      m.close();
      models.pop();
      expect(lockedKiB()).toBe(before);  // munmap unlocks
    } else {
      expect(m.lockError).toMatch(/^mlock of .+ failed: /);
    }
  });
});
