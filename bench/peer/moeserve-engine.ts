// moeserve as users run it: `moeserve serve` in a child process, driven over HTTP by the official
// `openai` client with streaming completions (token-id prompts, greedy, ignore_eos).
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import OpenAI from 'openai';
import { processCpuMs } from './machine.ts';
import type { ConcurrentSample, DecodeSample, PeerEngine, PrefillSample } from './engine.ts';

export interface MoeserveOptions {
  repoRoot: string;
  modelDir: string;
  threads: number;
  /** KV cache GiB; must hold every stream of the largest concurrency level. */
  kvCacheGiB: number;
  maxModelLen: number;
  /** Extra `moeserve serve` flags. */
  extraArgs?: string[];
}

const MODEL_NAME = 'slice';
const START_TIMEOUT_MS = 300_000;

type StreamParams = OpenAI.CompletionCreateParamsStreaming & { ignore_eos: boolean };

export async function startMoeserve(o: MoeserveOptions): Promise<PeerEngine> {
  const args = [
    path.join(o.repoRoot, 'bin/moeserve.js'), 'serve', o.modelDir,
    '--host', '127.0.0.1', '--port', '0', '--served-model-name', MODEL_NAME,
    '--threads', String(o.threads), '--kv-cache-memory', String(o.kvCacheGiB), '--max-model-len', String(o.maxModelLen),
    '--generation-config', 'vllm', ...(o.extraArgs ?? []),
  ];
  const child: ChildProcess = spawn(process.execPath, args, { cwd: o.repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  const killChild = () => child.kill('SIGKILL');
  process.once('exit', killChild);
  const log: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const baseURL = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`moeserve did not start within ${START_TIMEOUT_MS / 1000} s:\n${log.join('\n')}`)), START_TIMEOUT_MS);
    const onLine = (line: string) => {
      log.push(line);
      const m = / at (http:\/\/\S+\/v1)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    readline.createInterface({ input: child.stdout! }).on('line', onLine);
    readline.createInterface({ input: child.stderr! }).on('line', onLine);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`moeserve exited with code ${code} before serving:\n${log.join('\n')}`));
    });
  });
  const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0, timeout: 1_800_000 });
  const pid = child.pid!;

  /** Streams one completion; calls onTokens(n) as each chunk with n tokens arrives; returns completion_tokens. */
  const stream = async (prompt: number[], maxTokens: number, perToken: boolean, onTokens?: (n: number) => void): Promise<number> => {
    const params: StreamParams = {
      model: MODEL_NAME, prompt, max_tokens: maxTokens, temperature: 0, stream: true, ignore_eos: true,
      stream_options: { include_usage: true },
      // logprobs 0 makes every token its own chunk (otherwise a token whose text is an incomplete
      // UTF-8 sequence is held back and merged into the next chunk), for exact per-token times.
      ...(perToken ? { logprobs: 0 } : {}),
    };
    const s = await client.completions.create(params);
    let usage = NaN;
    for await (const chunk of s) {
      if (chunk.usage) usage = chunk.usage.completion_tokens;
      for (const c of chunk.choices) {
        const n = c.logprobs?.tokens?.length ?? (c.text ? 1 : 0);
        if (n > 0) onTokens?.(n);
      }
    }
    if (!(usage === maxTokens)) throw new Error(`moeserve returned ${usage} completion tokens, expected ${maxTokens}`);
    return usage;
  };

  return {
    name: 'moeserve',
    pid,
    async prefill(prompt): Promise<PrefillSample> {
      const t0 = performance.now();
      // max_tokens 1: the stream ends (finish chunk) as soon as the first token is sampled.
      await stream(prompt, 1, false);
      return { ms: performance.now() - t0 };
    },
    async decode(prompt, maxTokens): Promise<DecodeSample> {
      const t0 = performance.now();
      let first = NaN;
      let last = NaN;
      let count = 0;
      await stream(prompt, maxTokens, true, (n) => {
        last = performance.now();
        if (count === 0) first = last;
        count += n;
      });
      if (count !== maxTokens) throw new Error(`moeserve streamed ${count} tokens, expected ${maxTokens}`);
      return { firstTokenMs: first - t0, decodeMs: last - first, tokens: count };
    },
    async concurrent(prompts, maxTokens): Promise<ConcurrentSample> {
      const t0 = performance.now();
      const counts = await Promise.all(prompts.map((p) => stream(p, maxTokens, false)));
      return { ms: performance.now() - t0, tokens: counts.reduce((a, b) => a + b, 0) };
    },
    cpuMs: () => processCpuMs(pid),
    describe: () => ({
      transport: 'HTTP streaming /v1/completions (openai client), child process',
      args: args.slice(1),
      // The server's own line on coding the bf16 weights at load, absent when it kept them as they are.
      codedWeights: log.find((l) => l.includes('coded losslessly')),
      // The server's --dtype line: the arithmetic it ran in.
      dtype: log.find((l) => l.startsWith('dtype: ')),
    }),
    async close() {
      process.removeListener('exit', killChild);
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}
