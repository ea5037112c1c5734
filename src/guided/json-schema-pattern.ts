// ECMAScript regular expressions (JSON Schema `pattern`, and the `format`s we define as patterns)
// → xgrammar EBNF over the JSON text of a string's characters (between its quotes).
//
// Supported: literals and escapes (\t \n \r \f \v \0 \xHH \uHHHH \u{H..} \cX, escaped syntax
// characters), `.`, classes `[...]`/`[^...]` with ranges, \d \D \w \W \s \S (also inside classes),
// groups `( )`, `(?: )`, `(?<name> )`, alternation, quantifiers ? * + {n} {n,} {n,m} (lazy forms
// too: same language), and anchors ^ at the start and $ at the end of a top-level alternative.
// A pattern matches anywhere in the string (JSON Schema patterns are unanchored), so an
// alternative without ^ may be preceded, and one without $ followed, by any characters.
// Refused, each naming what: lookarounds, backreferences, \b \B, \p{..}, anchors elsewhere.
//
// Characters are matched as the decoded string's characters; the grammar writes each as JSON text:
// '"' as \", '\' as \\, control characters as their short escape or \u00XX, everything else as
// itself (UTF-8). Lone surrogates are never produced.
import { alt, lit, repeat, seq } from './ebnf.ts';

/** A set of code points: sorted, disjoint, non-adjacent [lo, hi] ranges. */
type CharSet = [number, number][];

type Node =
  | { t: 'set'; set: CharSet }
  | { t: 'seq'; items: Node[] }
  | { t: 'alt'; items: Node[] }
  | { t: 'rep'; item: Node; min: number; max: number }
  | { t: 'start' }
  | { t: 'end' };

export class PatternError extends Error {}

/** Bounded repetitions ({n,m}) larger than this are refused: xgrammar expands each count into grammar positions. */
export const MAX_REPEAT = 64;

const MAX_CP = 0x10ffff;

function normalize(ranges: [number, number][]): CharSet {
  const sorted = ranges.filter(([a, b]) => a <= b).sort((x, y) => x[0] - y[0]);
  const out: CharSet = [];
  for (const [a, b] of sorted) {
    const last = out[out.length - 1];
    if (last && a <= last[1] + 1) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

function complement(set: CharSet): CharSet {
  const out: CharSet = [];
  let next = 0;
  for (const [a, b] of set) {
    if (a > next) out.push([next, a - 1]);
    next = b + 1;
  }
  if (next <= MAX_CP) out.push([next, MAX_CP]);
  return out;
}

const DIGIT: CharSet = [[0x30, 0x39]];
const WORD: CharSet = normalize([[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]]);
const SPACE: CharSet = normalize([
  [0x09, 0x0d], [0x20, 0x20], [0xa0, 0xa0], [0x1680, 0x1680], [0x2000, 0x200a], [0x2028, 0x2029], [0x202f, 0x202f], [0x205f, 0x205f], [0x3000, 0x3000], [0xfeff, 0xfeff],
]);
const LINE_TERMINATORS: CharSet = [[0x0a, 0x0a], [0x0d, 0x0d], [0x2028, 0x2029]];
export const ANY_CHAR: CharSet = [[0, MAX_CP]];
const DOT: CharSet = complement(LINE_TERMINATORS);

class Parser {
  private i = 0;
  constructor(private readonly src: string) {}

  parse(): Node {
    const node = this.alternation(true);
    if (this.i < this.src.length) this.error(`unbalanced ')' at offset ${this.i}`);
    return node;
  }

  private error(message: string): never {
    throw new PatternError(message);
  }

  private peek(k = 0): string | undefined {
    return this.src[this.i + k];
  }

  private alternation(top: boolean): Node {
    const items = [this.sequence(top)];
    while (this.peek() === '|') {
      this.i++;
      items.push(this.sequence(top));
    }
    return items.length === 1 ? items[0] : { t: 'alt', items };
  }

  private sequence(top: boolean): Node {
    const items: Node[] = [];
    while (this.i < this.src.length && this.peek() !== '|' && this.peek() !== ')') {
      const c = this.peek()!;
      if (c === '^' || c === '$') {
        this.i++;
        const atStart = c === '^' && items.length === 0;
        const atEnd = c === '$' && (this.i === this.src.length || this.peek() === '|' || (this.peek() === ')' && !top));
        if (!top || !(atStart || atEnd)) this.error(`uses the anchor '${c}' inside the pattern (only ^ at the start and $ at the end of an alternative are supported)`);
        items.push({ t: c === '^' ? 'start' : 'end' });
        continue;
      }
      items.push(this.quantified(this.atom()));
    }
    return { t: 'seq', items };
  }

  private quantified(atom: Node): Node {
    let node = atom;
    for (;;) {
      const c = this.peek();
      let min: number;
      let max: number;
      if (c === '*') [min, max] = [0, Infinity];
      else if (c === '+') [min, max] = [1, Infinity];
      else if (c === '?') [min, max] = [0, 1];
      else if (c === '{') {
        const m = /^\{(\d+)(,(\d*))?\}/.exec(this.src.slice(this.i));
        if (!m) return node; // a literal '{' (annex B), handled by atom() next time round
        min = Number(m[1]);
        max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
        if (max < min) this.error(`has the quantifier ${m[0]} with its numbers out of order`);
        if ((max === Infinity ? min : max) > MAX_REPEAT) this.error(`uses the quantifier ${m[0]} (bounded repetition above ${MAX_REPEAT} is not supported)`);
        this.i += m[0].length - 1;
      } else return node;
      this.i++;
      if (this.peek() === '?') this.i++; // lazy: same language
      if (node.t === 'start' || node.t === 'end') this.error('quantifies an anchor');
      if (node.t === 'rep') this.error("has a quantifier after a quantifier (a possessive or doubled quantifier)");
      node = { t: 'rep', item: node, min, max };
    }
  }

  private atom(): Node {
    const c = this.src[this.i++];
    switch (c) {
      case '.':
        return { t: 'set', set: DOT };
      case '[':
        return { t: 'set', set: this.charClass() };
      case '(': {
        if (this.peek() === '?') {
          const kind = this.src.slice(this.i, this.i + 3);
          if (kind.startsWith('?:')) this.i += 2;
          else if (kind === '?<=' || kind === '?<!') this.error(`uses a lookbehind '(${kind}', which guided decoding does not support`);
          else if (kind.startsWith('?=') || kind.startsWith('?!')) this.error(`uses a lookahead '(${kind.slice(0, 2)}', which guided decoding does not support`);
          else if (kind.startsWith('?<')) {
            const end = this.src.indexOf('>', this.i);
            if (end < 0) this.error('has an unterminated group name');
            this.i = end + 1;
          } else this.error(`uses the group syntax '(${kind}', which guided decoding does not support`);
        }
        const inner = this.alternation(false);
        if (this.src[this.i++] !== ')') this.error("has an unterminated '('");
        return inner;
      }
      case ')':
        return this.error(`has an unbalanced ')'`);
      case '*':
      case '+':
      case '?':
        return this.error(`has a quantifier '${c}' with nothing to repeat`);
      case '\\':
        return { t: 'set', set: this.escape(false) };
      case undefined:
        return this.error('ends unexpectedly');
      default: {
        const cp = this.src.codePointAt(this.i - 1)!;
        if (cp > 0xffff) this.i++;
        return { t: 'set', set: [[cp, cp]] };
      }
    }
  }

  /** After a backslash: the character set it stands for. */
  private escape(inClass: boolean): CharSet {
    const c = this.src[this.i++];
    const one = (cp: number): CharSet => [[cp, cp]];
    switch (c) {
      case undefined:
        return this.error('ends with a lone backslash');
      case 'd':
        return DIGIT;
      case 'D':
        return complement(DIGIT);
      case 'w':
        return WORD;
      case 'W':
        return complement(WORD);
      case 's':
        return SPACE;
      case 'S':
        return complement(SPACE);
      case 't':
        return one(9);
      case 'n':
        return one(10);
      case 'v':
        return one(11);
      case 'f':
        return one(12);
      case 'r':
        return one(13);
      case 'b':
        if (inClass) return one(8);
        return this.error("uses the word boundary '\\b', which guided decoding does not support");
      case 'B':
        return this.error("uses the assertion '\\B', which guided decoding does not support");
      case 'p':
      case 'P':
        return this.error(`uses the Unicode property escape '\\${c}{...}', which guided decoding does not support`);
      case 'k':
        return this.error("uses a backreference '\\k<...>', which guided decoding does not support");
      case 'c': {
        const l = this.peek();
        if (l && /[A-Za-z]/.test(l)) {
          this.i++;
          return one(l.charCodeAt(0) % 32);
        }
        return this.error("has an incomplete '\\c' escape");
      }
      case 'x': {
        const m = /^[0-9a-fA-F]{2}/.exec(this.src.slice(this.i));
        if (!m) return this.error("has an incomplete '\\x' escape");
        this.i += 2;
        return one(parseInt(m[0], 16));
      }
      case 'u': {
        const braces = /^\{([0-9a-fA-F]{1,6})\}/.exec(this.src.slice(this.i));
        if (braces) {
          this.i += braces[0].length;
          return one(parseInt(braces[1], 16));
        }
        const m = /^[0-9a-fA-F]{4}/.exec(this.src.slice(this.i));
        if (!m) return this.error("has an incomplete '\\u' escape");
        this.i += 4;
        let cp = parseInt(m[0], 16);
        const low = /^\\u(d[c-f][0-9a-f]{2})/i.exec(this.src.slice(this.i));
        if (cp >= 0xd800 && cp <= 0xdbff && low) {
          this.i += 6;
          cp = 0x10000 + ((cp - 0xd800) << 10) + (parseInt(low[1], 16) - 0xdc00);
        }
        return one(cp);
      }
      case '0':
        if (!/[0-9]/.test(this.peek() ?? '')) return one(0);
        return this.error("uses an octal escape, which guided decoding does not support");
      default:
        if (/[1-9]/.test(c)) return this.error(`uses a backreference '\\${c}', which guided decoding does not support`);
        if (c === '-' && !inClass) return one(0x2d);
        return one(this.src.codePointAt(this.i - 1)!);
    }
  }

  private charClass(): CharSet {
    let negate = false;
    if (this.peek() === '^') {
      negate = true;
      this.i++;
    }
    const ranges: [number, number][] = [];
    // One class member: a single code point (for ranges) or a set (\d and friends).
    const member = (): { cp: number } | { set: CharSet } => {
      const c = this.src[this.i++];
      if (c === undefined) this.error("has an unterminated '['");
      if (c === '\\') {
        const set = this.escape(true);
        return set.length === 1 && set[0][0] === set[0][1] && !/[dDwWsS]/.test(this.src[this.i - 1]) ? { cp: set[0][0] } : { set };
      }
      if (c === '[' && this.peek() === ':') this.error("uses a POSIX class '[:...:]', which ECMAScript does not have");
      const cp = this.src.codePointAt(this.i - 1)!;
      if (cp > 0xffff) this.i++;
      return { cp };
    };
    let first = true;
    while (this.peek() !== ']' || (first && false)) {
      if (this.i >= this.src.length) this.error("has an unterminated '['");
      first = false;
      const a = member();
      if ('set' in a) {
        ranges.push(...a.set);
        continue;
      }
      if (this.peek() === '-' && this.peek(1) !== ']' && this.peek(1) !== undefined) {
        this.i++;
        const b = member();
        if ('set' in b) this.error('has a class range with a class escape as its end');
        if (b.cp < a.cp) this.error('has a class range out of order');
        ranges.push([a.cp, b.cp]);
      } else ranges.push([a.cp, a.cp]);
    }
    this.i++;
    const set = normalize(ranges);
    return negate ? complement(set) : set;
  }
}

/** Parses `pattern`; PatternError says what is unsupported. */
export function parsePattern(pattern: string): Node {
  return new Parser(pattern).parse();
}

/** The [min, max] length (in characters) of the strings a node matches (max may be Infinity). */
function lengths(n: Node): [number, number] {
  switch (n.t) {
    case 'set':
      return [1, 1];
    case 'start':
    case 'end':
      return [0, 0];
    case 'seq':
      return n.items.map(lengths).reduce(([a, b], [c, d]) => [a + c, b + d], [0, 0]);
    case 'alt': {
      const ls = n.items.map(lengths);
      return [Math.min(...ls.map((l) => l[0])), Math.max(...ls.map((l) => l[1]))];
    }
    case 'rep': {
      const [a, b] = lengths(n.item);
      return [a * n.min, n.max === Infinity ? (b === 0 ? 0 : Infinity) : b * n.max];
    }
  }
}

function isEmptySet(n: Node): boolean {
  return n.t === 'set' && n.set.length === 0;
}

const SHORT_ESCAPES: Record<number, string> = { 8: '\\b', 9: '\\t', 10: '\\n', 12: '\\f', 13: '\\r', 0x22: '\\"', 0x5c: '\\\\' };

/**
 * xgrammar character-class text of one code point: ASCII controls as \xHH, other non-ASCII as the
 * character itself (web-xgrammar 0.1.27 misreads \uHHHH inside classes).
 */
function classChar(cp: number): string {
  if (cp === 0x5c || cp === 0x5d || cp === 0x2d || cp === 0x5e) return `\\${String.fromCodePoint(cp)}`;
  if (cp < 0x20 || cp === 0x7f) return `\\x${cp.toString(16).padStart(2, '0')}`;
  return String.fromCodePoint(cp);
}

/** EBNF for one character of `set`, written as JSON string text. Null when the set is empty. */
export function charSetEbnf(set: CharSet): string | null {
  // Characters written as themselves: the set minus controls, '"' and '\' (surrogates never
  // occur in UTF-8 text, so a class may include or exclude them alike).
  const plain = normalize(
    set.flatMap(([a, b]) =>
      [[Math.max(a, 0x20), Math.min(b, 0x21)], [Math.max(a, 0x23), Math.min(b, 0x5b)], [Math.max(a, 0x5d), b]].filter(([x, y]) => x <= y) as [number, number][],
    ),
  );
  const parts: string[] = [];
  if (plain.length > 0) {
    const text = (r: CharSet) => r.map(([a, b]) => (a === b ? classChar(a) : `${classChar(a)}-${classChar(b)}`)).join('');
    // (Surrogates never occur in text: left out of what a negated class lists.)
    const excluded = normalize(complement(plain).flatMap(([a, b]) => [[a, Math.min(b, 0xd7ff)], [Math.max(a, 0xe000), b]] as [number, number][]));
    if (plain.length === 1 && plain[0][0] === plain[0][1]) parts.push(lit(String.fromCodePoint(plain[0][0])));
    // xgrammar mishandles negated classes that exclude code points 0x80-0xFF (it clamps them to
    // bytes, and may abort): those are written as positive classes.
    else if ((excluded.length < plain.length || plain[plain.length - 1][1] === MAX_CP) && !excluded.some(([a, b]) => a <= 0xff && b >= 0x80)) parts.push(`[^${text(excluded)}]`);
    else {
      // Positive classes are reliable there for ASCII only: the non-ASCII part is written as
      // [^\x00-\x7f] when it is all of it, as literals when small, and otherwise only its Latin-1
      // part is kept (a subset: every output still matches).
      const ascii = normalize(plain.map(([a, b]) => [a, Math.min(b, 0x7f)] as [number, number]));
      const high = normalize(plain.map(([a, b]) => [Math.max(a, 0x80), b] as [number, number]));
      if (ascii.length > 0) parts.push(ascii.length === 1 && ascii[0][0] === ascii[0][1] ? lit(String.fromCodePoint(ascii[0][0])) : `[${text(ascii)}]`);
      const count = high.reduce((n, [a, b]) => n + b - a + 1, 0);
      const all = complement(high).every(([a, b]) => b < 0x80 || (a >= 0xd800 && b <= 0xdfff));
      if (all) parts.push('[^\\x00-\\x7f]');
      else {
        const kept = count <= 256 ? high : normalize(high.map(([a, b]) => [a, Math.min(b, 0xff)] as [number, number]));
        for (const [a, b] of kept) for (let cp = a; cp <= b; cp++) parts.push(lit(String.fromCodePoint(cp)));
      }
    }
  }
  for (const cp of [...Array.from({ length: 0x20 }, (_, i) => i), 0x22, 0x5c]) {
    if (set.some(([a, b]) => a <= cp && cp <= b)) parts.push(lit(SHORT_ESCAPES[cp] ?? `\\u${cp.toString(16).padStart(4, '0')}`));
  }
  return parts.length === 0 ? null : alt(parts);
}

export interface PatternGrammar {
  /** EBNF for the string's JSON text between the quotes. */
  body: string;
  /** Lengths (characters) of the strings it matches: [min, max], max may be Infinity. */
  minLength: number;
  maxLength: number;
  /** For a whole-string pattern that is one class repeated (^C*$, ^C+$, ^C{n,}$): C's EBNF. */
  repeated?: string;
}

/**
 * The grammar of JSON string contents matching `pattern` anywhere (as JSON Schema `pattern`), or
 * wholly when `whole` (a format). `anyChar` names a rule for any one string character.
 */
export function patternGrammar(pattern: string, anyChar: string, whole = false): PatternGrammar {
  const root = parsePattern(pattern);
  const alternatives = root.t === 'alt' ? root.items : [root];
  let minLength = Infinity;
  let maxLength = 0;
  const bodies: string[] = [];
  for (const a of alternatives) {
    const items = a.t === 'seq' ? [...a.items] : [a];
    const anchoredStart = whole || items[0]?.t === 'start';
    const anchoredEnd = whole || items[items.length - 1]?.t === 'end';
    const core: Node = { t: 'seq', items: items.filter((n) => n.t !== 'start' && n.t !== 'end') };
    const body = ebnf(core);
    if (body === null) continue; // an alternative that can match nothing (an empty class)
    const [lo, hi] = lengths(core);
    minLength = Math.min(minLength, lo);
    maxLength = Math.max(maxLength, anchoredStart && anchoredEnd ? hi : Infinity);
    bodies.push(seq(anchoredStart ? '""' : `${anyChar}*`, body, anchoredEnd ? '""' : `${anyChar}*`));
  }
  if (bodies.length === 0) throw new PatternError('matches no string');
  let repeated: string | undefined;
  if (alternatives.length === 1) {
    const items = (root.t === 'seq' ? root.items : [root]).filter((n) => n.t !== 'start' && n.t !== 'end');
    const anchored = whole || (root.t === 'seq' && root.items[0]?.t === 'start' && root.items[root.items.length - 1]?.t === 'end');
    const only = items[0];
    if (anchored && items.length === 1 && only.t === 'rep' && only.max === Infinity && only.item.t === 'set') repeated = charSetEbnf(only.item.set) ?? undefined;
  }
  return { body: alt(bodies), minLength, maxLength, repeated };
}

/** EBNF of a node (no anchors inside); null when it matches nothing. */
function ebnf(n: Node): string | null {
  switch (n.t) {
    case 'set':
      return charSetEbnf(n.set);
    case 'start':
    case 'end':
      return '""';
    case 'seq': {
      const parts = n.items.map(ebnf);
      if (parts.some((p) => p === null)) return null;
      return seq(...(parts as string[]));
    }
    case 'alt': {
      const parts = n.items.map(ebnf).filter((p): p is string => p !== null);
      return parts.length === 0 ? null : alt(parts);
    }
    case 'rep': {
      if (isEmptySet(n.item)) return n.min === 0 ? '""' : null;
      const item = ebnf(n.item);
      if (item === null) return n.min === 0 ? '""' : null;
      if (item === '""') return '""';
      const wrapped = /^[("[]/.test(item) && balancedGroup(item) ? item : `(${item})`;
      return repeat(wrapped, n.min, n.max);
    }
  }
}

/** True when `s` is one parenthesised group, class or literal (so a postfix operator applies to all of it). */
function balancedGroup(s: string): boolean {
  if (s.startsWith('"')) return /^"(?:[^"\\]|\\.)*"$/.test(s);
  if (s.startsWith('[')) return /^\[(?:[^\]\\]|\\.)*\]$/.test(s);
  let depth = 0;
  let inLit = false;
  let inClass = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '\\') {
      i++;
      continue;
    }
    if (inLit) inLit = c !== '"';
    else if (inClass) inClass = c !== ']';
    else if (c === '"') inLit = true;
    else if (c === '[') inClass = true;
    else if (c === '(') depth++;
    else if (c === ')' && --depth === 0 && i !== s.length - 1) return false;
  }
  return depth === 0;
}
