// Loads the compiled addon once, with an error that says how to build it when it is missing.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Addon } from './addon-types.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** Where `npm install` (cmake-js) and `node-gyp` put the addon; MOESERVE_ADDON overrides. */
const CANDIDATES = [path.join(root, 'build/Release/moeserve.node')];

let cached: Addon | null = null;

export function addonPath(): string | null {
  const override = process.env.MOESERVE_ADDON;
  if (override) return path.resolve(override);
  return CANDIDATES.find((p) => fs.existsSync(p)) ?? null;
}

export function loadAddon(): Addon {
  if (cached) return cached;
  const file = addonPath();
  if (!file) {
    throw new Error(`moeserve native addon not found (looked in ${CANDIDATES.join(', ')}); build it with \`npm run build:native\` (or \`npm install\`)`);
  }
  const require = createRequire(import.meta.url);
  cached = require(file) as Addon;
  return cached;
}
