// The research tools' network side against stand-in servers on loopback: visit of http(s) pages (readable text,
// the byte cap, the timeout, HTTP errors, redirects, refused schemes and addresses, the caller's abort) and web
// search through a Serper-compatible API (key header, request body, result format, errors).
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCorpus, createSerperSearch, createTools, fetchPage, isPrivateAddress } from '../../src/research/tools/index.ts';
import type { ResearchTool } from '../../src/research/tool.ts';

const PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>Tardigrades — Wiki</title></head><body>
<header><nav><a href="/">Main page</a> <a href="/random">Random article</a> <a href="/donate">Donate now</a></nav></header>
<div id="content"><h1>Tardigrades</h1>
<p>Tardigrades are eight-legged micro-animals, first described by Johann August Ephraim Goeze in 1773. They survive
extreme conditions by entering a dehydrated state called cryptobiosis, in which their metabolism nearly stops.</p>
<p>They have survived exposure to outer space, withstanding vacuum and solar radiation during the FOTON-M3 mission in 2007,
and can revive after decades without water.</p></div>
<footer>This page was last edited on 1 May 2024. Terms of Use. Privacy Policy. Cookie statement.</footer>
</body></html>`;

const SERPER_KEY = 'test-serper-key';
const serperRequests: { key: string | undefined; body: unknown }[] = [];
let server: http.Server;
let origin: string;
let bigBytesSent = 0;
const signal = new AbortController().signal;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    if (req.method === 'POST' && url === '/serper/search') {
      let raw = '';
      req.on('data', (c: Buffer) => (raw += c.toString()));
      req.on('end', () => {
        const body = JSON.parse(raw) as { q: string; num: number };
        serperRequests.push({ key: req.headers['x-api-key'] as string | undefined, body });
        if (req.headers['x-api-key'] !== SERPER_KEY) {
          res.writeHead(403, { 'content-type': 'application/json' }).end('{"message":"Unauthorized.","statusCode":403}');
        } else if (body.q === 'broken') {
          res.writeHead(200, { 'content-type': 'application/json' }).end('<html>gateway error</html>');
        } else if (body.q === 'slow') {
          // never answers
        } else if (body.q === 'nothing') {
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ searchParameters: { q: body.q } }));
        } else {
          res.writeHead(200, { 'content-type': 'application/json' }).end(
            JSON.stringify({
              searchParameters: { q: body.q, type: 'search' },
              organic: [
                { title: `About ${body.q}`, link: 'https://example.org/a', snippet: `Everything about ${body.q}.`, date: 'May 1, 2024', position: 1 },
                { title: 'Second hit', link: 'https://example.org/b', snippet: 'More here.', position: 2 },
              ],
            }),
          );
        }
      });
      return;
    }
    switch (url) {
      case '/article':
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(PAGE);
        return;
      case '/plain':
        res.writeHead(200, { 'content-type': 'text/plain' }).end('Just plain text.\r\nSecond line.');
        return;
      case '/big': {
        res.writeHead(200, { 'content-type': 'text/plain' });
        const chunk = 'x'.repeat(16 * 1024);
        let sent = 0;
        const pump = (): void => {
          while (sent < 4 * 1024 * 1024) {
            sent += chunk.length;
            bigBytesSent = sent;
            if (!res.write(chunk)) return void res.once('drain', pump);
          }
          res.end();
        };
        res.on('close', () => (sent = Infinity));
        pump();
        return;
      }
      case '/slow':
        res.writeHead(200, { 'content-type': 'text/html' });
        res.write('<html><body><p>Loading'); // and never finishes
        return;
      case '/hang':
        return; // never answers
      case '/missing':
        res.writeHead(404, { 'content-type': 'text/html' }).end('<h1>Not found</h1>');
        return;
      case '/pdf':
        res.writeHead(200, { 'content-type': 'application/pdf' }).end('%PDF-1.4');
        return;
      case '/moved':
        res.writeHead(302, { location: '/article' }).end();
        return;
      case '/to-file':
        res.writeHead(302, { location: 'file:///etc/passwd' }).end();
        return;
      default:
        res.writeHead(500).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

async function visitTool(extra: Parameters<typeof createTools>[0] = {}): Promise<ResearchTool> {
  const [visit] = await createTools({ names: ['visit'], allowPrivateNetwork: true, ...extra });
  return visit;
}

describe('visit of http(s) pages', () => {
  it('returns the readable text of an HTML page under the goal, without the navigation and footer', async () => {
    const out = await (await visitTool()).run({ url: `${origin}/article`, goal: 'how tardigrades survive' }, signal);
    expect(out).toMatch(new RegExp(`^The useful information in ${origin}/article for user goal how tardigrades survive as follows: \\n\\nEvidence in page: \\n# Tardigrades — Wiki\\n\\nTardigrades are eight-legged`));
    expect(out).toContain('called cryptobiosis, in which their metabolism nearly stops.\n\nThey have survived exposure to outer space');
    for (const boilerplate of ['Random article', 'Donate now', 'Cookie statement']) expect(out).not.toContain(boilerplate);
  });

  it('returns text/plain as it is and follows redirects', async () => {
    expect((await fetchPage(`${origin}/plain`, signal, { allowPrivateNetwork: true })).text).toBe('Just plain text.\nSecond line.');
    const moved = await fetchPage(`${origin}/moved`, signal, { allowPrivateNetwork: true });
    expect(moved.url).toBe(`${origin}/article`);
    expect(moved.text).toContain('cryptobiosis');
  });

  it('stops reading a body past the byte cap and says the page was cut', async () => {
    const page = await fetchPage(`${origin}/big`, signal, { allowPrivateNetwork: true, maxBytes: 64 * 1024 });
    expect(page.truncated).toBe(true);
    expect(page.text.length).toBe(64 * 1024);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(bigBytesSent).toBeLessThan(4 * 1024 * 1024); // the download was cancelled, not finished
    const out = await (await visitTool({ maxPageBytes: 64 * 1024, visitMaxChars: 4000 })).run({ url: `${origin}/big`, goal: 'x' }, signal);
    expect(out).toContain('[... truncated:');
    expect(out.length).toBeLessThan(4300);
    const tools = await visitTool({ maxPageBytes: 1000, visitMaxChars: 100_000 });
    expect(await tools.run({ url: `${origin}/big`, goal: 'x' }, signal)).toMatch(/x{1000}\n\[\.\.\. the page was longer than the download limit and was cut\]$/);
  });

  it('times out on a server that stalls before or during the body', async () => {
    const visit = await visitTool({ fetchTimeoutMs: 300 });
    for (const route of ['/slow', '/hang']) {
      const started = Date.now();
      await expect(visit.run({ url: `${origin}${route}`, goal: 'x' }, signal)).rejects.toThrow(`fetching ${origin}${route} timed out after 300 ms`);
      expect(Date.now() - started).toBeLessThan(3000);
    }
  });

  it("honours the caller's abort", async () => {
    const controller = new AbortController();
    const reason = new Error('run cancelled');
    setTimeout(() => controller.abort(reason), 100);
    await expect((await visitTool()).run({ url: `${origin}/hang`, goal: 'x' }, controller.signal)).rejects.toBe(reason);
  });

  it('turns HTTP errors, unreadable content and connection failures into errors', async () => {
    const visit = await visitTool();
    await expect(visit.run({ url: `${origin}/missing`, goal: 'x' }, signal)).rejects.toThrow(`HTTP 404 Not Found fetching ${origin}/missing`);
    await expect(visit.run({ url: `${origin}/pdf`, goal: 'x' }, signal)).rejects.toThrow(/is application\/pdf, which visit cannot read/);
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const deadPort = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    await expect(visit.run({ url: `http://127.0.0.1:${deadPort}/`, goal: 'x' }, signal)).rejects.toThrow(/failed: .*ECONNREFUSED/);
  });

  it('refuses non-http schemes, redirects to them, and private addresses unless allowed', async () => {
    const visit = await visitTool();
    for (const url of ['file:///etc/passwd', 'data:text/html,<p>hi</p>', 'ftp://example.com/', 'gopher://x/']) {
      await expect(visit.run({ url, goal: 'x' }, signal), url).rejects.toThrow(/^refused: [a-z]+: URLs cannot be visited/);
    }
    await expect(visit.run({ url: `${origin}/to-file`, goal: 'x' }, signal)).rejects.toThrow(/refused: file: URLs/);
    const guarded = (await createTools({ names: ['visit'] }))[0];
    await expect(guarded.run({ url: `${origin}/article`, goal: 'x' }, signal)).rejects.toThrow(/refused: 127\.0\.0\.1 is a loopback\/private network address/);
    await expect(guarded.run({ url: 'http://[::1]:1/', goal: 'x' }, signal)).rejects.toThrow(/loopback\/private/);
    await expect(guarded.run({ url: 'http://localhost:1/', goal: 'x' }, signal)).rejects.toThrow(/loopback\/private/);
  });

  it('classifies addresses', () => {
    for (const ip of ['127.0.0.1', '10.1.2.3', '172.20.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '::1', 'fe80::1', 'fd00::1', '::ffff:127.0.0.1', '::ffff:a9fe:a9fe']) {
      expect(isPrivateAddress(ip), ip).toBe(true);
    }
    for (const ip of ['8.8.8.8', '93.184.216.34', '2606:4700:4700::1111', '::ffff:8.8.8.8']) expect(isPrivateAddress(ip), ip).toBe(false);
  });
});

describe('web search through a Serper-compatible API', () => {
  const baseUrl = (): string => `${origin}/serper`;

  it('posts {q, num} with the key in X-API-KEY and lists the organic results in the reference format', async () => {
    serperRequests.length = 0;
    const [search] = await createTools({ names: ['search'], serperApiKey: SERPER_KEY, serperBaseUrl: baseUrl() + '/' });
    const out = await search.run({ query: ['tardigrade space survival', 'water bears'] }, signal);
    expect(serperRequests).toEqual([
      { key: SERPER_KEY, body: { q: 'tardigrade space survival', num: 10 } },
      { key: SERPER_KEY, body: { q: 'water bears', num: 10 } },
    ]);
    expect(out.split('\n=======\n')[0]).toBe(
      "A search for 'tardigrade space survival' found 2 results:\n\n## Web Results\n" +
        '1. [About tardigrade space survival](https://example.org/a)\nDate published: May 1, 2024\n\nEverything about tardigrade space survival.\n\n' +
        '2. [Second hit](https://example.org/b)\n\nMore here.',
    );
    expect(out.split('\n=======\n')[1]).toMatch(/^A search for 'water bears' found 2 results:/);
    expect(search.description).toMatch(/^Perform searches of Google \(web\)/);
  });

  it('throws clear errors for a rejected key, a body that is not JSON, and a timeout; says when nothing was found', async () => {
    const wrong = createSerperSearch({ apiKey: 'wrong', baseUrl: baseUrl() });
    await expect(wrong.search('x', signal)).rejects.toThrow('web search failed: HTTP 403 Forbidden: {"message":"Unauthorized.","statusCode":403}');
    const serper = createSerperSearch({ apiKey: SERPER_KEY, baseUrl: baseUrl(), timeoutMs: 300 });
    await expect(serper.search('broken', signal)).rejects.toThrow(/web search returned a body that is not JSON \(<html>gateway error<\/html>\)/);
    await expect(serper.search('slow', signal)).rejects.toThrow("web search for 'slow' timed out after 300 ms");
    expect(await serper.search('nothing', signal)).toEqual([]);
    const [search] = await createTools({ names: ['search'], serperApiKey: 'wrong', serperBaseUrl: baseUrl() });
    await expect(search.run({ query: ['a', 'b'] }, signal)).rejects.toThrow(/HTTP 403/);
    const [ok] = await createTools({ names: ['search'], serperApiKey: SERPER_KEY, serperBaseUrl: baseUrl() });
    expect(await ok.run({ query: ['nothing'] }, signal)).toBe("No results found for 'nothing'. Try with a more general query.");
  });

  it('searches the corpus and the web together, corpus results first, and keeps the corpus results when the web fails', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moeserve-corpus-web-'));
    try {
      fs.writeFileSync(path.join(dir, 'bears.md'), '# Water bears\n\nWater bears is another name for tardigrades.\n');
      const corpus = await createCorpus(dir);
      const [search] = await createTools({ corpus, names: ['search'], serperApiKey: SERPER_KEY, serperBaseUrl: baseUrl() });
      const out = await search.run({ query: ['water bears'] }, signal);
      expect(out).toBe(
        "A search for 'water bears' found 3 results:\n\n## Corpus Results\n1. [Water bears](corpus://bears.md)\n\nWater bears Water bears is another name for tardigrades.\n\n" +
          '## Web Results\n2. [About water bears](https://example.org/a)\nDate published: May 1, 2024\n\nEverything about water bears.\n\n3. [Second hit](https://example.org/b)\n\nMore here.',
      );
      const [both] = await createTools({ corpus, names: ['search'], serperApiKey: 'wrong', serperBaseUrl: baseUrl() });
      const partial = await both.run({ query: ['water bears'] }, signal);
      expect(partial).toMatch(/^A search for 'water bears' found 1 results:\n\n## Corpus Results\n1\. \[Water bears\]\(corpus:\/\/bears\.md\)/);
      expect(partial).toMatch(/\[search\] Web Results failed: web search failed: HTTP 403/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
