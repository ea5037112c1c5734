// GPT-2's byte → printable character table of byte-level BPE vocabularies (Qwen3's included).

/** byteChars()[b] is the character that stands for byte b in vocabulary entries. */
export function byteChars(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const map: string[] = [];
  bs.forEach((b, i) => (map[b] = String.fromCodePoint(cs[i]!)));
  return map;
}
