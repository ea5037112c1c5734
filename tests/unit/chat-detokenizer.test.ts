import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadTokenizer, type TextTokenizer } from '../../src/chat/tokenizer.ts';
import { IncrementalDetokenizer, StopStringMatcher } from '../../src/chat/detokenizer.ts';

import { qwen3TokenizerFile } from '../../src/model/tokenizer-files.ts';

const qwenDir = path.dirname(qwen3TokenizerFile('tokenizer.json'));
let tok: TextTokenizer;
beforeAll(() => {
  tok = loadTokenizer(qwenDir);
});

/** Streams ids one at a time; returns every emitted piece (flush last). */
function stream(ids: number[], skipSpecialTokens = true): string[] {
  const detok = new IncrementalDetokenizer(tok, { skipSpecialTokens });
  const pieces = ids.map((id) => detok.push(id));
  pieces.push(detok.flush());
  return pieces;
}

const TEXTS = [
  'Hello 世界 🎉 done',
  '日本語のテキストを少しずつ流します。中文也可以。한국어도.',
  'Emoji family 👨‍👩‍👧‍👦 and flags 🇯🇵🇫🇷, skin tone 👍🏽!',
  'Combining: e\u0301 a\u0308 — math 𝔸𝔹ℂ ∑∫ — ümlaut ß',
  '🎉🎉🎉😀😃😄 𠀀𠀁 (astral CJK)',
];

describe('IncrementalDetokenizer (real Qwen3 tokenizer)', () => {
  it.each(TEXTS)('streams %j token by token to exactly decode(all), never splitting a character', (text) => {
    const ids = tok.encode(text);
    const pieces = stream(ids);
    expect(pieces.join('')).toBe(tok.decode(ids, { skipSpecialTokens: true }));
    // The tokenizer NFC-normalizes on the way in (e + U+0301 becomes é).
    expect(pieces.join('')).toBe(text.normalize('NFC'));
    for (const piece of pieces) expect(piece).not.toContain('\uFFFD');
  });

  it('the inputs really contain tokens that are partial UTF-8 characters on their own', () => {
    const ids = tok.encode('🎉🎉🎉😀😃😄 𠀀𠀁');
    expect(ids.some((id) => tok.decode([id]).includes('\uFFFD'))).toBe(true);
    // and a held piece comes out empty while the character is unfinished
    expect(stream(ids).some((p) => p === '')).toBe(true);
  });

  it('skips special tokens by default and keeps them when asked', () => {
    const ids = tok.encode('<|im_start|>assistant\n<think>\nhi</think>\n\nyo<|im_end|>');
    expect(ids).toContain(151644);
    expect(stream(ids).join('')).toBe('assistant\n<think>\nhi</think>\n\nyo');
    expect(stream(ids, false).join('')).toBe('<|im_start|>assistant\n<think>\nhi</think>\n\nyo<|im_end|>');
  });

  it('random byte-level tokens (invalid UTF-8 included) still concatenate to decode(all)', () => {
    // Single-byte tokens: the 256 byte-level symbols sit at low ids; mixing them yields broken sequences.
    const byteIds = Array.from({ length: 256 }, (_, b) => b).concat([99489, 11162, 236, 231, 144841, 9707]);
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    for (let trial = 0; trial < 200; trial++) {
      const ids = Array.from({ length: 1 + Math.floor(rand() * 24) }, () => byteIds[Math.floor(rand() * byteIds.length)]);
      expect(stream(ids).join('')).toBe(tok.decode(ids, { skipSpecialTokens: true }));
    }
  });

  it('long runs of skipped special tokens or of invalid bytes stay exact', () => {
    const hello = tok.encode('Hello 世界');
    const specials = [...hello, ...Array(100).fill(151645), ...hello];
    expect(stream(specials).join('')).toBe('Hello 世界Hello 世界');
    const loneByte = Array.from({ length: 300 }, (_, id) => id).find((id) => tok.decode([id]) === '\uFFFD')!;
    const garbage = [...hello, ...Array(40).fill(loneByte), ...hello];
    expect(stream(garbage).join('')).toBe(tok.decode(garbage));
  });

  it('an unfinished character at the end comes out of flush() as U+FFFD', () => {
    const detok = new IncrementalDetokenizer(tok);
    // 11162 = "ĠðŁ" (space + F0 9F), 236 = "İ" (8E): " " then an unfinished 4-byte character
    expect(detok.push(11162)).toBe('');
    expect(detok.push(236)).toBe('');
    expect(detok.flush()).toBe(tok.decode([11162, 236]));
    expect(detok.text).toBe(tok.decode([11162, 236]));
  });
});

describe('StopStringMatcher', () => {
  const run = (chunks: string[], stops: string[], include = false) => {
    const m = new StopStringMatcher(stops, include);
    let out = '';
    let stop: string | undefined;
    for (const c of chunks) {
      const r = m.push(c);
      out += r.text;
      if (r.stop !== undefined) {
        stop = r.stop;
        break;
      }
    }
    if (stop === undefined) out += m.flush();
    return { out, stop };
  };

  it('finds a stop string split across chunks and leaves it out', () => {
    expect(run(['The answer', ' is 4', '2.\nUs', 'er: more'], ['\nUser:'])).toEqual({ out: 'The answer is 42.', stop: '\nUser:' });
  });

  it('includes it when asked', () => {
    expect(run(['ab', 'cSTO', 'Pxyz'], ['STOP'], true)).toEqual({ out: 'abcSTOP', stop: 'STOP' });
  });

  it('holds back a possible prefix and releases it when it turns out not to be one', () => {
    const m = new StopStringMatcher(['</answer>']);
    expect(m.push('x </an').text).toBe('x ');
    expect(m.push('d').text).toBe('</and');
    expect(m.push(' </').text).toBe(' ');
    expect(m.flush()).toBe('</');
  });

  it('picks the earliest stop string; at the same place the longer one', () => {
    expect(run(['hello world'], ['world', 'lo'])).toEqual({ out: 'hel', stop: 'lo' });
    expect(run(['a', 'bc'], ['b', 'bc'], true)).toEqual({ out: 'abc', stop: 'bc' });
  });

  it('handles multi-character stop strings with emoji and a stop at the very start', () => {
    expect(run(['🎉', '🎉 party'], ['🎉 p'])).toEqual({ out: '🎉', stop: '🎉 p' });
    expect(run(['STOP now'], ['STOP'])).toEqual({ out: '', stop: 'STOP' });
  });

  it('ignores empty stop strings and passes text straight through without stops', () => {
    expect(run(['abc', 'def'], [''])).toEqual({ out: 'abcdef', stop: undefined });
    const m = new StopStringMatcher([]);
    expect(m.push('xyz').text).toBe('xyz');
  });

  it('catches a stop string across real token boundaries', () => {
    const ids = tok.encode('Sure. 你好世界 END of story');
    const detok = new IncrementalDetokenizer(tok);
    const m = new StopStringMatcher(['世界 E']);
    let out = '';
    let stopped = false;
    for (const id of ids) {
      const r = m.push(detok.push(id));
      out += r.text;
      if (r.stop) {
        stopped = true;
        break;
      }
    }
    expect(stopped).toBe(true);
    expect(out).toBe('Sure. 你好');
  });
});
