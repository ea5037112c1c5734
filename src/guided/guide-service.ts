// The grammar worker's state and calls: compiled grammars, and one GrammarGuide (xgrammar matcher)
// per live guide, named by an id the main thread's proxies (worker-guide.ts) hold.
import { Transfer, type Handlers } from '../worker/rpc.ts';
import { CompiledGrammars } from './compiled-grammars.ts';
import { GrammarGuide } from './grammar-guide.ts';
import type { GuideApi, GuideStats, GuideWorkerData, StepEntry, StepOutcome, StepReply } from './guide-protocol.ts';
import type { GuideOptions, GuideSpec } from './guide-spec.ts';
import { xgrammar } from './xgrammar-wasm.ts';

export class GuideService {
  private readonly grammars: CompiledGrammars;
  private readonly live = new Map<number, GrammarGuide>();
  private readonly stopTokens: Set<number>;
  private readonly words: number;
  private nextId = 1;

  constructor(options: GuideWorkerData) {
    this.grammars = new CompiledGrammars(options);
    this.stopTokens = new Set(options.stopTokenIds);
    this.words = Math.ceil(options.vocabSize / 32);
  }

  async warmup(): Promise<void> {
    await this.grammars.prepare();
  }

  async compile(spec: GuideSpec): Promise<void> {
    await this.grammars.get(spec);
  }

  async guides(spec: GuideSpec, n: number, options: GuideOptions): Promise<number[]> {
    const grammar = await this.grammars.get(spec);
    const { gate } = await this.grammars.prepare();
    const ids: number[] = [];
    try {
      for (let i = 0; i < n; i++) {
        const matcher = await xgrammar().GrammarMatcher.createGrammarMatcher(grammar);
        const id = this.nextId++;
        this.live.set(id, new GrammarGuide(matcher, this.words, this.stopTokens, options.startInReasoning ? gate : null));
        ids.push(id);
      }
    } catch (err) {
      this.dispose(ids);
      throw err;
    }
    return ids;
  }

  async step(entries: StepEntry[]): Promise<Transfer<StepReply>> {
    const masks = new Uint32Array(entries.length * this.words);
    const outcomes: StepOutcome[] = [];
    for (let i = 0; i < entries.length; i++) {
      const { id, tokens } = entries[i];
      try {
        const guide = this.live.get(id);
        if (!guide) throw new Error(`guide ${id} does not exist (disposed, or made by a previous grammar worker)`);
        for (const token of tokens) {
          if (!guide.accept(token)) {
            // The matcher stays where it was; the main thread fails this guide for good.
            throw new Error(`the grammar rejects token ${token}`);
          }
        }
        outcomes.push(await guide.next(masks.subarray(i * this.words, (i + 1) * this.words)));
      } catch (err) {
        outcomes.push({ error: err instanceof Error ? err.message : String(err) });
      }
    }
    return new Transfer({ outcomes, masks: masks.buffer }, [masks.buffer]);
  }

  dispose(ids: number[]): void {
    for (const id of ids) {
      this.live.get(id)?.dispose();
      this.live.delete(id);
    }
  }

  stats(): GuideStats {
    return { matchers: this.live.size, grammars: this.grammars.size };
  }
}

type Served<T> = { [K in keyof T]: T[K] extends (...args: infer A) => infer R ? (...args: A) => R | Transfer<R> | Promise<R | Transfer<R>> : never };

/** The worker's handlers over `service` (GuideApi, checked). */
export function guideHandlers(service: GuideService): Served<GuideApi> & Handlers {
  return {
    warmup: () => service.warmup(),
    compile: (spec) => service.compile(spec),
    guides: (spec, n, options) => service.guides(spec, n, options),
    step: (entries) => service.step(entries),
    dispose: (ids) => service.dispose(ids),
    stats: () => service.stats(),
  };
}
