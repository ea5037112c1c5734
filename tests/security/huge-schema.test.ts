// Issue 11.3, its third attack: four response_format schemas with 60,000-value enums blocked the event
// loop for 24 s (grammar generation and compilation ran on it). Now guided decoding runs on a worker
// thread, and a schema over 4,096 enum values is refused on the event loop by one walk that does not
// visit the values: /health stays under 50 ms at p99 while such requests keep coming, and the server
// then serves guided requests as before. `moeserve serve` runs in its own process.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tinyModelDir, TINY_MODEL } from '../helpers/tiny-server.ts';
import { percentile, probeHealth, startServeProcess, type ServeProcess } from '../helpers/serve-process.ts';

let server: ServeProcess;

beforeAll(async () => {
  // The body limit a 128K context gets (8 MiB), so the attack's bodies (about 1 MB each) get in.
  server = await startServeProcess(await tinyModelDir(), ['--served-model-name', TINY_MODEL, '--max-model-len', '512', '--max-body-size', '8', '--kv-cache-memory', '0.05', '--threads', '1']);
});

afterAll(() => server?.kill());

const enumSchema = (values: number, salt: number) => ({
  type: 'object',
  properties: { choice: { enum: Array.from({ length: values }, (_, i) => `option-${salt}-${i}`) } },
  required: ['choice'],
});

const chat = (schema: object) =>
  fetch(`${server.origin}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: TINY_MODEL, messages: [{ role: 'user', content: 'pick one' }], max_tokens: 64, response_format: { type: 'json_schema', json_schema: { name: 'pick', schema } } }),
  });

describe('huge JSON schemas', () => {
  it('four concurrent 60,000-value enums, again and again, are refused (400) while /health keeps answering', async () => {
    const health = await probeHealth(server.origin);
    const t0 = performance.now();
    for (let round = 0; round < 10; round++) {
      const replies = await Promise.all([0, 1, 2, 3].map((k) => chat(enumSchema(60_000, round * 4 + k))));
      for (const r of replies) {
        expect(r.status).toBe(400);
        const body = (await r.json()) as { error: { param: string; message: string } };
        expect(body.error.param).toBe('response_format.json_schema.schema');
        expect(body.error.message).toMatch(/too large for guided decoding \(more than 4096 enum and const values in all\)/);
      }
    }
    const ms = performance.now() - t0;
    const latencies = await health.stop();
    const p99 = percentile(latencies, 99);
    console.log(`40 requests with 60,000-value enums refused in ${(ms / 1000).toFixed(1)} s; /health p99 ${p99.toFixed(1)} ms, max ${Math.max(...latencies).toFixed(1)} ms over ${latencies.length} probes`);
    expect(p99).toBeLessThan(50);
    // Guided decoding still works afterwards.
    const ok = await chat(enumSchema(3, 0));
    expect(ok.status).toBe(200);
    const content = ((await ok.json()) as { choices: { message: { content: string } }[] }).choices[0].message.content;
    expect(['option-0-0', 'option-0-1', 'option-0-2']).toContain(JSON.parse(content).choice);
  }, 120_000);
});
