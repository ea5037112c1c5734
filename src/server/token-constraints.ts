// vLLM's allowed_token_ids and bad_words, as a TokenGuide: the engine's allowed-token mask (the path
// guided decoding uses) carries them, alone or over a grammar's guide, so they shape the draw of every
// sampled token (the reported logprobs stay the raw model's, as with logit_bias).
//
// - allowed_token_ids: only these ids can be sampled (EOS too only when listed, as in vLLM).
// - bad_words: each word's token sequences (see badWordSequences); the last token of a sequence is
//   banned whenever the tokens generated just before it are the rest of the sequence (a one-token
//   word is banned always). Only generated tokens count, as in vLLM.
import type { GuideStatus, TokenGuide } from '../engine/types.ts';
import { badRequest } from './errors.ts';
import type { TextService } from '../chat/text-service.ts';
import type { ServerContext } from './context.ts';
import type { CommonBody } from './schemas.ts';

export interface TokenConstraints {
  /** Allowed ids as a bit row (bit id % 32 of word id / 32); null: every id. */
  allowed: Uint32Array | null;
  /** Banned token sequences (bad_words). */
  banned: number[][];
}

/** Most bad_words one request may give (each is checked against the output at every step). */
export const MAX_BAD_WORDS = 1024;

/** allowed_token_ids as a bit row; a 400 naming it for an empty list or an id outside the vocabulary. */
export function allowedTokenRow(ids: readonly number[], vocabSize: number): Uint32Array {
  if (ids.length === 0) throw badRequest("'allowed_token_ids' must not be empty", 'allowed_token_ids');
  const row = new Uint32Array(Math.ceil(vocabSize / 32));
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw badRequest(`allowed_token_ids: ${id} is not a token id in [0, ${vocabSize})`, 'allowed_token_ids');
    }
    row[id >>> 5] |= 1 << (id & 31);
  }
  return row;
}

/**
 * bad_words as token sequences, as vLLM derives them: each word (leading whitespace dropped) tokenized
 * alone, and again after a space when that gives a different first token and as many tokens (the word
 * in the middle of text).
 */
export async function badWordSequences(words: readonly string[], text: TextService, maxTokens: number): Promise<number[][]> {
  if (words.length === 0) return [];
  if (words.length > MAX_BAD_WORDS) throw badRequest(`'bad_words' may hold at most ${MAX_BAD_WORDS} words (got ${words.length})`, 'bad_words');
  const bare = words.map((w) => w.trimStart());
  bare.forEach((w, i) => {
    if (w === '') throw badRequest(`bad_words[${i}] is empty`, 'bad_words');
  });
  const encoded = await text.encode([...bare, ...bare.map((w) => ` ${w}`)], { addSpecialTokens: false, maxTokens, param: 'bad_words' });
  const out: number[][] = [];
  for (let i = 0; i < bare.length; i++) {
    const alone = encoded[i];
    const spaced = encoded[bare.length + i];
    out.push(alone);
    if (spaced.length === alone.length && spaced[0] !== alone[0]) out.push(spaced);
  }
  return out;
}

/** The request's allowed_token_ids and bad_words; null when it has neither. */
export async function tokenConstraints(body: CommonBody, ctx: ServerContext): Promise<TokenConstraints | null> {
  const ids = body.allowed_token_ids;
  const allowed = ids === undefined || ids === null ? null : allowedTokenRow(ids, ctx.limits.vocabSize);
  const banned = await badWordSequences(body.bad_words ?? [], ctx.text, ctx.limits.maxModelLen);
  return allowed === null && banned.length === 0 ? null : { allowed, banned };
}

/** A guide that applies `c` over `inner` (a grammar's guide), or alone. */
export function constrainedGuide(inner: TokenGuide | undefined, c: TokenConstraints): TokenGuide {
  return new ConstrainedGuide(inner, c);
}

class ConstrainedGuide implements TokenGuide {
  /** The tokens generated so far (what bad_words look back over). */
  private readonly output: number[] = [];

  constructor(
    private readonly inner: TokenGuide | undefined,
    private readonly c: TokenConstraints,
  ) {}

  async next(row: Uint32Array): Promise<GuideStatus> {
    const status = this.inner ? await this.inner.next(row) : 'free';
    // A complete grammar allows only the stop tokens: the request ends there, whatever else is banned.
    if (status === 'complete') return status;
    if (status === 'free') row.fill(0xffffffff);
    const { allowed, banned } = this.c;
    if (allowed) for (let i = 0; i < row.length; i++) row[i] &= allowed[i];
    const out = this.output;
    for (const seq of banned) {
      const prefix = seq.length - 1;
      if (prefix > out.length) continue;
      let match = true;
      for (let j = 0; j < prefix && match; j++) match = out[out.length - prefix + j] === seq[j];
      if (match) {
        const last = seq[prefix];
        row[last >>> 5] &= ~(1 << (last & 31));
      }
    }
    return 'masked';
  }

  accept(token: number): boolean {
    this.output.push(token);
    return this.inner ? this.inner.accept(token) : true;
  }

  dispose(): void {
    this.inner?.dispose();
  }
}
