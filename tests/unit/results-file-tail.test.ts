// bench/RESULTS.md: the scripts rewrite their own sections and keep the hand-written ones after them (the GPU
// check's table, figures from other machines), so a bench run never deletes a measurement it did not make.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { withSection } from '../../bench/peer/results-file.ts';

const RESULTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bench/RESULTS.md');

describe('bench/RESULTS.md sections', () => {
  it('keeps the hand-written text after the last section when a script rewrites its own', () => {
    const first = withSection(null, 'peer', '## Peer\n\np1');
    const withNotes = `${first}\n## GPU check\n\nthe table\n`;
    const second = withSection(withNotes, 'micro', '## Micro\n\nm1');
    expect(second).toContain('p1');
    expect(second).toContain('m1');
    expect(second.endsWith('<!-- micro:end -->\n\n## GPU check\n\nthe table\n')).toBe(true);
    // Idempotent: rewriting the same section keeps one copy of the notes.
    const third = withSection(second, 'peer', '## Peer\n\np2');
    expect(third.match(/## GPU check/g)).toHaveLength(1);
    expect(third).not.toContain('p1');
  });

  it('the checked-in file survives a rewrite of each section unchanged', () => {
    const text = fs.readFileSync(RESULTS, 'utf8');
    for (const s of ['peer', 'micro'] as const) {
      const body = text.slice(text.indexOf(`<!-- ${s}:begin -->`) + `<!-- ${s}:begin -->`.length, text.indexOf(`<!-- ${s}:end -->`));
      expect(withSection(text, s, body)).toBe(text);
    }
  });
});
