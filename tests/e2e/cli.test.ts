// The `moeserve` command line as a user runs it: bin/moeserve.js in a child process.
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin/moeserve.js');
const run = promisify(execFile);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moeserve-cli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function moeserve(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [bin, ...args], { cwd: tmp });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout: string; stderr: string; code: number };
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

describe('moeserve CLI', () => {
  it('info --json reports the package version and the CPU backend', async () => {
    const { stdout, code } = await moeserve('info', '--json');
    expect(code).toBe(0);
    const info = JSON.parse(stdout);
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
    expect(info.version).toBe(pkg.version);
    const cpu = info.backends.find((b: { name: string }) => b.name === 'cpu');
    expect(cpu).toMatchObject({ available: true });
    expect(['avx512bf16', 'avx512', 'avx2', 'scalar']).toContain(cpu.simd);
    expect(cpu.threads).toBeGreaterThan(0);
  });

  it('make-model writes the requested shape in HF layout (relative OUT_DIR, shards)', async () => {
    const { code, stderr } = await moeserve(
      'make-model', 'small', '--layers', '2', '--hidden', '32', '--heads', '4', '--kv-heads', '1', '--head-dim', '12',
      '--experts', '4', '--top-k', '2', '--moe-intermediate', '16', '--intermediate', '48', '--mlp-only-layers', '0',
      '--seed', '3', '--dtype', 'f32', '--shards', '2', '--max-position-embeddings', '512',
    );
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const out = path.join(tmp, 'small');
    const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    expect(config).toMatchObject({
      architectures: ['Qwen3MoeForCausalLM'], num_hidden_layers: 2, hidden_size: 32, num_attention_heads: 4,
      num_key_value_heads: 1, head_dim: 12, num_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 16,
      intermediate_size: 48, mlp_only_layers: [0], torch_dtype: 'float32', max_position_embeddings: 512,
    });
    expect(fs.existsSync(path.join(out, 'model.safetensors.index.json'))).toBe(true);
    expect(fs.readdirSync(out).filter((f) => f.endsWith('.safetensors'))).toHaveLength(2);
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) expect(fs.existsSync(path.join(out, f))).toBe(true);
  });

  it('rejects bad flag values with a usage error', async () => {
    const bad = await moeserve('make-model', 'x', '--layers', 'two');
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--layers.*expected an integer/);
    const missing = await moeserve('serve', path.join(tmp, 'does-not-exist'), '--port', '0');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/does not exist/);
    // (uses the model written above) a KV cache too small for one max-model-len sequence names both flags
    const kv = await moeserve('serve', path.join(tmp, 'small'), '--kv-cache-memory', '0.00001', '--max-model-len', '512');
    expect(kv.code).toBe(1);
    expect(kv.stderr).toMatch(/max-model-len is 512.*--kv-cache-memory 1 or a smaller --max-model-len/);
  });

  it('serve listens, answers with the served name, and exits cleanly on SIGINT', async () => {
    const args = [bin, 'serve', path.join(tmp, 'small'), '--port', '0', '--mlock', '--served-model-name', 'cli-model', '--threads', '1'];
    const child = spawn(process.execPath, args, { cwd: tmp });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    try {
      await expect.poll(() => /at (http:\/\/127\.0\.0\.1:\d+)\/v1/.test(output), { timeout: 60_000, interval: 100 }).toBe(true);
      const base = /at (http:\/\/127\.0\.0\.1:\d+)\/v1/.exec(output)![1];
      // --mlock either locked the weights or says why the OS refused (and serves anyway).
      expect(output).toMatch(/weights locked in RAM \(--mlock\)|warning: --mlock: mlock of .+ failed: .+; serving with unlocked weights/);
      expect((await fetch(`${base}/health`)).status).toBe(200);
      const res = await fetch(`${base}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'cli-model', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }),
      });
      const body = await res.json();
      expect(res.status).toBe(200);
      expect(body).toMatchObject({ model: 'cli-model', usage: { completion_tokens: 4 } });
      child.kill('SIGINT');
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
