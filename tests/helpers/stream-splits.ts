// Feeding a text to a streaming parser in every way it can arrive: split at every index, char by
// char, and byte by byte through the real incremental detokenizer (as the server streams it).
import fs from 'node:fs';
import { IncrementalDetokenizer } from '../../src/chat/detokenizer.ts';
import { createTokenizer, type TextTokenizer } from '../../src/chat/tokenizer.ts';
import { qwen3TokenizerFile } from '../../src/model/tokenizer-files.ts';
import { byteChars } from './byte-level.ts';

let tokenizer: TextTokenizer | undefined;
let vocab: Record<string, number> | undefined;

export function qwen3Tokenizer(): TextTokenizer {
  if (!tokenizer) {
    const json = JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer.json'), 'utf8'));
    vocab = json.model.vocab;
    tokenizer = createTokenizer(json, JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer_config.json'), 'utf8')));
  }
  return tokenizer;
}

/** Token ids spelling `text` one UTF-8 byte per token (the real vocabulary's single-byte tokens). */
export function byteTokens(text: string): number[] {
  qwen3Tokenizer();
  const chars = byteChars();
  return [...Buffer.from(text, 'utf8')].map((b) => {
    const id = vocab![chars[b]];
    if (id === undefined) throw new Error(`no single-byte token for byte ${b}`);
    return id;
  });
}

/** The text deltas the server's detokenizer yields when `text` arrives one byte-token at a time. */
export function byteDeltas(text: string): string[] {
  const detok = new IncrementalDetokenizer(qwen3Tokenizer());
  const deltas = byteTokens(text).map((id) => detok.push(id));
  deltas.push(detok.flush());
  return deltas;
}

/** Every way of cutting `text` into two pieces (at each UTF-16 index), plus char by char. */
export function* splits(text: string): Generator<string[]> {
  for (let i = 0; i <= text.length; i++) yield [text.slice(0, i), text.slice(i)];
  yield [...text];
}

/** Every way of cutting `text` into three pieces (quadratic: for short texts). */
export function* threeWaySplits(text: string): Generator<string[]> {
  for (let i = 0; i <= text.length; i++) {
    for (let j = i; j <= text.length; j++) yield [text.slice(0, i), text.slice(i, j), text.slice(j)];
  }
}
