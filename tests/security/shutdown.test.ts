// Issue 11.5: shutdown must not drop work and call it success. Reported: SIGTERM cut in-flight requests
// within a second and returned them as HTTP 200 with finish_reason "abort", which no OpenAI client knows.
// Now: stop accepting, let running requests finish within --shutdown-timeout, then end the rest with an
// error the client sees (a 503; an SSE error event on a started stream), and exit 0.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTinyServer, tinyModelDir, TINY_MODEL } from '../helpers/tiny-server.ts';
import { startServeProcess, type ServeProcess } from '../helpers/serve-process.ts';

const GRACE_S = 2;
let server: ServeProcess;

beforeAll(async () => {
  server = await startServeProcess(await tinyModelDir(), [
    '--served-model-name', TINY_MODEL, '--max-model-len', '512', '--kv-cache-memory', '0.05', '--threads', '1',
    '--max-num-seqs', '128', '--shutdown-timeout', String(GRACE_S), '--generation-config', 'vllm',
  ]);
});

afterAll(() => server?.kill());

const chat = (body: object) =>
  fetch(`${server.origin}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: TINY_MODEL, messages: [{ role: 'user', content: 'Tell me a long story' }], ignore_eos: true, ...body }),
  });

/** Reads an SSE body to its end; the parsed data events, with [DONE] as the string. */
async function events(res: Response): Promise<unknown[]> {
  const text = await res.text();
  return text
    .split('\n\n')
    .filter((e) => e.startsWith('data: '))
    .map((e) => (e === 'data: [DONE]' ? '[DONE]' : JSON.parse(e.slice(6))));
}

describe('SIGTERM', () => {
  it('drains: short requests finish, long ones get a 503 after the grace period, new connections are refused, exit 0', async () => {
    // Long: 32 choices × 480 tokens take far longer than the grace period on this machine.
    const longStream = await chat({ n: 32, max_tokens: 480, stream: true });
    const longPlain = chat({ n: 32, max_tokens: 480 });
    // Short: running when the signal comes, done well within the grace period.
    const short = await chat({ max_tokens: 12, stream: true });
    const shortReader = short.body!.getReader();
    await shortReader.read();
    const signalled = performance.now();
    server.child.kill('SIGTERM');

    // The short request completes normally.
    let shortText = '';
    for (;;) {
      const { done, value } = await shortReader.read();
      if (done) break;
      shortText += new TextDecoder().decode(value);
    }
    const shortEvents = shortText.split('\n\n').filter((e) => e.startsWith('data: {')).map((e) => JSON.parse(e.slice(6)));
    expect(shortEvents.at(-1).choices[0].finish_reason).toBe('length');
    expect(shortText.trimEnd().endsWith('data: [DONE]')).toBe(true);

    // No new connections once draining.
    await expect(fetch(`${server.origin}/health`)).rejects.toThrow();

    // The long stream ends with an OpenAI-shaped 503 error event, then [DONE]; never finish_reason "abort".
    const streamEvents = await events(longStream);
    expect(streamEvents.at(-1)).toBe('[DONE]');
    const error = streamEvents.at(-2) as { error: { code: number; type: string; message: string } };
    expect(error.error).toMatchObject({ code: 503, type: 'ServiceUnavailableError' });
    expect(error.error.message).toMatch(/shutting down.*--shutdown-timeout/);
    expect(JSON.stringify(streamEvents)).not.toContain('"abort"');

    // The long non-streamed request is a 503.
    const plain = await longPlain;
    expect(plain.status).toBe(503);
    expect(((await plain.json()) as { error: { code: number } }).error.code).toBe(503);

    // Exit 0, after the grace period and not long after it.
    expect(await server.exited).toBe(0);
    const tookS = (performance.now() - signalled) / 1000;
    expect(tookS).toBeGreaterThanOrEqual(GRACE_S - 0.1);
    expect(tookS).toBeLessThan(GRACE_S + 8);
    expect(server.output()).toMatch(/SIGTERM: draining/);
  }, 60_000);

  it('answers a request that still arrives while draining with an OpenAI-shaped 503 that closes the connection', async () => {
    const tiny = await startTinyServer();
    try {
      tiny.app.draining = true;
      const res = await tiny.app.inject({ method: 'POST', url: '/v1/completions', payload: { model: TINY_MODEL, prompt: 'hi', max_tokens: 1 } });
      expect(res.statusCode).toBe(503);
      expect(res.headers.connection).toBe('close');
      expect(res.json()).toEqual({ error: { message: 'The server is shutting down.', type: 'ServiceUnavailableError', param: null, code: 503 } });
      tiny.app.draining = false;
    } finally {
      await tiny.close();
    }
  });
});
