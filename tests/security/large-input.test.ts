// Issue 11.3: one large prompt must not freeze every other request. Reported: a 28 MB /tokenize body
// held /health for 30 s and pushed other requests' time to first token from 14 ms to 24 s; a 30 MB chat
// message took 31 s to be refused (tokenization and template rendering ran on the event loop, and a
// prompt was tokenized in full before its length was checked). Now: the body limit follows
// max-model-len, text that cannot fit is refused before it is tokenized, and tokenizing and rendering
// big inputs happen on worker threads, so /health (p99 under 50 ms) and running streams go on.
// The server runs as `moeserve serve` in its own process; the model has a 128K context, as the real one.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tinyModelDir, TINY_MODEL } from '../helpers/tiny-server.ts';
import { rawRequest } from '../helpers/raw-http.ts';
import { metric, percentile, probeHealth, startServeProcess, type ServeProcess } from '../helpers/serve-process.ts';

const CONTEXT = 131072;
const ARGS = ['--served-model-name', TINY_MODEL, '--kv-cache-memory', '0.1', '--no-prefix-caching', '--threads', '1', '--generation-config', 'vllm'];
const MB = 1_000_000;

let dir = '';
const servers: ServeProcess[] = [];

beforeAll(async () => {
  dir = await tinyModelDir(CONTEXT);
});

afterAll(() => {
  for (const s of servers) s.kill();
});

async function start(extra: string[] = []): Promise<ServeProcess> {
  const server = await startServeProcess(dir, [...ARGS, ...extra]);
  servers.push(server);
  return server;
}

async function post(origin: string, route: string, body: string | object): Promise<{ status: number; json: any; ms: number }> {
  const t0 = performance.now();
  const res = await fetch(`${origin}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json, ms: performance.now() - t0 };
}

function expectResponsive(latencies: number[]): void {
  const p99 = percentile(latencies, 99);
  expect(latencies.length).toBeGreaterThanOrEqual(3);
  expect(p99, `/health p99 ${p99.toFixed(1)} ms over ${latencies.length} probes (max ${Math.max(...latencies).toFixed(1)})`).toBeLessThan(50);
}

describe('large inputs', () => {
  it('the reported 28 MB /tokenize body and 30 MB chat message are refused at once (413: the default body limit follows max-model-len)', async () => {
    const server = await start();
    const health = await probeHealth(server.origin);
    // On a raw socket, the headers of the reported requests (Content-Length 28 MB and 30 MB): the server
    // answers from them, before reading any of the body (which is therefore not sent: a server closing
    // with unread bytes resets the connection, and the reset may overtake its answer).
    const send = async (target: string, bytes: number) => {
      const t0 = performance.now();
      const r = await rawRequest(server.port, { method: 'POST', target, headers: { 'content-type': 'application/json', 'content-length': String(bytes) } });
      return { ...r, ms: performance.now() - t0 };
    };
    // Many rounds, so that /health is measured over a window in which these keep coming.
    for (let round = 0; round < 50; round++) await Promise.all([send('/tokenize', 28 * MB), send('/v1/chat/completions', 30 * MB)]);
    const tokenize = await send('/tokenize', 28 * MB);
    const chat = await send('/v1/chat/completions', 30 * MB);
    expectResponsive(await health.stop());
    for (const r of [tokenize, chat]) {
      expect(r.status).toBe(413);
      expect(JSON.parse(r.body).error.code).toBe(413);
      expect(r.ms).toBeLessThan(3000);
    }
  });

  it('text that cannot fit the context is refused before it is tokenized', async () => {
    // A 2K context takes at most 2048 × 128 bytes of text (Qwen3's longest token is 128 bytes); the
    // default body limit (1 MiB) lets 600 KB in.
    const server = await start(['--max-model-len', '2048']);
    const health = await probeHealth(server.origin);
    const tooLong = 'x'.repeat(600_000);
    const attack = async () => ({
      tokenize: await post(server.origin, '/tokenize', { prompt: tooLong }),
      completion: await post(server.origin, '/v1/completions', { model: TINY_MODEL, prompt: ['short', tooLong], max_tokens: 1 }),
      // In a chat message: rendered on a worker, refused there before tokenizing.
      chat: await post(server.origin, '/v1/chat/completions', { model: TINY_MODEL, messages: [{ role: 'user', content: tooLong }] }),
      // Non-ASCII text may shrink under NFC, so the event loop's bound lets it through; the worker normalizes and refuses it.
      hangul: await post(server.origin, '/tokenize', { prompt: '한'.repeat(200_000) }),
      // Prose under the byte bound, over the word bound (one word is at least one token): refused on a worker.
      prose: await post(server.origin, '/tokenize', { prompt: 'a few short words. '.repeat(8000) }),
    });
    // Several rounds, so that the p99 is over a window in which these requests keep coming.
    for (let round = 0; round < 3; round++) await attack();
    const { tokenize, completion, chat, hangul, prose } = await attack();
    expectResponsive(await health.stop());
    for (const [r, param] of [[tokenize, 'prompt'], [completion, 'prompt[1]'], [chat, 'messages'], [hangul, 'prompt']] as const) {
      expect(r.status, JSON.stringify(r.json).slice(0, 300)).toBe(400);
      expect(r.json.error.param).toBe(param);
      // The bound's refusal, not the token count's: nothing was tokenized.
      expect(r.json.error.message).toMatch(/is \d+ bytes of text, more than 2048 tokens can hold in this model's context/);
      expect(r.ms).toBeLessThan(3000);
    }
    expect(prose.status).toBe(400);
    expect(prose.json.error.message).toMatch(/holds 32000 words .* more than the 2048 tokens/);
    expect((await post(server.origin, '/detokenize', { tokens: new Array(2049).fill(9707) })).json.error.param).toBe('tokens');
    expect((await post(server.origin, '/detokenize', { tokens: new Array(2048).fill(9707) })).status).toBe(200);
  });

  it('a prompt that needs seconds of tokenizing leaves /health, running streams and short requests alone', async () => {
    const server = await start();
    // A stream that runs through the attack: its tokens keep coming.
    const stream = fetch(`${server.origin}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: TINY_MODEL, prompt: 'Once upon a time', max_tokens: 4000, ignore_eos: true, stream: true }),
    });
    const res = await stream;
    const reader = res.body!.getReader();
    const gaps: number[] = [];
    let last = performance.now();
    let reading = true;
    const readLoop = (async () => {
      while (reading) {
        const { done } = await reader.read();
        if (done) break;
        const now = performance.now();
        gaps.push(now - last);
        last = now;
      }
    })();
    await new Promise((r) => setTimeout(r, 300));
    const health = await probeHealth(server.origin);
    // 1 MB without a space: under the default body limit (8 MiB at 128K), the byte bound (128 bytes per
    // token) and the word bound (one word), so it is tokenized, on a worker: about a million tokens.
    const t0 = performance.now();
    const big = post(server.origin, '/tokenize', { prompt: 'x7'.repeat(MB / 2) });
    const bigCompletion = post(server.origin, '/v1/completions', { model: TINY_MODEL, prompt: 'y8'.repeat(MB / 2), max_tokens: 1 });
    await new Promise((r) => setTimeout(r, 300));
    // Short requests meanwhile: tokenized inline, they do not queue behind the big ones.
    const ttfts: number[] = [];
    for (let i = 0; i < 5; i++) {
      const s0 = performance.now();
      const short = await fetch(`${server.origin}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: TINY_MODEL, messages: [{ role: 'user', content: `hello ${i}` }], max_tokens: 2, stream: true }),
      });
      const r = short.body!.getReader();
      await r.read();
      ttfts.push(performance.now() - s0);
      while (!(await r.read()).done);
    }
    const [tokenized, completion] = await Promise.all([big, bigCompletion]);
    const bigMs = performance.now() - t0;
    const latencies = await health.stop();
    reading = false;
    await reader.cancel();
    await readLoop.catch(() => {});

    // Both big prompts were tokenized (a million tokens) and then refused for their length.
    expect(tokenized.status).toBe(400);
    expect(tokenized.json.error.message).toMatch(/The prompt is \d+ tokens, more than max-model-len \(131072\)/);
    expect(completion.status).toBe(400);
    expect(completion.json.error.param).toBe('prompt');
    expect(bigMs).toBeGreaterThan(1000);
    expectResponsive(latencies);
    expect(Math.max(...ttfts), `short requests' time to first token (ms): ${ttfts.map((t) => t.toFixed(0)).join(' ')}`).toBeLessThan(500);
    const streamGaps = gaps.slice(5);
    expect(percentile(streamGaps, 99), `stream gaps p99 (ms) over ${streamGaps.length}`).toBeLessThan(100);
    console.log(
      `big prompts: ${(bigMs / 1000).toFixed(1)} s on workers; /health p99 ${percentile(latencies, 99).toFixed(1)} ms, max ${Math.max(...latencies).toFixed(1)} ms; ` +
        `short TTFT max ${Math.max(...ttfts).toFixed(0)} ms; stream gap p99 ${percentile(streamGaps, 99).toFixed(1)} ms`,
    );
    await expect.poll(async () => (await metric(server.origin, 'num_requests_running')) + (await metric(server.origin, 'num_requests_waiting')), { timeout: 30_000 }).toBe(0);
    expect(await metric(server.origin, 'kv_cache_usage_perc')).toBe(0);
  }, 180_000);
});
