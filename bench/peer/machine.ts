// The machine a benchmark ran on, and how busy other processes kept it while it ran.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { collectInfo } from '../../src/cli/info-cmd.ts';

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memGiB: number;
  node: string;
  kernel: string;
  /** From `moeserve info`: the CPU backend's SIMD level and kernel set. */
  moeserveSimd: string;
  moeserveKernels: string;
  moeserveVersion: string;
  /** The git commit measured, and whether src/ or native/ had uncommitted changes. */
  revision: string;
}

function revision(): string {
  try {
    const cwd = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
    const opts = { cwd, encoding: 'utf8' as const, stdio: ['ignore', 'pipe', 'ignore'] as ('ignore' | 'pipe')[] };
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], opts).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'native'], opts).trim() !== '';
    return dirty ? `${head} + uncommitted changes in src/ or native/` : head;
  } catch {
    return 'unknown (not a git checkout)';
  }
}

// Cores by (vendor, family, model) from /proc/cpuinfo: virtual machines often name the CPU generically
// ("Intel(R) Xeon(R) Processor"), and the core generation is what the kernels' speed depends on.
const CORE_NAMES: Record<string, string> = {
  'GenuineIntel 6 85': 'Skylake-SP / Cascade Lake', 'GenuineIntel 6 106': 'Ice Lake-SP', 'GenuineIntel 6 143': 'Sapphire Rapids',
  'GenuineIntel 6 207': 'Emerald Rapids', 'GenuineIntel 6 173': 'Granite Rapids',
  'AuthenticAMD 25 17': 'Zen 4 (Genoa)', 'AuthenticAMD 25 160': 'Zen 4c (Bergamo)', 'AuthenticAMD 26 2': 'Zen 5 (Turin)',
  'AuthenticAMD 26 17': 'Zen 5 (Turin)',
};

/** "model name (vendor family F model M: core)", as much of it as /proc/cpuinfo says. */
export function describeCpu(cpuinfo: string): string | null {
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.+)$`, 'm').exec(cpuinfo)?.[1]?.trim();
  const name = field('model name');
  if (!name) return null;
  const vendor = field('vendor_id'), family = field('cpu family'), model = field('model');
  if (!vendor || !family || !model) return name;
  const core = CORE_NAMES[`${vendor} ${family} ${model}`];
  return `${name} (family ${family} model ${model}${core ? `: ${core}` : ''})`;
}

export function machineInfo(): MachineInfo {
  let cpuModel = os.cpus()[0]?.model ?? 'unknown';
  try {
    cpuModel = describeCpu(fs.readFileSync('/proc/cpuinfo', 'utf8')) ?? cpuModel;
  } catch {
    // not Linux: os.cpus() it is
  }
  const info = collectInfo();
  const cpu = info.backends.find((b) => b.name === 'cpu');
  return {
    cpuModel,
    cores: os.availableParallelism(),
    memGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    kernel: `${os.type()} ${os.release()}`,
    moeserveSimd: cpu?.simd ?? 'unknown',
    moeserveKernels: cpu?.kernels ?? 'unknown',
    moeserveVersion: info.version,
    revision: revision(),
  };
}

export function loadAverage(): [number, number, number] {
  return os.loadavg().map((x) => Math.round(x * 100) / 100) as [number, number, number];
}

/** Busy CPU time of the whole machine (all cores), ms, from /proc/stat; NaN where unavailable. */
function machineBusyMs(): number {
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already inside user)
    const busy = v[0]! + v[1]! + v[2]! + v[5]! + v[6]! + v[7]!;
    return busy * 10; // USER_HZ = 100
  } catch {
    return NaN;
  }
}

/** CPU time (ms) of a process and its threads from /proc/PID/stat; NaN when it is gone. */
export function processCpuMs(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return NaN;
  }
}

/**
 * Measures how many cores' worth of CPU other processes used during an interval: the machine's busy
 * time minus that of `ours` (the benchmark and its server), divided by the wall time.
 */
export class ContentionMeter {
  private t0 = 0;
  private busy0 = 0;
  private ours0 = 0;
  private readonly last = new Map<number, number>();

  constructor(private readonly ours: () => number[]) {}

  start(): void {
    this.last.clear();
    this.t0 = performance.now();
    this.busy0 = machineBusyMs();
    this.ours0 = this.oursMs();
  }

  /** Cores used by other processes since start() (0 = a quiet machine). */
  stop(): number {
    const wall = performance.now() - this.t0;
    const foreign = machineBusyMs() - this.busy0 - (this.oursMs() - this.ours0);
    return wall > 0 ? Math.max(0, foreign / wall) : NaN;
  }

  /** Reads our processes' CPU now; a process that has exited keeps its last reading (call this while it runs). */
  refresh(): void {
    for (const pid of this.ours()) {
      const ms = processCpuMs(pid);
      if (Number.isFinite(ms)) this.last.set(pid, ms);
    }
  }

  private oursMs(): number {
    this.refresh();
    return [...this.last.values()].reduce((a, b) => a + b, 0);
  }
}
