// Issue 11.4: slow clients must not hold resources forever. Reported: a request body sent one byte
// every 30 s was never timed out (500 such connections held for 340 s), and a client that stopped
// reading its stream kept its choices generating into an unbounded queue (+170 MB for 4 clients).
// Now: the whole request must arrive within --request-timeout (408), open connections are capped
// (--max-connections), a choice whose client is behind is paused (MAX_EVENT_BACKLOG events), and a
// stream nobody reads for --write-timeout is closed, aborting the request and freeing its KV blocks;
// meanwhile paused choices give their slots and KV to requests that can run.
// Timeouts are shortened here so the test runs in seconds.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTinyServer, TINY_MODEL, type TinyServer } from '../helpers/tiny-server.ts';

const REQUEST_TIMEOUT_MS = 1000;
const WRITE_TIMEOUT_MS = 8000;
const MAX_CONNECTIONS = 24;
let server: TinyServer;

beforeAll(async () => {
  server = await startTinyServer(
    { requestTimeoutMs: REQUEST_TIMEOUT_MS, writeTimeoutMs: WRITE_TIMEOUT_MS, maxConnections: MAX_CONNECTIONS },
    // 32 sequences at most: the slow reader below takes every slot.
    { enablePrefixCaching: false, maxNumSeqs: 32 },
  );
});

afterAll(async () => {
  await server?.close();
});

interface Conn {
  socket: net.Socket;
  /** Bytes the server sent. */
  received(): string;
  /** Resolves with ms from connect to close. */
  closed: Promise<number>;
}

function connect(): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let data = '';
    const socket = net.connect(server.port, '127.0.0.1');
    const closed = new Promise<number>((r) => socket.on('close', () => r(performance.now() - t0)));
    socket.on('data', (d) => (data += d.toString('latin1')));
    socket.on('error', () => {});
    socket.once('connect', () => resolve({ socket, received: () => data, closed }));
    socket.once('error', reject);
  });
}

async function healthy(): Promise<void> {
  const t0 = performance.now();
  expect((await fetch(`${server.origin}/health`)).status).toBe(200);
  expect(performance.now() - t0).toBeLessThan(500);
}

const stats = () => server.loaded.engine.stats();

describe('slow clients', () => {
  it('a body trickling in a byte at a time is cut off with a 408 after --request-timeout', async () => {
    const conns = await Promise.all(Array.from({ length: 8 }, connect));
    const body = JSON.stringify({ model: TINY_MODEL, prompt: 'hello', max_tokens: 1 });
    for (const c of conns) c.socket.write(`POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`);
    let sent = 0;
    const trickle = setInterval(() => {
      for (const c of conns) if (!c.socket.destroyed) c.socket.write(body[sent]);
      sent++;
    }, 200);
    // A slow header, too: never finished.
    const header = await connect();
    header.socket.write('GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ');
    const times = await Promise.all([...conns, header].map((c) => c.closed));
    clearInterval(trickle);
    for (const c of conns) expect(c.received()).toMatch(/^HTTP\/1\.1 408 /);
    // Cut off within the timeout plus Node's check interval (a quarter of it here), not at the end of the body.
    for (const ms of times) expect(ms).toBeLessThan(REQUEST_TIMEOUT_MS * 2 + 500);
    expect(sent).toBeLessThan(body.length);
    await healthy();
  });

  it(`connections past --max-connections (${MAX_CONNECTIONS}) are closed on arrival, and the server serves again once they go`, async () => {
    const idle: Conn[] = [];
    for (let i = 0; i < MAX_CONNECTIONS; i++) idle.push(await connect());
    // Give the server time to accept them all.
    await new Promise((r) => setTimeout(r, 100));
    const over = await connect();
    const overClosedAfter = await Promise.race([over.closed, new Promise<number>((r) => setTimeout(() => r(-1), 2000))]);
    expect(overClosedAfter).toBeGreaterThanOrEqual(0);
    expect(over.received()).toBe('');
    for (const c of idle) c.socket.destroy();
    await Promise.all(idle.map((c) => c.closed));
    await healthy();
  });

  it('a client that stops reading its stream pauses its choices, then loses the connection after --write-timeout; its KV is freed', async () => {
    const n = 32;
    const maxTokens = 480;
    const before = stats().generationTokens;
    const conn = await connect();
    // Chat with 20 top logprobs per token (token, bytes, logprob each): about 4 KB per event, 15,000
    // events in all, far more than the socket buffers hold.
    const body = JSON.stringify({
      model: TINY_MODEL, messages: [{ role: 'user', content: 'Once upon a time' }], n, max_tokens: maxTokens, ignore_eos: true, logprobs: true, top_logprobs: 20, stream: true,
    });
    conn.socket.write(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
    await expect.poll(() => conn.received().length > 0, { timeout: 10_000 }).toBe(true);
    conn.socket.pause();
    // Generation stalls well short of the end: every choice is paused behind its unread events.
    let last = -1;
    await expect
      .poll(
        async () => {
          const now = stats().generationTokens;
          const still = now === last;
          last = now;
          await new Promise((r) => setTimeout(r, 300));
          return still && stats().running === n;
        },
        { timeout: 40_000, interval: 0 },
      )
      .toBe(true);
    const generated = last - before;
    expect(generated).toBeLessThan(n * maxTokens);
    await healthy();
    // Other requests are served meanwhile: the paused choices, holding every slot, give theirs up (and their KV).
    const preemptions = stats().numPreemptions;
    const other = await fetch(`${server.origin}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: TINY_MODEL, prompt: 'hi', max_tokens: 4, ignore_eos: true }),
    });
    expect(other.status).toBe(200);
    expect(((await other.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(4);
    expect(stats().numPreemptions - preemptions).toBe(n);
    // The write timeout closes the connection; the request is aborted and its blocks freed.
    const t0 = performance.now();
    await expect.poll(() => stats().running + stats().waiting, { timeout: WRITE_TIMEOUT_MS + 10_000 }).toBe(0);
    expect(stats().kvBlocksUsed).toBe(0);
    // Nothing more was generated for it: only the other request's 4 tokens.
    expect(stats().generationTokens).toBe(last + 4);
    // The client, reading again, finds the stream cut off (no [DONE]).
    conn.socket.resume();
    await conn.closed;
    expect(conn.received()).not.toContain('data: [DONE]');
    console.log(`slow reader: ${generated} of ${n * maxTokens} tokens generated before the pause; aborted ${((performance.now() - t0) / 1000).toFixed(1)} s after the pause was seen`);
  }, 90_000);
});
