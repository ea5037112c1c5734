// Small helpers for writing xgrammar EBNF (W3C-style: "literal", [class], ( ), |, ?, *, +, {m,n}).

/** A string literal matching exactly `s` (UTF-8 text; every non-printable-ASCII character escaped). */
export function lit(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (cp >= 0x20 && cp < 0x7f) out += ch;
    else if (cp <= 0xffff) out += `\\u${cp.toString(16).padStart(4, '0')}`;
    else out += `\\U${cp.toString(16).padStart(8, '0')}`;
  }
  return `${out}"`;
}

/** Alternatives, parenthesised when more than one. */
export function alt(parts: readonly string[]): string {
  const unique = [...new Set(parts)];
  if (unique.length === 0) throw new Error('alt() of nothing');
  return unique.length === 1 ? unique[0] : `(${unique.join(' | ')})`;
}

/** A sequence; empty literals dropped. */
export function seq(...parts: string[]): string {
  const kept = parts.filter((p) => p !== '""' && p !== '');
  if (kept.length === 0) return '""';
  return kept.length === 1 ? kept[0] : `(${kept.join(' ')})`;
}

/** `item` repeated min..max times (max = Infinity: unbounded). */
export function repeat(item: string, min: number, max: number): string {
  if (max === 0) return '""';
  if (min === 0 && max === Infinity) return `${item}*`;
  if (min === 1 && max === Infinity) return `${item}+`;
  if (min === 0 && max === 1) return `${item}?`;
  if (min === max) return min === 1 ? item : `${item}{${min}}`;
  return max === Infinity ? `${item}{${min},}` : `${item}{${min},${max}}`;
}
