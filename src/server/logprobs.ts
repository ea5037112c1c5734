// Token logprobs (ids from the engine) rendered in OpenAI's two formats: the legacy completions
// format and the chat format. Token strings come from the tokenizer, or `token_id:N` (vLLM's
// return_tokens_as_token_ids) so that tokens which are not valid text on their own stay distinct.
import type { TokenLogprob } from '../engine/types.ts';

export interface TokenTexts {
  tokenText(id: number): string;
}

/** JSON has no -Infinity; vLLM clamps to -9999 too. */
const clamp = (lp: number) => (Number.isNaN(lp) ? -9999 : Math.max(lp, -9999));

export class LogprobRenderer {
  constructor(
    private readonly texts: TokenTexts,
    private readonly asTokenIds: boolean,
  ) {}

  token(id: number): string {
    return this.asTokenIds ? `token_id:${id}` : this.texts.tokenText(id);
  }

  /**
   * Legacy format for `ids` (prompt and/or generated), `entries[i]` their logprobs (null: none,
   * as for the first prompt token). top_logprobs holds the top `topN` plus the chosen token, as
   * OpenAI and vLLM do. text_offset counts from `startOffset` by the rendered token lengths.
   */
  legacy(ids: readonly number[], entries: readonly (TokenLogprob | null)[], topN: number, startOffset: number): LegacyLogprobs {
    const out: LegacyLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
    let offset = startOffset;
    for (let i = 0; i < ids.length; i++) {
      const text = this.token(ids[i]);
      const entry = entries[i] ?? null;
      out.tokens.push(text);
      out.text_offset.push(offset);
      offset += text.length;
      if (!entry) {
        out.token_logprobs.push(null);
        out.top_logprobs.push(null);
        continue;
      }
      out.token_logprobs.push(clamp(entry.logprob));
      const top: Record<string, number> = {};
      for (const t of entry.top.slice(0, topN)) top[this.token(t.token)] ??= clamp(t.logprob);
      top[text] ??= clamp(entry.logprob);
      out.top_logprobs.push(top);
    }
    return out;
  }

  /** Chat format: one entry per generated token, exactly `topN` alternatives each (fewer if the engine sent fewer). */
  chat(ids: readonly number[], entries: readonly (TokenLogprob | null)[], topN: number): ChatLogprob[] {
    const out: ChatLogprob[] = [];
    for (let i = 0; i < ids.length; i++) {
      const entry = entries[i];
      const token = this.token(ids[i]);
      out.push({
        token,
        logprob: entry ? clamp(entry.logprob) : -9999,
        bytes: utf8Bytes(token),
        top_logprobs: (entry?.top ?? []).slice(0, topN).map((t) => {
          const text = this.token(t.token);
          return { token: text, logprob: clamp(t.logprob), bytes: utf8Bytes(text) };
        }),
      });
    }
    return out;
  }
}

export interface LegacyLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

export interface ChatLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

function utf8Bytes(text: string): number[] {
  return [...Buffer.from(text, 'utf8')];
}

/** Concatenates legacy logprobs of consecutive pieces (prompt, then deltas) of one choice. */
export function appendLegacy(into: LegacyLogprobs, more: LegacyLogprobs): void {
  into.tokens.push(...more.tokens);
  into.token_logprobs.push(...more.token_logprobs);
  into.top_logprobs.push(...more.top_logprobs);
  into.text_offset.push(...more.text_offset);
}

/** One entry of vLLM's prompt_logprobs. */
export interface VllmLogprob {
  logprob: number;
  /** 1 for the most likely token; null when the token is not among the alternatives the engine reported. */
  rank: number | null;
  decoded_token: string;
}

/**
 * vLLM's prompt_logprobs: one entry per prompt token, null for the first (nothing precedes it), else
 * {token id: {logprob, rank, decoded_token}} for the prompt's own token and the `topN` most likely
 * ones.
 */
export function vllmPromptLogprobs(
  render: LogprobRenderer,
  ids: readonly number[],
  entries: readonly (TokenLogprob | null)[],
  topN: number,
): (Record<string, VllmLogprob> | null)[] {
  return ids.map((id, i) => {
    const entry = i === 0 ? null : (entries[i] ?? null);
    if (!entry) return null;
    const at = entry.top.findIndex((t) => t.token === id);
    const out: Record<string, VllmLogprob> = { [id]: { logprob: clamp(entry.logprob), rank: at < 0 ? null : at + 1, decoded_token: render.token(id) } };
    entry.top.slice(0, topN).forEach((t, j) => {
      out[t.token] ??= { logprob: clamp(t.logprob), rank: j + 1, decoded_token: render.token(t.token) };
    });
    return out;
  });
}
