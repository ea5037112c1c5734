// The research tools over a local corpus: reading and indexing .md/.txt/.html files, BM25 search with snippets,
// visit of corpus:// links, and the refusals (traversal, unknown links, other schemes, bad tool configurations).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCorpus, createTools, type Corpus } from '../../src/research/tools/index.ts';
import type { ResearchTool } from '../../src/research/tool.ts';

const ARTICLE_HTML = `<!doctype html>
<html><head><title>Voyager at the heliopause | Space News</title></head>
<body>
<nav class="site-nav"><ul><li><a href="/">Home</a></li><li><a href="/news">News</a></li><li><a href="/shop">Shop our merchandise</a></li></ul></nav>
<div class="sidebar"><a href="/subscribe">Subscribe to our newsletter</a></div>
<main><article>
<h1>Voyager at the heliopause</h1>
<p>Voyager 1 crossed the heliopause in August 2012, becoming the first human-made object to enter interstellar space.
The probe measured a sudden jump in the density of the surrounding plasma, which told scientists it had left the solar bubble.</p>
<p>Voyager 2 followed in November 2018. Its working plasma instrument confirmed the boundary directly, and both probes
still send data back to the Deep Space Network more than four decades after launch.</p>
<ul><li>Voyager 1 launched on 5 September 1977</li><li>Voyager 2 launched on 20 August 1977</li></ul>
</article></main>
<footer><p>Copyright 2024 Space News Corp. Privacy policy. Cookie settings. All rights reserved.</p></footer>
<script>trackVisitor();</script>
</body></html>`;

let dir: string;
let corpus: Corpus;
let tools: ResearchTool[];
const signal = new AbortController().signal;

function tool(name: string): ResearchTool {
  const found = tools.find((t) => t.name === name);
  if (!found) throw new Error(`no ${name} tool`);
  return found;
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moeserve-corpus-'));
  const write = (rel: string, text: string): void => {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), text);
  };
  write('mars.md', '# Mars Rovers\n\nThe Perseverance rover landed in Jezero crater on 18 February 2021. It carries the Ingenuity helicopter.\n\nCuriosity has explored Gale crater since 2012.\n');
  write('notes/volcanoes.txt', 'Volcanoes of the Solar System\n\nOlympus Mons, on Mars, is the tallest volcano known: about 22 km high. Io, a moon of Jupiter, is the most volcanically active body.\n');
  write('notes/deep/nested/tides.md', '# Ocean tides\n\nTides are raised mostly by the Moon, and partly by the Sun. Spring tides happen at new and full moon.\n');
  const filler = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit. '.repeat(40);
  write('long.txt', `A long report\n\n${filler}The key finding concerns the magnetosphere of Ganymede, the only moon with its own magnetic field. ${filler}`);
  write('news/voyager.html', ARTICLE_HTML);
  write('my notes/space elevator.md', '# Space elevator\n\nA space elevator would need a tether of carbon nanotubes.\n');
  write('image.png', 'not really a png');
  write('.hidden/secret.md', '# Secret\n\nJezero Jezero Jezero\n');
  corpus = await createCorpus(dir);
  tools = await createTools({ corpus, allowNetwork: false });
});

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('createCorpus', () => {
  it('indexes .md, .txt and .html files recursively, skipping other files and hidden folders with a note', () => {
    expect(corpus.size).toBe(6);
    expect(corpus.notes.join('\n')).toContain('image.png');
    expect(corpus.get('corpus://notes/deep/nested/tides.md').title).toBe('Ocean tides');
    expect(() => corpus.get('corpus://.hidden/secret.md')).toThrow(/no document/);
  });

  it('titles documents by their markdown heading, first short line or HTML title', () => {
    expect(corpus.get('corpus://mars.md').title).toBe('Mars Rovers');
    expect(corpus.get('corpus://notes/volcanoes.txt').title).toBe('Volcanoes of the Solar System');
    expect(corpus.get('corpus://news/voyager.html').title).toMatch(/Voyager at the heliopause/);
  });

  it('keeps the article of an HTML page and drops its navigation, sidebar, footer and scripts', () => {
    const { text } = corpus.get('corpus://news/voyager.html');
    expect(text).toContain('Voyager 1 crossed the heliopause in August 2012');
    expect(text).toContain('Voyager 2 followed in November 2018');
    expect(text).toContain('- Voyager 1 launched on 5 September 1977');
    expect(text).toMatch(/solar bubble\.\n\nVoyager 2 followed/); // paragraphs stay apart
    for (const boilerplate of ['Shop our merchandise', 'Subscribe to our newsletter', 'Cookie settings', 'trackVisitor']) {
      expect(text).not.toContain(boilerplate);
    }
  });

  it('ranks the document holding the query terms first', () => {
    expect(corpus.search('Olympus Mons volcano')[0].link).toBe('corpus://notes/volcanoes.txt');
    expect(corpus.search('Perseverance Jezero crater')[0].link).toBe('corpus://mars.md');
    expect(corpus.search('heliopause interstellar plasma')[0].link).toBe('corpus://news/voyager.html');
    expect(corpus.search('moon tides')[0].link).toBe('corpus://notes/deep/nested/tides.md');
    expect(corpus.search('qwxzv nothing like this')).toEqual([]);
  });

  it('cuts the snippet around the matched terms, deep inside a long document', () => {
    const [hit] = corpus.search('Ganymede magnetosphere');
    expect(hit.link).toBe('corpus://long.txt');
    expect(hit.snippet).toMatch(/^\.\.\..*magnetosphere of Ganymede.*\.\.\.$/);
    expect(hit.snippet!.length).toBeLessThanOrEqual(310);
  });

  it('encodes link segments and reads documents back through them', () => {
    const [hit] = corpus.search('space elevator tether');
    expect(hit.link).toBe('corpus://my%20notes/space%20elevator.md');
    expect(corpus.get(hit.link).text).toContain('carbon nanotubes');
    expect(corpus.get('corpus://my notes/space elevator.md').title).toBe('Space elevator');
  });

  it('refuses links that leave the corpus, and names unknown ones', () => {
    for (const link of ['corpus://../../etc/passwd', 'corpus://notes/../../x.md', 'corpus://%2e%2e/%2e%2e/etc/passwd', 'corpus:///etc/passwd', 'corpus://..\\..\\etc\\passwd']) {
      expect(() => corpus.get(link), link).toThrow(/outside the corpus/);
    }
    expect(() => corpus.get('corpus://nope.md')).toThrow(/no document at corpus:\/\/nope\.md/);
    expect(corpus.get('corpus://notes/./deep/../volcanoes.txt').path).toBe('notes/volcanoes.txt');
  });

  it('bounds what it reads: file count, bytes per file, and fails on an empty or missing directory', async () => {
    const few = await createCorpus(dir, { maxFiles: 2 });
    expect(few.size).toBe(2);
    expect(few.notes.join('\n')).toMatch(/stopped at 2 files/);
    const small = await createCorpus(dir, { maxFileBytes: 500 });
    expect(small.notes.join('\n')).toMatch(/skipped long\.txt: \d+ bytes is over the 500-byte limit/);
    expect(() => small.get('corpus://long.txt')).toThrow(/no document/);
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'moeserve-empty-'));
    try {
      await expect(createCorpus(empty)).rejects.toThrow(/holds no \.txt, \.md or \.html file/);
    } finally {
      fs.rmSync(empty, { recursive: true });
    }
    await expect(createCorpus(path.join(dir, 'missing'))).rejects.toThrow(/corpus directory not found/);
  });
});

describe('search tool over the corpus', () => {
  it('answers each query in the reference format, corpus links and snippets included', async () => {
    const out = await tool('search').run({ query: ['Olympus Mons volcano'] }, signal);
    expect(out).toMatch(/^A search for 'Olympus Mons volcano' found \d+ results:\n\n## Corpus Results\n1\. \[Volcanoes of the Solar System\]\(corpus:\/\/notes\/volcanoes\.txt\)\n\nVolcanoes of the Solar System Olympus Mons, on Mars, is the tallest volcano/);
  });

  it('separates several queries, says when nothing was found, and takes a single string too', async () => {
    const out = await tool('search').run({ query: ['Jezero crater', 'qwxzv'] }, signal);
    const [first, second] = out.split('\n=======\n');
    expect(first).toMatch(/^A search for 'Jezero crater' found/);
    expect(first).toContain('(corpus://mars.md)');
    expect(second).toBe("No results found for 'qwxzv'. Try with a more general query.");
    expect(await tool('search').run({ query: 'heliopause' }, signal)).toContain('(corpus://news/voyager.html)');
    await expect(tool('search').run({ query: [] }, signal)).rejects.toThrow(/'query' must be/);
    await expect(tool('search').run({}, signal)).rejects.toThrow(/'query' must be/);
  });

  it('shows the model the reference argument shape', () => {
    expect(tool('search').parameters).toMatchObject({ properties: { query: { type: 'array', items: { type: 'string' } } }, required: ['query'] });
    expect(tool('visit').parameters).toMatchObject({ properties: { url: { type: 'array' }, goal: { type: 'string' } }, required: ['url', 'goal'] });
  });
});

describe('visit tool over the corpus', () => {
  it('returns the document text under the goal', async () => {
    const out = await tool('visit').run({ url: 'corpus://notes/deep/nested/tides.md', goal: 'what raises tides' }, signal);
    expect(out).toBe(
      'The useful information in corpus://notes/deep/nested/tides.md for user goal what raises tides as follows: \n\n' +
        'Evidence in page: \n# Ocean tides\n\nTides are raised mostly by the Moon, and partly by the Sun. Spring tides happen at new and full moon.',
    );
  });

  it('reads several URLs, puts an error line in place of one that fails, and throws when all fail', async () => {
    const out = await tool('visit').run({ url: ['corpus://mars.md', 'corpus://nope.md'], goal: 'rovers' }, signal);
    const [first, second] = out.split('\n=======\n');
    expect(first).toContain('Jezero crater');
    expect(second).toMatch(/^\[visit\] Failed to read corpus:\/\/nope\.md: no document/);
    await expect(tool('visit').run({ url: ['corpus://a.md', 'corpus://b.md'], goal: 'x' }, signal)).rejects.toThrow(/corpus:\/\/a\.md: no document.*corpus:\/\/b\.md: no document/);
  });

  it('refuses traversal, unknown links, other schemes and plain paths', async () => {
    const visit = tool('visit');
    await expect(visit.run({ url: 'corpus://../../etc/passwd', goal: 'x' }, signal)).rejects.toThrow(/outside the corpus/);
    await expect(visit.run({ url: 'corpus://missing.md', goal: 'x' }, signal)).rejects.toThrow(/no document/);
    for (const url of ['file:///etc/passwd', 'data:text/plain,hello', 'javascript:alert(1)', 'ftp://example.com/x']) {
      await expect(visit.run({ url, goal: 'x' }, signal), url).rejects.toThrow(/refused: [a-z]+: URLs cannot be visited/);
    }
    await expect(visit.run({ url: 'mars.md', goal: 'x' }, signal)).rejects.toThrow(/not a URL: mars\.md .*corpus:\/\/ links/);
    await expect(visit.run({ url: 'https://example.com/', goal: 'x' }, signal)).rejects.toThrow(/network access is off/);
  });

  it('cuts long pages to its budget, sharing it among the URLs', async () => {
    const [small] = await createTools({ corpus, names: ['visit'], allowNetwork: false, visitMaxChars: 2000 });
    const out = await small.run({ url: 'corpus://long.txt', goal: 'Ganymede' }, signal);
    expect(out).toMatch(/\[\.\.\. truncated: \d+ more characters\]$/);
    expect(out.length).toBeLessThan(2300);
  });
});

describe('createTools', () => {
  it('builds search and visit by default, in that order', async () => {
    expect((await createTools({ corpusDir: dir, allowNetwork: false })).map((t) => t.name)).toEqual(['search', 'visit']);
    expect((await createTools({ corpus, names: ['visit'], allowNetwork: false })).map((t) => t.name)).toEqual(['visit']);
  });

  it('explains unknown tools, python, and tools that nothing would serve', async () => {
    await expect(createTools({ corpus, names: ['search', 'browse'] })).rejects.toThrow("unknown tool 'browse' (available: search, visit)");
    await expect(createTools({ corpus, names: ['python'] })).rejects.toThrow(/sandbox/);
    await expect(createTools({ names: ['search'] })).rejects.toThrow(/search tool has nothing to search: give a corpus directory or a Serper API key/);
    await expect(createTools({ names: ['search'], serperApiKey: 'k', allowNetwork: false })).rejects.toThrow(/network access is off/);
    await expect(createTools({ names: ['visit'], allowNetwork: false })).rejects.toThrow(/visit tool has nothing to read/);
    await expect(createTools({})).rejects.toThrow(/search tool has nothing to search/);
    expect((await createTools({ names: ['visit'] })).map((t) => t.name)).toEqual(['visit']);
  });
});
