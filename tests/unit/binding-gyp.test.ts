// binding.gyp cannot glob, so its source list is checked here against the folders that
// native/CMakeLists.txt globs: a .cpp added or removed without updating binding.gyp fails CI.
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));

interface GypTarget {
  target_name: string;
  type?: string;
  sources: string[];
  dependencies?: string[];
  cflags_cc?: string[];
}

interface Gyp {
  target_defaults: {
    include_dirs: string[];
    defines: string[];
    'cflags_cc!': string[];
    cflags_cc: string[];
  };
  targets: GypTarget[];
}

function readGyp(): Gyp {
  // binding.gyp is a Python literal; ours is kept JSON plus whole-line '#' comments.
  const text = readFileSync(join(root, 'binding.gyp'), 'utf8')
    .split('\n')
    .filter((line) => !line.trimStart().startsWith('#'))
    .join('\n');
  return JSON.parse(text) as Gyp;
}

function cppFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(join(root, dir), { withFileTypes: true })) {
    const rel = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...cppFiles(rel));
    else if (entry.isFile() && entry.name.endsWith('.cpp')) out.push(relative(root, join(root, rel)).split(sep).join('/'));
  }
  return out;
}

/** CMake's per-file flags: set_source_files_properties(${CMAKE_SOURCE_DIR}/F PROPERTIES COMPILE_OPTIONS "a;b"). */
function cmakeFileFlags(cmake: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const re = /set_source_files_properties\(\$\{CMAKE_SOURCE_DIR\}\/(\S+)\s+PROPERTIES\s+COMPILE_OPTIONS\s+"([^"]*)"\)/g;
  for (const m of cmake.matchAll(re)) out.set(`native/${m[1]}`, m[2]!.split(';').filter(Boolean));
  return out;
}

describe('binding.gyp', () => {
  const gyp = readGyp();
  const cmake = readFileSync(join(root, 'native/CMakeLists.txt'), 'utf8');
  const addon = gyp.targets.find((t) => t.target_name === 'moeserve');

  it('has the moeserve target depending on every helper library', () => {
    expect(addon).toBeDefined();
    const libs = gyp.targets.filter((t) => t !== addon).map((t) => t.target_name);
    expect([...(addon!.dependencies ?? [])].sort()).toEqual(libs.sort());
  });

  it('lists exactly the .cpp files under native/core, native/cpu and native/addon, each once', () => {
    const onDisk = ['native/core', 'native/cpu', 'native/addon'].flatMap((d) => cppFiles(d)).sort();
    const listed = gyp.targets.flatMap((t) => t.sources).sort();
    expect(onDisk.length).toBeGreaterThan(0);
    expect(listed, 'binding.gyp sources vs files on disk').toEqual(onDisk);
    for (const d of ['core', 'cpu', 'addon']) expect(cmake).toContain(`\${CMAKE_SOURCE_DIR}/${d}/*.cpp`);
  });

  it('compiles each file with the per-file ISA (-m) flags CMakeLists.txt gives it', () => {
    const flags = cmakeFileFlags(cmake);
    for (const t of gyp.targets) {
      for (const src of t.sources) {
        // Code-generation flags (-m…) must match; warning flags are gyp's own business.
        const want = (flags.get(src) ?? []).filter((f) => f.startsWith('-m'));
        const have = (t === addon ? [] : (t.cflags_cc ?? [])).filter((f) => f.startsWith('-m'));
        expect([...have].sort(), `flags of ${src} (target ${t.target_name})`).toEqual([...want].sort());
      }
    }
    for (const t of gyp.targets) if (t !== addon) expect(t.type).toBe('static_library');
  });

  it('builds C++17 with exceptions and node-addon-api, as CMakeLists.txt does', () => {
    const d = gyp.target_defaults;
    expect(d.include_dirs).toContain(`<!(node -p "require('node-addon-api').include_dir")`);
    expect(d.include_dirs).toContain('native');
    expect(d.defines).toEqual(expect.arrayContaining(['NAPI_CPP_EXCEPTIONS', 'NAPI_VERSION=8', 'NODE_ADDON_API_DISABLE_DEPRECATED']));
    expect(d['cflags_cc!']).toContain('-fno-exceptions');
    expect(d.cflags_cc).toEqual(expect.arrayContaining(['-std=c++17', '-O3']));
  });
});
