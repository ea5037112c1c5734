// EBNF for JSON numbers within bounds: decimal strings without leading zeros, built digit by digit
// (the classic integer-range-to-regex construction). Magnitudes are capped at MAX_DIGITS digits so
// every number a grammar allows is finite and exactly representable as a double's integer part.
import { alt, lit, repeat, seq } from './ebnf.ts';

export const MAX_DIGITS = 15;
const MAX_MAGNITUDE = 10n ** BigInt(MAX_DIGITS) - 1n;
/** Fraction digits of an unbounded number / of a bounded number's non-zero fraction. */
const MAX_FRACTION_DIGITS = 15;

const digitClass = (lo: string, hi: string) => (lo === hi ? lit(lo) : `[${lo}-${hi}]`);
const anyDigits = (n: number) => repeat('[0-9]', n, n);

/** Decimal strings of equal length n with lo <= s <= hi (lo, hi of length n). */
function sameLength(lo: string, hi: string): string {
  if (lo === hi) return lit(lo);
  if (lo.length === 1) return digitClass(lo, hi);
  if (lo[0] === hi[0]) return seq(lit(lo[0]), sameLength(lo.slice(1), hi.slice(1)));
  const rest = lo.length - 1;
  const loFree = /^0*$/.test(lo.slice(1));
  const hiFree = /^9*$/.test(hi.slice(1));
  const first = loFree ? lo[0] : String(Number(lo[0]) + 1);
  const last = hiFree ? hi[0] : String(Number(hi[0]) - 1);
  const parts: string[] = [];
  if (!loFree) parts.push(seq(lit(lo[0]), sameLength(lo.slice(1), '9'.repeat(rest))));
  if (first <= last) parts.push(seq(digitClass(first, last), anyDigits(rest)));
  if (!hiFree) parts.push(seq(lit(hi[0]), sameLength('0'.repeat(rest), hi.slice(1))));
  return alt(parts);
}

/** Decimal strings (no sign, no leading zeros) of the integers in [a, b], 0 <= a <= b <= MAX_MAGNITUDE. */
function magnitude(a: bigint, b: bigint): string {
  if (a === 0n && b === MAX_MAGNITUDE) return alt([lit('0'), seq('[1-9]', repeat('[0-9]', 0, MAX_DIGITS - 1))]);
  const parts: string[] = [];
  const lenA = a.toString().length;
  const lenB = b.toString().length;
  for (let len = lenA; len <= lenB; len++) {
    const floor = len === 1 ? 0n : 10n ** BigInt(len - 1);
    const lo = a > floor ? a : floor;
    const top = 10n ** BigInt(len) - 1n;
    const hi = b < top ? b : top;
    if (lo <= hi) parts.push(sameLength(lo.toString(), hi.toString()));
  }
  return alt(parts);
}

const clamp = (v: bigint) => (v > MAX_MAGNITUDE ? MAX_MAGNITUDE : v);

/** Integers in [lo, hi] (null: unbounded on that side); null when the range is empty. */
export function integerRange(lo: bigint | null, hi: bigint | null): string | null {
  if (lo !== null && hi !== null && lo > hi) return null;
  const parts: string[] = [];
  if (hi === null || hi >= 0n) {
    const a = lo === null || lo < 0n ? 0n : lo;
    const b = hi === null ? MAX_MAGNITUDE : clamp(hi);
    if (a <= b) parts.push(magnitude(a, b));
  }
  if (lo === null || lo < 0n) {
    // Negative values as "-" and a magnitude of at least 1 ("-0" is left out).
    const a = hi === null || hi >= 0n ? 1n : -hi;
    const b = lo === null ? MAX_MAGNITUDE : clamp(-lo);
    if (a <= b) parts.push(seq(lit('-'), magnitude(a, b)));
  }
  return parts.length === 0 ? null : alt(parts);
}

export const UNBOUNDED_INTEGER = integerRange(null, null)!;

export const UNBOUNDED_NUMBER = seq(
  UNBOUNDED_INTEGER,
  `(${lit('.')} ${repeat('[0-9]', 1, MAX_FRACTION_DIGITS)})?`,
  `([eE] ("+" | "-")? ${repeat('[0-9]', 1, 2)})?`,
);

export interface Bound {
  value: bigint;
  exclusive: boolean;
}

/**
 * Numbers (integral or decimal, no exponent) within integral bounds; null when none fits.
 * A value with a non-zero fraction lies strictly between I and I+1 (or -(I+1) and -I), so only the
 * integer part I needs a range; an integral value (optionally written with ".0") needs the
 * integer range with exclusive bounds moved in by one.
 */
export function numberRange(lo: Bound | null, hi: Bound | null): string | null {
  const intLo = lo === null ? null : lo.exclusive ? lo.value + 1n : lo.value;
  const intHi = hi === null ? null : hi.exclusive ? hi.value - 1n : hi.value;
  const fraction = seq(lit('.'), repeat('[0-9]', 0, MAX_FRACTION_DIGITS - 1), '[1-9]');
  const parts: string[] = [];
  const integral = integerRange(intLo, intHi);
  if (integral !== null) parts.push(seq(integral, `(${lit('.')} ${repeat(lit('0'), 1, 3)})?`));
  // Positive with a fraction: I in [max(lo, 0), hi - 1].
  const posLo = lo === null || lo.value < 0n ? 0n : lo.value;
  const posHi = hi === null ? MAX_MAGNITUDE : clamp(hi.value - 1n);
  if (posLo <= posHi) parts.push(seq(magnitude(posLo, posHi), fraction));
  // Negative with a fraction: -(I.F) with I in [max(-hi, 0), -lo - 1].
  const negLo = hi === null || hi.value > 0n ? 0n : -hi.value;
  const negHi = lo === null ? MAX_MAGNITUDE : clamp(-lo.value - 1n);
  if (negLo <= negHi) parts.push(seq(lit('-'), magnitude(negLo, negHi), fraction));
  return parts.length === 0 ? null : alt(parts);
}

/** A decimal bound: sign, integer part, fraction digits (no trailing zeros), exclusive or not. */
export interface DecimalBound {
  negative: boolean;
  int: bigint;
  frac: string;
  exclusive: boolean;
}

/** The exact decimal of a finite double's shortest representation; null when it has more than MAX_FRACTION_DIGITS fraction digits. */
export function toDecimal(v: number, exclusive: boolean): DecimalBound | null {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:e([+-]\d+))?$/.exec(String(v));
  if (!m) return null;
  let digits = m[2] + (m[3] ?? '');
  let point = m[2].length + Number(m[4] ?? 0);
  if (point < 0) {
    digits = '0'.repeat(-point) + digits;
    point = 0;
  }
  if (point > digits.length) digits += '0'.repeat(point - digits.length);
  const frac = digits.slice(point).replace(/0+$/, '');
  if (frac.length > MAX_FRACTION_DIGITS) return null;
  const int = BigInt(digits.slice(0, point) || '0');
  return { negative: m[1] === '-' && (int !== 0n || frac !== ''), int, frac, exclusive };
}

interface Mag {
  int: bigint;
  frac: string;
  exclusive: boolean;
}

/**
 * Fraction digit strings (1..n digits) F with lo <(=) 0.F <(=) hi, digit by digit; lo/hi are the
 * bound's remaining digits while equal so far ('' once exhausted), null once strictly past it.
 */
function fraction(lo: string | null, loEx: boolean, hi: string | null, hiEx: boolean, n: number): string | null {
  if (n === 0) return null;
  if (lo === null && hi === null) return repeat('[0-9]', 1, n);
  const groups = new Map<string, { digits: number[]; lo: string | null; hi: string | null }>();
  for (let c = 0; c <= 9; c++) {
    let nextLo: string | null = null;
    if (lo !== null) {
      const l = Number(lo[0] ?? '0');
      if (c < l) continue;
      nextLo = c > l ? null : lo.slice(1);
    }
    let nextHi: string | null = null;
    if (hi !== null) {
      const h = Number(hi[0] ?? '0');
      if (c > h) continue;
      nextHi = c < h ? null : hi.slice(1);
    }
    const key = `${nextLo}|${nextHi}`;
    const group = groups.get(key) ?? { digits: [], lo: nextLo, hi: nextHi };
    group.digits.push(c);
    groups.set(key, group);
  }
  const parts: string[] = [];
  for (const { digits, lo: l, hi: h } of groups.values()) {
    const cls = digits.length === 1 ? lit(String(digits[0])) : `[${digits[0]}-${digits[digits.length - 1]}]`;
    // Stopping here: equal to a tight bound only when its remaining digits are all zero ('').
    const loOk = l === null || (l === '' && !loEx);
    const hiOk = h === null || h !== '' || !hiEx;
    const more = fraction(l, loEx, h, hiEx, n - 1);
    if (loOk && hiOk) parts.push(more === null ? cls : seq(cls, `(${more})?`));
    else if (more !== null) parts.push(seq(cls, more));
  }
  return parts.length === 0 ? null : alt(parts);
}

/** Magnitudes (no sign) "I" or "I.F" in [a, b] (b null: up to MAX_DIGITS integer digits). */
function magnitudeRange(a: Mag, b: Mag | null): string | null {
  if (a.int > MAX_MAGNITUDE) return null;
  if (b !== null && b.int > MAX_MAGNITUDE) b = null;
  const parts: string[] = [];
  const dot = (f: string | null) => (f === null ? null : seq(lit('.'), f));
  const push = (p: string | null) => {
    if (p !== null) parts.push(p);
  };
  const aStr = lit(a.int.toString());
  if (b !== null && a.int === b.int) {
    if (a.frac === '' && !a.exclusive && (b.frac !== '' || !b.exclusive)) parts.push(aStr);
    const f = dot(fraction(a.frac, a.exclusive, b.frac, b.exclusive, MAX_FRACTION_DIGITS));
    if (f !== null) parts.push(seq(aStr, f));
    return parts.length === 0 ? null : alt(parts);
  }
  if (b !== null && a.int > b.int) return null;
  if (a.frac === '' && !a.exclusive) parts.push(aStr);
  const fa = dot(fraction(a.frac, a.exclusive, null, false, MAX_FRACTION_DIGITS));
  if (fa !== null) parts.push(seq(aStr, fa));
  const midHi = b === null ? MAX_MAGNITUDE : b.int - 1n;
  if (a.int + 1n <= midHi) push(seq(magnitude(a.int + 1n, midHi), `(${lit('.')} ${repeat('[0-9]', 1, MAX_FRACTION_DIGITS)})?`));
  if (b !== null) {
    const bStr = lit(b.int.toString());
    if (b.frac !== '' || !b.exclusive) parts.push(bStr);
    const fb = dot(fraction(null, false, b.frac, b.exclusive, MAX_FRACTION_DIGITS));
    if (fb !== null) parts.push(seq(bStr, fb));
  }
  return parts.length === 0 ? null : alt(parts);
}

const signOf = (b: DecimalBound) => (b.negative ? -1 : b.int === 0n && b.frac === '' ? 0 : 1);

/**
 * Numbers (no exponent, at most MAX_DIGITS integer and MAX_FRACTION_DIGITS fraction digits) within
 * decimal bounds, compared exactly as decimals; null when none fits.
 */
export function decimalRange(lo: DecimalBound | null, hi: DecimalBound | null): string | null {
  const parts: string[] = [];
  // x >= 0: magnitudes in [max(lo, 0), hi].
  if (hi === null || signOf(hi) >= 0) {
    const a: Mag = lo === null || signOf(lo) < 0 ? { int: 0n, frac: '', exclusive: false } : lo;
    const p = magnitudeRange(a, hi);
    if (p !== null) parts.push(p);
  }
  // x < 0: magnitudes m = -x in [max(-hi, 0+), -lo].
  if (lo === null || signOf(lo) < 0) {
    const a: Mag = hi === null || signOf(hi) >= 0 ? { int: 0n, frac: '', exclusive: true } : hi;
    const p = magnitudeRange(a, lo);
    if (p !== null) parts.push(seq(lit('-'), p));
  }
  return parts.length === 0 ? null : alt(parts);
}
