// `moeserve serve` as a user runs it (bin/moeserve.js in a child process), for the tests that measure
// whether the server stays responsive: the server's event loop is then its own, not shared with the
// test's clients.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '../..');

export interface ServeProcess {
  child: ChildProcess;
  /** http://127.0.0.1:PORT */
  origin: string;
  port: number;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  /** SIGKILL if still running. */
  kill(): void;
}

export async function startServeProcess(modelDir: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<ServeProcess> {
  const child = spawn(process.execPath, [path.join(root, 'bin/moeserve.js'), 'serve', modelDir, '--port', '0', ...args], {
    cwd: root,
    env: { ...process.env, ...env },
  });
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const deadline = Date.now() + 120_000;
  let match: RegExpExecArray | null = null;
  while (!(match = /at http:\/\/127\.0\.0\.1:(\d+)\/v1/.exec(output))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`moeserve serve did not start:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const port = Number(match[1]);
  return {
    child,
    origin: `http://127.0.0.1:${port}`,
    port,
    output: () => output,
    exited,
    kill: () => {
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

// The prober runs in a process of its own: what it measures is the server's answer time, not stalls
// of the test's own thread (which builds and sends the attack's megabytes).
const PROBER = `
const [origin, interval] = [process.argv[1], Number(process.argv[2])];
const latencies = [];
let running = true;
let first = true;
process.stdin.on('data', () => (running = false));
(async () => {
  while (running) {
    const t0 = performance.now();
    const res = await fetch(origin + '/health');
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error('/health answered ' + res.status);
    // The first fetch of a process sets up its HTTP client (tens of ms): not the server's time.
    if (first) process.stderr.write('ready\\n');
    else latencies.push(performance.now() - t0);
    first = false;
    await new Promise((r) => setTimeout(r, interval));
  }
  process.stdout.write(JSON.stringify(latencies));
})();
`;

/**
 * /health polled back to back (every `intervalMs` after an answer) from another process until stop();
 * latencies in ms. Resolves once the first answer came, so that what follows is measured.
 */
export async function probeHealth(origin: string, intervalMs = 10): Promise<{ stop(): Promise<number[]> }> {
  const child = spawn(process.execPath, ['-e', PROBER, origin, String(intervalMs)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  await new Promise<void>((resolve, reject) => {
    child.stderr!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`/health prober exited with ${code}`)));
  });
  const exited = new Promise<void>((resolve, reject) =>
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`/health prober exited with ${code}`)))),
  );
  return {
    async stop() {
      child.stdin!.end('stop\n');
      await exited;
      return JSON.parse(out) as number[];
    },
  };
}

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** A gauge or counter of /metrics (moeserve: prefix), summed over its labels. */
export async function metric(origin: string, name: string): Promise<number> {
  const text = await (await fetch(`${origin}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`moeserve:${name}{`) || line.startsWith(`moeserve:${name} `)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}
