// A local document collection the research tools search and read offline (`--corpus DIR`): the .txt, .md and
// .html/.htm files under a directory, read once into memory (bounded in count and bytes), HTML reduced to its
// readable text, and indexed with MiniSearch (BM25 over title and text). Documents are addressed by
// corpus://relative/path links; visit serves only the documents indexed here, never a path off the disk.
import fs from 'node:fs/promises';
import path from 'node:path';
import MiniSearch from 'minisearch';
import { extractReadable } from './html.ts';
import { oneLine, type SearchHit } from './format.ts';

export const CORPUS_SCHEME = 'corpus://';

export interface CorpusOptions {
  /** Files indexed at most; the rest are skipped with a note (default 5000). */
  maxFiles?: number;
  /** Bytes read in all at most (default 200 MiB). */
  maxTotalBytes?: number;
  /** A larger file is skipped with a note (default 5 MiB). */
  maxFileBytes?: number;
  /** Characters of a search result's snippet (default 300). */
  snippetChars?: number;
}

export interface CorpusDocument {
  /** Relative to the corpus directory, with forward slashes. */
  path: string;
  link: string;
  title: string;
  text: string;
}

export interface Corpus {
  /** The absolute directory it was read from. */
  dir: string;
  /** How many documents were indexed. */
  size: number;
  /** What was skipped, and why (one line each). */
  notes: string[];
  /** The best-matching documents for a query, best first: title, corpus:// link and a snippet around the matched terms. */
  search(query: string, limit?: number): SearchHit[];
  /** The document a corpus:// link names; throws for a link outside the corpus or not in it. */
  get(link: string): CorpusDocument;
}

const EXTENSIONS = new Set(['.txt', '.md', '.markdown', '.html', '.htm']);
const MiB = 1024 * 1024;

/** Reads and indexes the documents under dir. Throws when dir is not a directory or holds no document. */
export async function createCorpus(dir: string, options: CorpusOptions = {}): Promise<Corpus> {
  const maxFiles = options.maxFiles ?? 5000;
  const maxTotalBytes = options.maxTotalBytes ?? 200 * MiB;
  const maxFileBytes = options.maxFileBytes ?? 5 * MiB;
  const snippetChars = options.snippetChars ?? 300;
  const root = path.resolve(dir);
  const stat = await fs.stat(root).catch(() => null);
  if (!stat?.isDirectory()) throw new Error(`corpus directory not found: ${dir}`);

  const notes: string[] = [];
  const otherFiles: string[] = [];
  const docs: CorpusDocument[] = [];
  let totalBytes = 0;
  let stopped = false;

  const walk = async (absDir: string, relDir: string): Promise<void> => {
    const entries = await fs.readdir(absDir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
      notes.push(`skipped ${relDir || '.'}/: cannot read the directory (${err.code ?? err.message})`);
      return [];
    });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      if (stopped) return;
      if (entry.name.startsWith('.') || entry.name === 'node_modules') continue;
      const rel = relDir ? `${relDir}/${entry.name}` : entry.name;
      const abs = path.join(absDir, entry.name);
      if (entry.isSymbolicLink()) {
        notes.push(`skipped ${rel}: symbolic links are not followed`);
      } else if (entry.isDirectory()) {
        await walk(abs, rel);
      } else if (!entry.isFile()) {
        continue;
      } else if (!EXTENSIONS.has(path.extname(entry.name).toLowerCase())) {
        otherFiles.push(rel);
      } else if (docs.length >= maxFiles) {
        notes.push(`stopped at ${maxFiles} files (maxFiles); ${rel} and the files after it are not indexed`);
        stopped = true;
      } else {
        const size = (await fs.stat(abs)).size;
        if (size > maxFileBytes) {
          notes.push(`skipped ${rel}: ${size} bytes is over the ${maxFileBytes}-byte limit per file`);
        } else if (totalBytes + size > maxTotalBytes) {
          notes.push(`stopped at ${totalBytes} bytes (maxTotalBytes); ${rel} and the files after it are not indexed`);
          stopped = true;
        } else {
          totalBytes += size;
          const raw = (await fs.readFile(abs, 'utf8')).replace(/^\uFEFF/, '');
          const { title, text } = readDocument(rel, raw);
          docs.push({ path: rel, link: corpusLink(rel), title, text });
        }
      }
    }
  };
  await walk(root, '');
  if (otherFiles.length > 0) {
    const examples = otherFiles.slice(0, 3).join(', ') + (otherFiles.length > 3 ? ', ...' : '');
    notes.push(`skipped ${otherFiles.length} file(s) that are not .txt, .md or .html (${examples})`);
  }
  if (docs.length === 0) throw new Error(`corpus directory ${dir} holds no .txt, .md or .html file`);

  const index = new MiniSearch<{ id: number; title: string; text: string; path: string }>({
    fields: ['title', 'text'],
    storeFields: ['title', 'path'],
    searchOptions: {
      boost: { title: 2 },
      prefix: (term) => term.length >= 4,
      fuzzy: (term) => (term.length >= 6 ? 0.15 : false),
    },
  });
  index.addAll(docs.map((doc, id) => ({ id, title: doc.title, text: doc.text, path: doc.path })));
  const byPath = new Map(docs.map((doc) => [doc.path, doc]));

  return {
    dir: root,
    size: docs.length,
    notes,
    search(query, limit = 10) {
      return index
        .search(query)
        .slice(0, limit)
        .map((result) => {
          const doc = docs[result.id as number];
          return { title: doc.title, link: doc.link, snippet: makeSnippet(doc.text, result.terms, snippetChars) };
        });
    },
    get(link) {
      const rel = corpusPath(link);
      const doc = byPath.get(rel);
      if (!doc) throw new Error(`no document at ${link} in the corpus; use the corpus:// links that search returns`);
      return doc;
    },
  };
}

/** corpus:// plus the relative path, each segment percent-encoded so the link survives markdown and spaces. */
export function corpusLink(relPath: string): string {
  return CORPUS_SCHEME + relPath.split('/').map(encodeURIComponent).join('/');
}

/** The relative path a corpus:// link names, normalised; throws for a link that leaves the corpus. */
export function corpusPath(link: string): string {
  if (!link.startsWith(CORPUS_SCHEME)) throw new Error(`not a corpus link: ${link} (corpus links start with ${CORPUS_SCHEME})`);
  let rel = link.slice(CORPUS_SCHEME.length).replace(/[?#].*$/s, '');
  try {
    rel = decodeURIComponent(rel);
  } catch {
    throw new Error(`malformed corpus link: ${link}`);
  }
  rel = rel.replace(/\\/g, '/');
  const normal = path.posix.normalize(rel);
  if (rel.includes('\0') || path.posix.isAbsolute(rel) || /^[a-zA-Z]:/.test(rel) || normal === '..' || normal.startsWith('../')) {
    throw new Error(`refused: ${link} points outside the corpus`);
  }
  return normal.replace(/^\.\//, '');
}

/** Title and text of one file: HTML through Readability, markdown titled by its first # heading, text by its first short line. */
function readDocument(rel: string, raw: string): { title: string; text: string } {
  const ext = path.extname(rel).toLowerCase();
  const base = path.basename(rel, ext);
  if (ext === '.html' || ext === '.htm') {
    const { title, text } = extractReadable(raw);
    return { title: title || base, text };
  }
  const text = raw.replace(/\r\n?/g, '\n').trim();
  if (ext === '.md' || ext === '.markdown') {
    const heading = /^#{1,6}[ \t]+(.+?)[ \t#]*$/m.exec(text.slice(0, 5000));
    return { title: heading ? heading[1].trim() : base, text };
  }
  const first = text.split('\n', 1)[0]?.trim() ?? '';
  return { title: first && first.length <= 100 ? first : base, text };
}

/**
 * A window of the text around the densest cluster of matched terms (most distinct terms, then most occurrences),
 * cut at word boundaries, on one line. The start of the text when no term occurs in it (a title-only match).
 */
export function makeSnippet(text: string, terms: string[], width: number): string {
  const hits: { pos: number; len: number; term: number }[] = [];
  terms.forEach((term, i) => {
    const escaped = term.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const re = new RegExp(`(?<![\\p{L}\\p{N}])${escaped}`, 'giu');
    for (const m of text.matchAll(re)) hits.push({ pos: m.index, len: m[0].length, term: i });
  });
  hits.sort((a, b) => a.pos - b.pos);
  let start = 0;
  if (hits.length > 0) {
    let best = { distinct: -1, count: -1, from: 0, to: 0 };
    for (let i = 0; i < hits.length; i++) {
      const seen = new Set<number>();
      let j = i;
      while (j < hits.length && hits[j].pos + hits[j].len - hits[i].pos <= width) seen.add(hits[j++].term);
      const count = j - i;
      const last = hits[Math.max(i, j - 1)];
      if (seen.size > best.distinct || (seen.size === best.distinct && count > best.count)) {
        best = { distinct: seen.size, count, from: hits[i].pos, to: last.pos + last.len };
      }
    }
    // Centre the cluster in the window.
    start = Math.max(0, Math.min(best.from - Math.floor((width - (best.to - best.from)) / 2), text.length - width));
    if (start > 0) {
      const space = text.lastIndexOf(' ', start);
      const lineBreak = text.lastIndexOf('\n', start);
      const boundary = Math.max(space, lineBreak);
      start = boundary >= 0 && start - boundary < 30 ? boundary + 1 : start;
    }
  }
  let end = Math.min(text.length, start + width);
  if (end < text.length) {
    const boundary = Math.max(text.lastIndexOf(' ', end), text.lastIndexOf('\n', end));
    if (boundary > start + width * 0.7) end = boundary;
  }
  const window = text.slice(start, end).replace(/^#{1,6}[ \t]+/gm, '');
  return `${start > 0 ? '...' : ''}${oneLine(window)}${end < text.length ? '...' : ''}`;
}
