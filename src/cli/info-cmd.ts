// `moeserve info [--json]`: version, and the backends compiled into the addon with what each found.
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

function describeBackend(b: BackendInfo): string {
  const parts = [b.available ? 'available' : 'not available'];
  if (b.simd) parts.push(`simd ${b.simd}`);
  if (b.threads !== undefined) parts.push(`${b.threads} threads`);
  if (b.detail) parts.push(b.detail);
  // Fields a backend reports beyond the contract (e.g. the CPU's kernel set), shown as they come.
  for (const [key, value] of Object.entries(b)) {
    if (!['name', 'available', 'simd', 'threads', 'detail'].includes(key)) parts.push(`${key} ${String(value)}`);
  }
  return `  ${b.name}: ${parts.join(', ')}`;
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
          for (const b of info.backends) console.log(describeBackend(b));
        }
      }
      if (info.addon.error) process.exitCode = 1;
    });
}
