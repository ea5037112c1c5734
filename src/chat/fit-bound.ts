// Refusing text that cannot fit a context before tokenizing it. Tokenizing is the expensive part
// (about 1 s per megabyte with the JS tokenizer), and two cheap lower bounds on the token count exist:
// a token never stands for more than LengthBound.tokenBytes bytes of normalized text, and (where the
// vocabulary has no token spanning two words) a text has at least as many tokens as words. Neither
// ever refuses a text that fits.
import type { LengthBound } from './tokenizer.ts';

/**
 * For the event loop (one Buffer.byteLength): true when `text` certainly has more than `maxTokens`
 * tokens. Pure ASCII is unchanged by every Unicode normalization; other text may shrink by
 * `bound.shrink` first, so the bound is looser for it.
 */
export function cannotFitCheap(text: string, maxTokens: number, bound: LengthBound): boolean {
  const bytes = Buffer.byteLength(text);
  const perToken = bytes === text.length ? bound.tokenBytes : bound.tokenBytes * bound.shrink;
  return bytes > maxTokens * perToken;
}

/** Runs of non-whitespace characters (JS's \s), counted without a regex (a few ms per megabyte). */
export function countWords(text: string): number {
  let words = 0;
  let inWord = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const space = c < 128 ? c === 32 || (c >= 9 && c <= 13) : /\s/.test(text[i]);
    if (!space && !inWord) words++;
    inWord = !space;
  }
  return words;
}

/**
 * For a worker thread (linear, tens of ms per megabyte): the bytes of the text as the tokenizer
 * normalizes it, then its words. The refusal's message (naming `what`), or null when it may fit.
 */
export function cannotFit(text: string, maxTokens: number, bound: LengthBound, what: string): string | null {
  // What the tokenizer's model sees, where the server can compute it: the text itself without a
  // normalizer, or normalized by the one Unicode form it applies.
  const seen = bound.shrink === 1 ? text : bound.form !== null ? text.normalize(bound.form) : null;
  if (seen === null) return cannotFitCheap(text, maxTokens, bound) ? tooLongMessage(what, text, maxTokens, bound) : null;
  if (Buffer.byteLength(seen) > maxTokens * bound.tokenBytes) return tooLongMessage(what, text, maxTokens, bound);
  if (bound.wordsBoundTokens) {
    const words = countWords(seen);
    if (words > maxTokens) {
      return (
        `${what} holds ${words} words (runs of non-space characters) and no token of this tokenizer spans two, ` +
        `so it is more than the ${maxTokens} tokens this model's context holds (max-model-len ${maxTokens}).`
      );
    }
  }
  return null;
}

/** The 400's text: how long the input is and why it cannot fit. */
export function tooLongMessage(what: string, text: string, maxTokens: number, bound: LengthBound): string {
  return (
    `${what} is ${Buffer.byteLength(text)} bytes of text, more than ${maxTokens} tokens can hold in this model's context ` +
    `(max-model-len ${maxTokens}; no token of this tokenizer stands for more than ${bound.tokenBytes} bytes).`
  );
}
