// This machine's memory read bandwidth, measured without native code of our own: each of N worker
// threads scans its own buffer (far larger than the last-level cache) with Buffer.indexOf for a byte
// that is not there, i.e. glibc's vectorised memchr over every byte. The figure is total bytes scanned
// ÷ the slowest thread's time, best of a few trials; it is a lower bound of what the hardware can
// stream (memchr also compares), close to a STREAM-like read test on current CPUs.
import { Worker } from 'node:worker_threads';

export interface BandwidthResult {
  threads: number;
  bytesPerThread: number;
  passes: number;
  /** Best trial, GB/s (1e9 bytes). */
  gbPerS: number;
  trialsGbPerS: number[];
}

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const buf = Buffer.allocUnsafe(workerData.bytes);
buf.fill(1); // touch every page: an untouched zero page would read from one cached page
parentPort.on('message', (passes) => {
  if (passes === 0) { process.exit(0); }
  const t0 = process.hrtime.bigint();
  let found = 0;
  for (let p = 0; p < passes; p++) if (buf.indexOf(2) !== -1) found++;
  const ns = Number(process.hrtime.bigint() - t0);
  parentPort.postMessage({ ns, found });
});
parentPort.postMessage('ready');
`;

function once<T>(w: Worker): Promise<T> {
  return new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
}

export async function measureReadBandwidth(threads: number, bytesPerThread = 512 * 2 ** 20, passes = 4, trials = 5): Promise<BandwidthResult> {
  const workers = Array.from({ length: threads }, () => new Worker(WORKER_SOURCE, { eval: true, workerData: { bytes: bytesPerThread } }));
  try {
    await Promise.all(workers.map((w) => once(w)));
    const trialsGbPerS: number[] = [];
    for (let t = 0; t < trials; t++) {
      const results = await Promise.all(workers.map((w) => {
        const r = once<{ ns: number; found: number }>(w);
        w.postMessage(passes);
        return r;
      }));
      if (results.some((r) => r.found !== 0)) throw new Error('bandwidth probe: the scanned buffer changed');
      const slowestNs = Math.max(...results.map((r) => r.ns));
      trialsGbPerS.push((threads * bytesPerThread * passes) / slowestNs);
    }
    return { threads, bytesPerThread, passes, gbPerS: Math.max(...trialsGbPerS), trialsGbPerS };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

export interface MachineBandwidth {
  /** The reference: the best of the thread counts tried (on a busy machine more threads can read less). */
  gbPerS: number;
  byThreads: BandwidthResult[];
}

/** Read bandwidth with 1 thread and with `threads`; the better one is the machine's figure. */
export async function measureMachineBandwidth(threads: number): Promise<MachineBandwidth> {
  const byThreads = [await measureReadBandwidth(1)];
  if (threads > 1) byThreads.push(await measureReadBandwidth(threads));
  return { gbPerS: Math.max(...byThreads.map((b) => b.gbPerS)), byThreads };
}

export function describeBandwidth(b: MachineBandwidth): string {
  const parts = b.byThreads.map((r) => `${r.gbPerS.toFixed(1)} GB/s with ${r.threads} thread${r.threads > 1 ? 's' : ''}`);
  return `${b.gbPerS.toFixed(1)} GB/s (${parts.join(', ')}; memchr over ${(b.byThreads[0]!.bytesPerThread / 2 ** 20).toFixed(0)} MiB per thread, best of ${b.byThreads[0]!.trialsGbPerS.length})`;
}
