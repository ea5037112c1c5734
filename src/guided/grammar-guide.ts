// A TokenGuide over an xgrammar GrammarMatcher, with an optional reasoning gate: when the prompt
// leaves the model inside <think>, tokens are free until </think>, then (after at most two newline
// tokens, as Qwen3 writes "</think>\n\n") the grammar applies, as vLLM does with a reasoning parser.
import type { GrammarMatcher } from '@mlc-ai/web-xgrammar';
import type { GuideStatus, TokenGuide } from '../engine/types.ts';

export interface ReasoningGate {
  /** The token that ends reasoning (</think>). */
  endToken: number;
  /** Tokens allowed right after it, before the constrained output ("\n", "\n\n"). */
  separatorTokens: readonly number[];
}

const MAX_SEPARATORS = 2;

type Phase = 'reasoning' | 'separator' | 'grammar' | 'done';

export class GrammarGuide implements TokenGuide {
  private phase: Phase;
  private separators = 0;
  private disposed = false;

  constructor(
    private readonly matcher: GrammarMatcher,
    private readonly words: number,
    private readonly stopTokens: ReadonlySet<number>,
    private readonly gate: ReasoningGate | null = null,
  ) {
    this.phase = gate ? 'reasoning' : 'grammar';
  }

  async next(row: Uint32Array): Promise<GuideStatus> {
    this.check();
    if (row.length !== this.words) throw new Error(`guide: mask row has ${row.length} words, the vocabulary needs ${this.words}`);
    if (this.phase === 'reasoning') return 'free';
    if (this.phase === 'done') {
      row.fill(0);
      for (const t of this.stopTokens) row[t >>> 5] |= 1 << (t & 31);
      return 'complete';
    }
    const mask = await this.matcher.getNextTokenBitmask();
    this.check();
    if (mask.length !== this.words) throw new Error(`guide: xgrammar returned ${mask.length} mask words, expected ${this.words}`);
    row.set(new Uint32Array(mask.buffer, mask.byteOffset, mask.length));
    if (this.phase === 'separator') {
      for (const t of this.gate!.separatorTokens) row[t >>> 5] |= 1 << (t & 31);
      return 'masked';
    }
    return this.onlyStopTokens(row) ? 'complete' : 'masked';
  }

  accept(token: number): boolean {
    this.check();
    switch (this.phase) {
      case 'reasoning':
        if (token === this.gate!.endToken) this.phase = 'separator';
        return true;
      case 'separator':
        if (this.gate!.separatorTokens.includes(token)) {
          if (++this.separators >= MAX_SEPARATORS) this.phase = 'grammar';
          return true;
        }
        this.phase = 'grammar';
        return this.acceptGrammar(token);
      case 'grammar':
        return this.acceptGrammar(token);
      case 'done':
        return this.stopTokens.has(token);
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.matcher.dispose();
  }

  private acceptGrammar(token: number): boolean {
    const ok = this.matcher.acceptToken(token);
    if (ok && this.matcher.isTerminated()) this.phase = 'done';
    return ok;
  }

  private onlyStopTokens(row: Uint32Array): boolean {
    let any = false;
    for (let w = 0; w < row.length; w++) {
      let bits = row[w];
      while (bits !== 0) {
        const low = bits & -bits;
        const id = w * 32 + (31 - Math.clz32(low));
        if (!this.stopTokens.has(id)) return false;
        any = true;
        bits ^= low;
      }
    }
    return any;
  }

  private check(): void {
    if (this.disposed) throw new Error('guide: used after dispose()');
  }
}
