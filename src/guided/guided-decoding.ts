// Guided decoding for one model: the vocabulary prepared for xgrammar once, grammars compiled to
// token-mask automata (cached, LRU), and a fresh matcher per request choice.
//
// Costs (the JS thread, see bench/guided-mask.ts): preparing the 151,936-token vocabulary takes about
// a second on first use; compiling a grammar 10 ms to a few hundred ms (cached by grammar text);
// a mask per token is usually well under a millisecond.
import fs from 'node:fs';
import type { CompiledGrammar, GrammarCompiler, TokenizerInfo } from '@mlc-ai/web-xgrammar';
import { RequestError, type TokenGuide } from '../engine/types.ts';
import { GrammarGuide, type ReasoningGate } from './grammar-guide.ts';
import { jsonSchemaGrammar } from './json-schema-grammar.ts';
import { toolCallGrammar, type ToolGrammarSpec } from './tool-call-grammar.ts';
import { encodedVocab } from './vocab.ts';
import { xgrammar } from './xgrammar-wasm.ts';

export type GuideSpec =
  /** schema null: any JSON object (response_format json_object). */
  | { kind: 'json'; schema: unknown | null; param: string }
  /** multiple: one or more calls (tool_choice 'required'), else exactly one. */
  | { kind: 'tool_calls'; tools: ToolGrammarSpec[]; multiple: boolean; param: string };

export interface GuidedDecodingOptions {
  /** The model's tokenizer.json (read on first use). */
  tokenizerJson: () => Record<string, unknown>;
  /** Rows of the logits: the model's vocab_size (may exceed the tokenizer's, padding never allowed). */
  vocabSize: number;
  /** Tokens that end generation; a complete output allows only these. */
  stopTokenIds: readonly number[];
  /** Compiled grammars kept (default 64). */
  cacheSize?: number;
}

export interface GuideOptions {
  /** The prompt leaves the model inside <think>: free until </think>, then constrained. */
  startInReasoning?: boolean;
}

/** The grammar text of a spec (RequestError on an unsupported schema). */
export function guideGrammar(spec: GuideSpec): string {
  try {
    return spec.kind === 'json' ? jsonSchemaGrammar(spec.schema, spec.param) : toolCallGrammar(spec.tools, spec.multiple);
  } catch (err) {
    // e.g. enum values nested deeper than the stack: still the client's input, still a 400.
    if (err instanceof RangeError) throw new RequestError(`${spec.param}: the schema is too deeply nested`, spec.param);
    throw err;
  }
}

interface Prepared {
  info: TokenizerInfo;
  compiler: GrammarCompiler;
  gate: ReasoningGate | null;
}

/** A compiled grammar; create a guide per generated sequence. */
export class CompiledGuide {
  constructor(
    private readonly owner: GuidedDecoding,
    readonly grammar: CompiledGrammar,
  ) {}

  createGuide(options: GuideOptions = {}): Promise<TokenGuide> {
    return this.owner.createGuide(this.grammar, options);
  }
}

export class GuidedDecoding {
  private prepared: Promise<Prepared> | null = null;
  private readonly cache = new Map<string, Promise<CompiledGrammar>>();
  private readonly cacheSize: number;
  private readonly stopTokens: Set<number>;
  readonly maskWords: number;

  constructor(private readonly options: GuidedDecodingOptions) {
    if (!Number.isInteger(options.vocabSize) || options.vocabSize < 1) throw new Error(`vocabSize must be a positive integer, got ${options.vocabSize}`);
    this.cacheSize = options.cacheSize ?? 64;
    this.stopTokens = new Set(options.stopTokenIds);
    this.maskWords = Math.ceil(options.vocabSize / 32);
  }

  /** Loads xgrammar and prepares the vocabulary (done lazily otherwise; call it at startup to pay early). */
  warmup(): Promise<void> {
    return this.prepare().then(() => {});
  }

  private prepare(): Promise<Prepared> {
    this.prepared ??= (async () => {
      const xg = xgrammar();
      const json = this.options.tokenizerJson();
      const vocab = encodedVocab(json);
      if (vocab.tokens.length > this.options.vocabSize) {
        throw new Error(`the tokenizer has ${vocab.tokens.length} tokens, more than the model's vocab_size ${this.options.vocabSize}`);
      }
      const info = await xg.TokenizerInfo.createTokenizerInfo(vocab.tokens, vocab.type, false, this.options.vocabSize, [...this.stopTokens]);
      // Our own LRU below bounds the memory; xgrammar's cache would grow without limit.
      const compiler = await xg.GrammarCompiler.createGrammarCompiler(info, false);
      const endToken = vocab.tokens.indexOf('</think>');
      const separatorTokens = ['Ċ', 'ĊĊ'].map((t) => vocab.tokens.indexOf(t)).filter((id) => id >= 0);
      const gate = endToken >= 0 && vocab.type === 'byte_level' ? { endToken, separatorTokens } : null;
      return { info, compiler, gate };
    })();
    this.prepared.catch(() => {
      this.prepared = null;
    });
    return this.prepared;
  }

  /** Compiles (or finds in the cache) the grammar of `spec`. */
  async compile(spec: GuideSpec): Promise<CompiledGuide> {
    const text = guideGrammar(spec);
    let entry = this.cache.get(text);
    if (entry) {
      this.cache.delete(text); // re-insert: most recently used last
    } else {
      entry = this.compileText(text, spec.param);
      entry.catch(() => this.cache.delete(text));
    }
    this.cache.set(text, entry);
    while (this.cache.size > this.cacheSize) {
      const [oldest, compiled] = this.cache.entries().next().value!;
      this.cache.delete(oldest);
      // Matchers keep their own reference to the compiled grammar: disposing here is safe.
      compiled.then((c) => c.dispose(), () => {});
    }
    return new CompiledGuide(this, await entry);
  }

  private async compileText(text: string, param: string): Promise<CompiledGrammar> {
    const { compiler } = await this.prepare();
    try {
      return await compiler.compileGrammar(text, 'root');
    } catch (err) {
      // Our grammars are generated; a rejection is a bug in the generator, reported with the request.
      throw new RequestError(`${param}: the grammar engine could not compile this constraint (${(err as Error).message})`, param);
    }
  }

  /** One guide per choice of a request, over the compiled grammar of `spec`. */
  async guides(spec: GuideSpec, n: number, options: GuideOptions = {}): Promise<TokenGuide[]> {
    const compiled = await this.compile(spec);
    const guides: TokenGuide[] = [];
    try {
      for (let i = 0; i < n; i++) guides.push(await compiled.createGuide(options));
    } catch (err) {
      for (const g of guides) g.dispose();
      throw err;
    }
    return guides;
  }

  /** @internal via CompiledGuide */
  async createGuide(grammar: CompiledGrammar, options: GuideOptions): Promise<TokenGuide> {
    const { gate } = await this.prepare();
    const matcher = await xgrammar().GrammarMatcher.createGrammarMatcher(grammar);
    return new GrammarGuide(matcher, this.maskWords, this.stopTokens, options.startInReasoning ? gate : null);
  }
}

/** Guided decoding for a model whose tokenizer.json is `tokenizerFile` (read on first use). */
export function guidedDecodingFor(tokenizerFile: string, vocabSize: number, stopTokenIds: readonly number[]): GuidedDecoding {
  return new GuidedDecoding({
    tokenizerJson: () => JSON.parse(fs.readFileSync(tokenizerFile, 'utf8')) as Record<string, unknown>,
    vocabSize,
    stopTokenIds,
  });
}
