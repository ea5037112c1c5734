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
      return await compiler.compileGrammar(text, 'root');
    } catch (err) {
      // Our grammars are generated; a rejection is a bug in the generator, reported with the request.
      throw new RequestError(`${param}: the grammar engine could not compile this constraint (${(err as Error).message})`, param);
    }
  }
}
