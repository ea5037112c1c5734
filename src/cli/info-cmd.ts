// `moeserve info [--json]`: version, and the backends compiled into the addon with what each found. The JSON
// gives each backend as the addon reports it (BackendInfo): for CUDA, compiled and archs (this build), available
// and detail (usable here, and why not), and devices (name, memory, compute capability).
import { Command } from 'commander';
import type { BackendInfo } from '../native/addon-types.ts';
import { addonPath, loadAddon } from '../native/load-addon.ts';
import { packageVersion } from './package-info.ts';

export interface Info {
  version: string;
  node: string;
  platform: string;
  addon: { path: string | null; version: string | null; error?: string };
  backends: BackendInfo[];
}

export function collectInfo(): Info {
  const info: Info = {
    version: packageVersion(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    addon: { path: addonPath(), version: null },
    backends: [],
  };
  try {
    const addon = loadAddon();
    info.addon.version = addon.version;
    info.backends = addon.backends();
  } catch (err) {
    info.addon.error = (err as Error).message;
  }
  return info;
}

/** A backend in lines: the first says whether it is usable (and why not); CUDA adds its build and each device. */
export function describeBackend(b: BackendInfo): string[] {
  const parts = [b.available ? 'available' : 'not available'];
  if (b.simd) parts.push(`simd ${b.simd}`);
  if (b.threads !== undefined) parts.push(`${b.threads} threads`);
  // Fields a backend reports beyond the contract (e.g. the CPU's kernel set), shown as they come.
  const shown = ['name', 'available', 'simd', 'threads', 'detail', 'compiled', 'archs', 'devices'];
  for (const [key, value] of Object.entries(b)) {
    if (!shown.includes(key)) parts.push(`${key} ${String(value)}`);
  }
  const lines = [`  ${b.name}: ${parts.join(', ')}${b.detail ? `: ${b.detail}` : ''}`];
  if (b.compiled !== undefined) lines.push(`    compiled in: ${b.compiled ? `yes${b.archs ? ` (${b.archs})` : ''}` : 'no'}`);
  for (const d of b.devices ?? []) {
    lines.push(`    device ${d.ordinal}: ${d.name}, ${(d.memoryBytes / 2 ** 30).toFixed(2)} GiB, compute capability ${d.computeCapability}`);
  }
  return lines;
}

export function infoCommand(): Command {
  return new Command('info')
    .description('version, and the compute backends compiled in and what each found')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }) => {
      const info = collectInfo();
      if (opts.json) {
        console.log(JSON.stringify(info, null, 2));
      } else {
        console.log(`moeserve ${info.version} (node ${info.node}, ${info.platform})`);
        if (info.addon.error) {
          console.log(`addon: ${info.addon.error}`);
        } else {
          console.log(`addon ${info.addon.version} at ${info.addon.path}`);
          console.log('backends:');
          for (const b of info.backends) for (const line of describeBackend(b)) console.log(line);
        }
      }
      if (info.addon.error) process.exitCode = 1;
    });
}
