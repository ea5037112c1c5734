// The grammar worker's xgrammar state: the vocabulary prepared once, and grammars compiled to
// token-mask automata, cached LRU by grammar text. Runs in the grammar worker only (guide-worker.ts):
// compiling is synchronous WASM work, 10 ms to seconds, that must not block the server's event loop.
import fs from 'node:fs';
import type { CompiledGrammar, GrammarCompiler } from '@mlc-ai/web-xgrammar';
import { RequestError } from '../engine/types.ts';
import type { ReasoningGate } from './grammar-guide.ts';
import { guideGrammar } from './guide-grammar.ts';
import type { GuideWorkerData } from './guide-protocol.ts';
import type { GuideSpec } from './guide-spec.ts';
import { encodedVocab } from './vocab.ts';
import { xgrammar } from './xgrammar-wasm.ts';

interface Prepared {
  compiler: GrammarCompiler;
  gate: ReasoningGate | null;
}

export class CompiledGrammars {
  private prepared: Promise<Prepared> | null = null;
  private readonly cache = new Map<string, Promise<CompiledGrammar>>();
  private readonly cacheSize: number;

  constructor(private readonly options: GuideWorkerData) {
    this.cacheSize = options.cacheSize ?? 64;
  }

  /** Grammars in the cache. */
  get size(): number {
    return this.cache.size;
  }

  /** Loads xgrammar and prepares the vocabulary (about a second); later calls share the result. */
  prepare(): Promise<Prepared> {
    this.prepared ??= (async () => {
      const xg = xgrammar();
      const json = JSON.parse(fs.readFileSync(this.options.tokenizerFile, 'utf8')) as Record<string, unknown>;
      const vocab = encodedVocab(json);
      if (vocab.tokens.length > this.options.vocabSize) {
        throw new Error(`the tokenizer has ${vocab.tokens.length} tokens, more than the model's vocab_size ${this.options.vocabSize}`);
      }
      const info = await xg.TokenizerInfo.createTokenizerInfo(vocab.tokens, vocab.type, false, this.options.vocabSize, [...this.options.stopTokenIds]);
      // Our own LRU below bounds the memory; xgrammar's cache would grow without limit.
      const compiler = await xg.GrammarCompiler.createGrammarCompiler(info, false);
      const endToken = vocab.tokens.indexOf('</think>');
      const separatorTokens = ['Ċ', 'ĊĊ'].map((t) => vocab.tokens.indexOf(t)).filter((id) => id >= 0);
      const gate = endToken >= 0 && vocab.type === 'byte_level' ? { endToken, separatorTokens } : null;
      return { compiler, gate };
    })();
    this.prepared.catch(() => {
      this.prepared = null;
    });
    return this.prepared;
  }

  /** The compiled grammar of `spec`, from the cache or compiled now (RequestError on a bad spec). */
  get(spec: GuideSpec): Promise<CompiledGrammar> {
    // A regular expression becomes a grammar by xgrammar's own converter (as vLLM's guided_regex), then
    // is cached by that grammar's text like any other.
    if (spec.kind === 'regex') return regexGrammar(spec.pattern, spec.param).then((grammar) => this.get({ kind: 'grammar', grammar, param: spec.param }));
    let text: string;
    try {
      text = guideGrammar(spec);
    } catch (err) {
      return Promise.reject(err);
    }
    let entry = this.cache.get(text);
    if (entry) {
      this.cache.delete(text); // re-insert: most recently used last
    } else {
      entry = this.compile(text, spec.param);
      entry.catch(() => this.cache.delete(text));
    }
    this.cache.set(text, entry);
    while (this.cache.size > this.cacheSize) {
      const [oldest, compiled] = this.cache.entries().next().value!;
      this.cache.delete(oldest);
      // Matchers keep their own reference to the compiled grammar, so disposing is safe once no
      // caller still holds it to create one: callers create matchers within the microtasks that
      // follow get() (after warm-up, xgrammar calls resolve without waiting for any event), so a
      // macrotask later none does.
      compiled.then((c) => setImmediate(() => c.dispose()), () => {});
    }
    return entry;
  }

  private async compile(text: string, param: string): Promise<CompiledGrammar> {
    const { compiler } = await this.prepare();
    try {
      return await xgrammarCall(() => compiler.compileGrammar(text, 'root'));
    } catch (err) {
      // A request's own grammar (guided_grammar) that does not parse; for generated grammars, a bug in
      // the generator, reported with the request.
      throw new RequestError(`${param}: the grammar engine could not compile this constraint (${(err as Error).message})`, param);
    }
  }
}

/** A regular expression as xgrammar's EBNF (its structural-tag regex format converts it); RequestError when it does not parse. */
async function regexGrammar(pattern: string, param: string): Promise<string> {
  try {
    const grammar = await xgrammarCall(() => xgrammar().Grammar.fromStructuralTag({ type: 'structural_tag', format: { type: 'regex', pattern } }));
    const text = grammar.toString();
    grammar.dispose();
    return text;
  } catch (err) {
    throw new RequestError(`${param}: the regular expression is not supported (${(err as Error).message})`, param);
  }
}

/**
 * Runs an xgrammar call. On bad input xgrammar aborts its WASM call ("Aborted()") after printing the
 * reason on stderr ("[FATAL] file.cc:552: EBNF parser error at line 1, column 16: ..."): that reason
 * becomes the error's message, and neither line reaches the log.
 */
async function xgrammarCall<T>(run: () => Promise<T>): Promise<T> {
  // The WASM module bound console.error when it started, so its lines are caught where they are written.
  const stderr = process.stderr;
  const write = stderr.write;
  const reasons: string[] = [];
  stderr.write = function (this: typeof stderr, chunk: unknown, ...rest: unknown[]): boolean {
    const text = typeof chunk === 'string' ? chunk : Buffer.isBuffer(chunk) ? chunk.toString('utf8') : null;
    if (text !== null) {
      const kept = text.split('\n').filter((line) => {
        const fatal = /^\[FATAL\] [^\s:]*:\d+: (.*)$/.exec(line);
        if (fatal) reasons.push(fatal[1].trim());
        return !fatal && !line.startsWith('Aborted(');
      });
      if (kept.join('').trim() === '') return true;
    }
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof stderr.write;
  try {
    return await run();
  } catch (err) {
    throw new Error(reasons.length > 0 ? reasons.join('; ') : (err as Error).message);
  } finally {
    stderr.write = write;
  }
}
