// Issue 11.2: one small request must not be able to kill or freeze the server by asking for thousands
// of choices. Reported: /v1/completions with 8,192 prompt strings (about 65 KB of JSON) grew the heap
// to V8's limit in ~50 s (the choices' streams were merged by a Promise.race over every pending stream
// per event: O(choices × events)). Now: a 400 naming both numbers past --max-choices-per-request
// (1024 by default, vLLM's VLLM_MAX_COMPLETION_PROMPTS), and a linear merge when the cap is raised.
// Also 11.7: n > 10 must not log MaxListenersExceededWarning (a log line any client could trigger).
// The server runs as `moeserve serve` in its own process, so /health measures its event loop alone.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkChoiceCount } from '../../src/server/context.ts';
import { tinyModelDir, TINY_MODEL } from '../helpers/tiny-server.ts';
import { metric, probeHealth, startServeProcess, type ServeProcess } from '../helpers/serve-process.ts';

const SERVER_ARGS = ['--served-model-name', TINY_MODEL, '--max-model-len', '512', '--kv-cache-memory', '0.05', '--no-prefix-caching', '--threads', '1', '--generation-config', 'vllm'];
const prompts = (count: number) => Array.from({ length: count }, (_, i) => `p${i}`);

let dir = '';
const servers: ServeProcess[] = [];

beforeAll(async () => {
  dir = await tinyModelDir();
});

afterAll(() => {
  for (const s of servers) s.kill();
});

async function post(origin: string, route: string, body: object): Promise<{ status: number; json: any; ms: number }> {
  const t0 = performance.now();
  const res = await fetch(`${origin}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const json = await res.json();
  return { status: res.status, json, ms: performance.now() - t0 };
}

async function idle(origin: string): Promise<void> {
  await expect.poll(async () => (await metric(origin, 'num_requests_running')) + (await metric(origin, 'num_requests_waiting')), { timeout: 30_000 }).toBe(0);
  expect(await metric(origin, 'kv_cache_usage_perc')).toBe(0);
}

describe('requests for thousands of choices', () => {
  it('are refused with a 400 naming prompts and n, at once, by default', async () => {
    const server = await startServeProcess(dir, SERVER_ARGS);
    servers.push(server);
    const health = await probeHealth(server.origin);
    const many = await post(server.origin, '/v1/completions', { model: TINY_MODEL, prompt: prompts(8192), max_tokens: 1 });
    expect(many.status).toBe(400);
    expect(many.json.error).toMatchObject({ code: 400, param: 'prompt' });
    expect(many.json.error.message).toContain('8192 choices (8192 prompts × n 1)');
    expect(many.json.error.message).toContain('1024');
    expect(many.json.error.message).toContain('--max-choices-per-request');
    expect(many.ms).toBeLessThan(2000);

    const product = await post(server.origin, '/v1/completions', { model: TINY_MODEL, prompt: prompts(64), n: 128, max_tokens: 1 });
    expect(product.status).toBe(400);
    expect(product.json.error.message).toContain('8192 choices (64 prompts × n 128)');

    const ids = await post(server.origin, '/v1/completions', { model: TINY_MODEL, prompt: Array.from({ length: 2000 }, () => [1, 2]), max_tokens: 1 });
    expect(ids.status).toBe(400);
    expect(ids.json.error.param).toBe('prompt');

    // Chat's n alone stays under the default cap (the schema allows n <= 128); the same check names 'n'.
    expect(() => checkChoiceCount(1, 2000, 1024)).toThrow(/2000 choices \(n 2000\); this server serves at most 1024 per request/);

    // At the cap, served.
    const atCap = await post(server.origin, '/v1/completions', { model: TINY_MODEL, prompt: prompts(64), n: 16, max_tokens: 1, temperature: 0 });
    expect(atCap.status).toBe(200);
    expect(atCap.json.choices).toHaveLength(1024);

    const latencies = await health.stop();
    expect(Math.max(...latencies), `/health latencies (ms): ${latencies.map((l) => l.toFixed(0)).join(' ')}`).toBeLessThan(100);
    await idle(server.origin);
  });

  it('with the cap raised, the 8,192-prompt request is served in linear time while /health answers within 100 ms', async () => {
    const server = await startServeProcess(dir, [...SERVER_ARGS, '--max-choices-per-request', '8192']);
    servers.push(server);
    const health = await probeHealth(server.origin);
    const res = await post(server.origin, '/v1/completions', { model: TINY_MODEL, prompt: prompts(8192), max_tokens: 2, temperature: 0 });
    const latencies = await health.stop();
    expect(res.status).toBe(200);
    expect(res.json.choices).toHaveLength(8192);
    expect(res.json.choices.map((c: { index: number }) => c.index)).toEqual(Array.from({ length: 8192 }, (_, i) => i));
    expect(res.json.usage.completion_tokens).toBe(8192 * 2);
    expect(latencies.length).toBeGreaterThan(10);
    expect(Math.max(...latencies), `/health latencies (ms): max of ${latencies.length}`).toBeLessThan(100);
    // Still serving, nothing left in the engine.
    expect((await fetch(`${server.origin}/health`)).status).toBe(200);
    await idle(server.origin);
    console.log(`8192 choices served in ${(res.ms / 1000).toFixed(1)} s; /health max ${Math.max(...latencies).toFixed(1)} ms over ${latencies.length} probes`);
  }, 180_000);

  it('n above 10 logs no MaxListenersExceededWarning, streamed or not', async () => {
    const server = servers[0];
    for (const stream of [false, true]) {
      const res = await fetch(`${server.origin}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: TINY_MODEL, messages: [{ role: 'user', content: 'hi' }], n: 64, max_tokens: 3, stream }),
      });
      expect(res.status).toBe(200);
      await res.text();
    }
    await new Promise((r) => setTimeout(r, 200));
    expect(server.output()).not.toMatch(/MaxListenersExceeded|Warning/);
  });
});
