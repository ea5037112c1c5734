// The op-conformance harness (native/tools/backend-ops.cpp, built beside the addon): every Backend op on random
// shapes with odd tails, each SIMD kernel set this CPU has against the scalar one; attention over both KV dtypes
// (bf16, then f32 on both sides). CUDA against the CPU runs where
// a GPU is (bench/gpu/check.sh); here the harness must refuse it with the reason.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadAddon } from '../../src/native/load-addon.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const tool = path.join(root, 'build/Release/backend-ops');
const OPS = [
  'embed', 'rmsnorm input', 'rmsnorm post-attn', 'rmsnorm final', 'add_rmsnorm (sum)', 'add_rmsnorm (norm)', 'add',
  'qkv: q L0', 'qkv: k L1', 'project o L0', 'project o L1', 'moe', 'mlp (dense)', 'qk_norm_rope: q [prefill]',
  'qk_norm_rope: k [continue]', 'attention [prefill]', 'attention [continue]', 'attention f32-KV [prefill]',
  'attention f32-KV [continue]', 'sample: token logprobs',
  'sample: top-20 logprobs', 'sample: prompt top-5', 'sample: tokens differing', 'sample: top ids differing',
];
const CASES = ['tiny-f32', 'odd-f16', 'hd128-bf16', 'dummy-gqa'];

function run(...args: string[]) {
  const r = spawnSync(tool, args, { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, out: r.stdout, err: r.stderr };
}

const cpu = loadAddon().backends().find((b) => b.name === 'cpu')!;
const level = cpu.simd ?? 'scalar';
const sets = ['avx2', 'avx512', 'avx512bf16'].filter((s) =>
  s === 'avx2' ? level !== 'scalar' : s === 'avx512' ? level.startsWith('avx512') : level === s,
);

describe('backend-ops: every op of each kernel set against the scalar kernels', () => {
  it('is built beside the addon', () => {
    expect(fs.existsSync(tool)).toBe(true);
  });

  it.each(sets.length > 0 ? sets : ['scalar'])('cpu:scalar vs cpu:%s, two seeds', (set) => {
    for (const seed of ['1', '7']) {
      const r = run('--a', 'cpu:scalar', '--b', `cpu:${set}`, '--seed', seed);
      expect(r.err).toBe('');
      expect(r.out).toContain('PASSED: 0 op checks outside tolerance');
      expect(r.status).toBe(0);
      for (const c of CASES) {
        expect(r.out).toContain(`# ${c}: cpu/scalar vs cpu/${set}, 31 checks, 0 outside tolerance`);
        for (const op of OPS) expect(r.out).toMatch(new RegExp(`^ok +${c} +${op.replace(/[()[\]]/g, '\\$&')} `, 'm'));
      }
    }
  });

  it('refuses a kernel set or backend it cannot run, with the reason and status 2', () => {
    const unknown = run('--b', 'cpu:sse9');
    expect(unknown.status).toBe(2);
    expect(unknown.err).toContain('unknown CPU kernel set "sse9"');
    const usage = run('--frobnicate');
    expect(usage.status).toBe(2);
    expect(usage.err).toContain('usage: backend-ops');
  });

  const cuda = loadAddon().backends().find((b) => b.name === 'cuda')!;
  it.skipIf(cuda.available)(`cuda here: refused with the reason (${cuda.detail ?? 'usable'}); GPU machines run it in bench/gpu/check.sh`, () => {
    const r = run('--a', 'cpu', '--b', 'cuda');
    expect(r.status).toBe(2);
    expect(r.err).toMatch(/CUDA backend (is )?not (compiled|usable)|not compiled into this build/);
  });
});
