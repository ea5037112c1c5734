// Refusing text that cannot fit a context before tokenizing it. Tokenizing is the expensive part
// (seconds per megabyte with the JS tokenizer), and a token never stands for more than
// LengthBound.tokenBytes bytes of normalized text, so a text of B bytes has at least B / tokenBytes
// tokens. Both checks are exact lower bounds on the token count: they never refuse a text that fits.
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

/** For a worker thread: normalizes first where that is what the tokenizer does, so the bound is tight. */
export function cannotFit(text: string, maxTokens: number, bound: LengthBound): boolean {
  if (bound.form === null || bound.shrink === 1) return cannotFitCheap(text, maxTokens, bound);
  return Buffer.byteLength(text.normalize(bound.form)) > maxTokens * bound.tokenBytes;
}

/** The 400's text: how long the input is and why it cannot fit. */
export function tooLongMessage(what: string, text: string, maxTokens: number, bound: LengthBound): string {
  return (
    `${what} is ${Buffer.byteLength(text)} bytes of text, more than ${maxTokens} tokens can hold in this model's context ` +
    `(max-model-len ${maxTokens}; no token of this tokenizer stands for more than ${bound.tokenBytes} bytes).`
  );
}
