// The `moeserve` command line as a user runs it: bin/moeserve.js in a child process.
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import OpenAI from 'openai';
import type { ChatCompletionCreateParamsNonStreaming } from 'openai/resources/chat/completions';
import { afterAll, describe, expect, it } from 'vitest';
import { cudaUsable } from '../../src/cli/device.ts';
import { loadAddon } from '../../src/native/load-addon.ts';
import type { BackendInfo } from '../../src/native/addon-types.ts';
import { makeTempDir, removeTempDir } from '../helpers/model-fixtures.ts';
import { startServeProcess, type ServeProcess } from '../helpers/serve-process.ts';
import { tinyModelDir } from '../helpers/tiny-server.ts';

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
    const dtype = await moeserve('serve', path.join(tmp, 'small'), '--kv-cache-dtype', 'f16');
    expect(dtype.code).not.toBe(0);
    expect(dtype.stderr).toMatch(/--kv-cache-dtype.*expected one of auto, bf16, f32, got 'f16'/);
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

// --device, --gpu-memory-utilization, --load-format (issue 12), on the tiny test model. What CUDA does here
// depends on the addon: on a machine without a usable GPU (CI) `--device cuda` must fail and auto pick the CPU.
const backends: BackendInfo[] = loadAddon().backends();
const gpu = cudaUsable(backends);
/** Small and quick: one thread, a few MiB of KV, one tokenizer worker. */
const QUICK = ['--threads', '1', '--max-model-len', '512', '--kv-cache-memory', '0.01', '--tokenizer-workers', '1'];

/** Waits for SIGINT to shut the server down cleanly. */
async function stop(s: ServeProcess): Promise<void> {
  try {
    s.child.kill('SIGINT');
    expect(await s.exited).toBe(0);
  } finally {
    s.kill();
  }
}

describe('moeserve CLI: devices and load formats', () => {
  it('info --json reports backends.cuda as the addon gives it (compiled, archs, usable and why not, devices); info prints the same', async () => {
    const { stdout, code } = await moeserve('info', '--json');
    expect(code).toBe(0);
    const info = JSON.parse(stdout) as { backends: BackendInfo[] };
    const cuda = info.backends.find((b) => b.name === 'cuda');
    expect(cuda).toBeDefined();
    expect(typeof cuda!.compiled).toBe('boolean');
    expect(typeof cuda!.available).toBe('boolean');
    expect(cuda!.available).toBe(gpu);
    if (cuda!.compiled) expect(cuda!.archs).toMatch(/\S/);
    if (!cuda!.available) expect(cuda!.detail).toMatch(/\S/);
    for (const d of cuda!.devices ?? []) {
      expect(d).toMatchObject({ ordinal: expect.any(Number), name: expect.stringMatching(/\S/), computeCapability: expect.stringMatching(/^\d+\.\d+$/) });
      expect(d.memoryBytes).toBeGreaterThan(0);
    }
    const human = await moeserve('info');
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(new RegExp(`^  cuda: ${cuda!.available ? 'available' : 'not available: .+'}$`, 'm'));
    expect(human.stdout).toMatch(new RegExp(`^    compiled in: ${cuda!.compiled ? 'yes' : 'no'}`, 'm'));
    for (const d of cuda!.devices ?? []) expect(human.stdout).toContain(`device ${d.ordinal}: ${d.name}, `);
  });

  it.skipIf(gpu)('serve --device cuda without a usable GPU exits 1 saying that CUDA is not compiled in or not usable, without a stack trace', async () => {
    const dir = await tinyModelDir();
    const r = await moeserve('serve', dir, '--device', 'cuda', ...QUICK);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^moeserve: --device cuda: CUDA is (not compiled into this build of moeserve|compiled in \(.*\) but not usable here): .+--device cpu\n$/);
    expect(r.stderr).not.toMatch(/^\s+at /m);
    // It fails before reading the model.
    expect(r.stdout).toBe('');
  });

  it('bad --device, --gpu-memory-utilization and --load-format values are usage errors', async () => {
    const dir = await tinyModelDir();
    const cases = [
      ['--device', 'tpu', /--device.*expected one of auto, cpu, cuda/],
      ['--gpu-memory-utilization', '1.5', /--gpu-memory-utilization.*expected a number in \(0, 1\]/],
      ['--load-format', 'pt', /--load-format.*expected one of auto, safetensors, dummy/],
    ] as const;
    const results = await Promise.all(cases.map(([flag, value]) => moeserve('serve', dir, flag, value)));
    results.forEach((r, i) => {
      expect(r.code, cases[i].join(' ')).not.toBe(0);
      expect(r.stderr).toMatch(cases[i][2]);
    });
  });

  it('--device cpu serves; the log names the device, the weights and the KV pool, and notes that --gpu-memory-utilization does nothing there', async () => {
    const dir = await tinyModelDir();
    const cpuKernels = backends.find((b) => b.name === 'cpu')!.kernels;
    const s = await startServeProcess(dir, ['--device', 'cpu', '--gpu-memory-utilization', '0.5', ...QUICK]);
    try {
      const res = await fetch(`${s.origin}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 3, ignore_eos: true }),
      });
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ usage: { completion_tokens: 3 } });
      const out = s.output();
      expect(out).toMatch(/^loading .+ on the CPU, 1 thread$/m);
      expect(out).toContain('note: --gpu-memory-utilization 0.5 is ignored on the CPU');
      expect(out).toMatch(new RegExp(`^device: cpu/${cpuKernels}, 1 thread; weights \\d+\\.\\d\\d GiB, memory-mapped safetensors$`, 'm'));
      // The arithmetic: bf16 by default (--dtype auto on a bf16 checkpoint).
      expect(out).toMatch(cpuKernels === 'avx512bf16' ? /^dtype: bfloat16 \(matmul activations on bf16 weights rounded to bf16/m : /^dtype: bfloat16 \(cpu\/\w+ keeps matmul activations in f32 here/m);
      // blocks, tokens, dtype and bytes per token (bf16 K and V by default, --kv-cache-dtype auto following --dtype:
      // 2 layers × 2 × 1 kv head × 16 × 2), longest context
      expect(out).toMatch(/^KV cache: 0\.01 GiB \(--kv-cache-memory\), 5242 blocks of 16 tokens, 83872 tokens \(bf16, 128 bytes per token\); longest context that fits: 83872 tokens/m);
    } finally {
      await stop(s);
    }
  });

  it('--load-format dummy (with --device auto) serves a model directory of config.json and tokenizer files only, through the openai client', async () => {
    const src = await tinyModelDir();
    const dir = makeTempDir('dummy-model');
    try {
      for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(src, f), path.join(dir, f));
      expect(fs.readdirSync(dir).filter((f) => f.includes('safetensors'))).toEqual([]);
      // Without the flag the directory is no checkpoint, and the error says what to pass.
      const missing = await moeserve('serve', dir, ...QUICK);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toMatch(/no safetensors weights .*--load-format dummy/);
      // --device auto: the GPU where CUDA is usable, the CPU here.
      const s = await startServeProcess(dir, ['--load-format', 'dummy', '--device', 'auto', '--served-model-name', 'dummy', ...QUICK]);
      try {
        const out = s.output();
        expect(out).toMatch(new RegExp(`^loading .+ on ${gpu ? 'CUDA' : 'the CPU'} \\(--device auto\\), .*random weights of config\\.json's shapes \\(--load-format dummy\\)$`, 'm'));
        if (gpu) {
          expect(out).toMatch(/^device: cuda\/.+: \d+\.\d\d GiB total, \d+\.\d\d GiB free after load; weights \d+\.\d\d GiB on the device, random \(--load-format dummy\)$/m);
        } else {
          expect(out).toMatch(/^device: cpu\/\w+, 1 thread; weights \d+\.\d\d GiB, random \(--load-format dummy\), in RAM$/m);
        }
        expect(out).toMatch(/^KV cache: 0\.01 GiB \(--kv-cache-memory\), \d+ blocks of 16 tokens/m);
        const client = new OpenAI({ baseURL: `${s.origin}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 30_000 });
        const body = { model: 'dummy', messages: [{ role: 'user' as const, content: 'hello' }], max_tokens: 5, ignore_eos: true };
        const completion = await client.chat.completions.create(body as ChatCompletionCreateParamsNonStreaming);
        expect(completion.model).toBe('dummy');
        expect(completion.usage?.completion_tokens).toBe(5);
        expect(completion.choices[0].finish_reason).toBe('length');
        expect(completion.choices[0].message.content).toEqual(expect.any(String));
      } finally {
        await stop(s);
      }
    } finally {
      removeTempDir(dir);
    }
  });
});
