// bench/RESULTS.md holds the latest peer benchmark and the latest micro-benchmarks, each between its own
// markers, so that each script rewrites its section and leaves the other as it was. Hand-written sections after
// the last marker (figures from other machines: the GPU check, earlier measurements) are kept as they are.
import fs from 'node:fs';

export type Section = 'peer' | 'micro';

const TITLE =
  '# Benchmark results\n\nWritten by the scripts: `npm run bench:peer` rewrites the first section, `npm run bench:micro` the second;\n' +
  'the sections after them are written by hand and kept as they are.\n';
const PLACEHOLDER: Record<Section, string> = {
  peer: '## moeserve vs llama.cpp\n\nNot run yet: `npm run bench:peer`.\n',
  micro: '## Kernel micro-benchmarks\n\nNot run yet: `npm run bench:micro`.\n',
};

const begin = (s: Section) => `<!-- ${s}:begin -->`;
const end = (s: Section) => `<!-- ${s}:end -->`;

/** The file's text with `section` replaced by `markdown` (the file is created, or rebuilt around it, as needed). */
export function withSection(existing: string | null, section: Section, markdown: string): string {
  const bodies: Record<Section, string> = { peer: PLACEHOLDER.peer, micro: PLACEHOLDER.micro };
  if (existing !== null) {
    for (const s of ['peer', 'micro'] as const) {
      const a = existing.indexOf(begin(s));
      const b = existing.indexOf(end(s));
      if (a >= 0 && b > a) bodies[s] = existing.slice(a + begin(s).length, b).trim() + '\n';
    }
  }
  bodies[section] = markdown.trim() + '\n';
  const tail = existing === null ? '' : handWrittenTail(existing);
  return `${TITLE}\n${(['peer', 'micro'] as const).map((s) => `${begin(s)}\n${bodies[s]}${end(s)}\n`).join('\n')}${tail ? `\n${tail}\n` : ''}`;
}

/** The text after the last section's end marker (none without markers: such a file is rebuilt from scratch). */
function handWrittenTail(existing: string): string {
  let at = -1;
  for (const s of ['peer', 'micro'] as const) {
    const b = existing.lastIndexOf(end(s));
    if (b >= 0) at = Math.max(at, b + end(s).length);
  }
  return at < 0 ? '' : existing.slice(at).trim();
}

export function updateResultsFile(file: string, section: Section, markdown: string): void {
  const existing = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null;
  fs.writeFileSync(file, withSection(existing, section, markdown));
}
