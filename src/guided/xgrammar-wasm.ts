// Loads @mlc-ai/web-xgrammar (xgrammar, the grammar engine vLLM uses, compiled to WASM; the WASM
// binary is inlined in the package, so nothing is fetched at run time).
//
// Why not a plain `import`: the package declares "type": "module" but lib/index.js is a UMD bundle
// of emscripten output that uses `require` and `__filename`, which do not exist in an ES module, so
// on Node the import throws "require is not defined in ES module scope" (and exports nothing). We
// run the same file as the CommonJS script it is, with a real require and __filename. Its one
// dynamic `import('module')` needs an import callback that vm only has behind a flag, so that single
// expression is replaced by the equivalent `require('module')`. The version is pinned in
// package.json; a package whose text no longer matches fails here loudly, not at the first request.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import vm from 'node:vm';
import type * as XG from '@mlc-ai/web-xgrammar';

export type XGrammar = typeof XG;

const DYNAMIC_IMPORT = "await import('module')";

let loaded: XGrammar | null = null;

function load(): XGrammar {
  const require = createRequire(import.meta.url);
  const file = path.join(path.dirname(require.resolve('@mlc-ai/web-xgrammar/package.json')), 'lib', 'index.js');
  const source = fs.readFileSync(file, 'utf8');
  const uses = source.split(DYNAMIC_IMPORT).length - 1;
  if (uses !== 1) {
    throw new Error(`${file}: expected one ${DYNAMIC_IMPORT} (found ${uses}); this loader supports @mlc-ai/web-xgrammar 0.1.27`);
  }
  const script = source.replace(DYNAMIC_IMPORT, "require('module')");
  const params = ['exports', 'require', 'module', '__filename', '__dirname'];
  const run = vm.compileFunction(script, params, { filename: file });
  const module = { exports: {} as Record<string, unknown> };
  run.call(module.exports, module.exports, createRequire(file), module, file, path.dirname(file));
  const api = module.exports as unknown as XGrammar;
  for (const name of ['TokenizerInfo', 'GrammarCompiler', 'GrammarMatcher', 'Grammar'] as const) {
    if (typeof api[name] !== 'function') throw new Error(`${file}: ${name} is missing from the xgrammar bundle`);
  }
  return api;
}

/** The xgrammar API (loaded once; its WASM instance starts on the first async call). */
export function xgrammar(): XGrammar {
  loaded ??= load();
  return loaded;
}
