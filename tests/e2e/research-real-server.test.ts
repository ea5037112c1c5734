// `research()` end to end against a real moeserve server on loopback (generated random-weight checkpoint, real
// addon, engine, template, grammar worker) with the real corpus tools. A random model never writes a tool call
// by itself, so each request is steered with vLLM's `guided_regex` (added to the request body by a fetch
// wrapper, the only thing between research() and the server): the loop then runs its whole course on the
// model's own tokens — search, visit, answer for ReAct; one round each and a synthesis for Heavy mode — and
// the server's own /metrics show the Heavy agents batched together and hitting the prefix cache.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { research } from '../../src/research/research.ts';
import { loadServedModel, type LoadedModel } from '../../src/cli/load-model.ts';
import { buildApp } from '../../src/server/app.ts';
import type { GuidedDecoding } from '../../src/guided/guided-decoding.ts';
import { listenLoopback } from '../helpers/loopback.ts';
import { tinyModelDir, warmGuidedDecoding } from '../helpers/tiny-server.ts';

let loaded: LoadedModel;
let app: FastifyInstance;
let guided: GuidedDecoding;
let baseURL = '';
const corpus = fs.mkdtempSync(path.join(os.tmpdir(), 'moeserve-research-corpus-'));
fs.writeFileSync(path.join(corpus, 'calatrava.md'), '# Santiago Calatrava\n\nHis first bridge was the Bach de Roda bridge in Barcelona, completed in 1987.\n');
fs.writeFileSync(path.join(corpus, 'lisbon.txt'), 'Lisbon is the capital of Portugal. Its Oriente station opened for Expo 98.\n');

beforeAll(async () => {
  const dir = await tinyModelDir(8192);
  loaded = await loadServedModel({ dir, threads: 2, kvCacheGiB: 0.1, maxModelLen: 8192, generationConfig: 'vllm' });
  const vocabSize = loaded.config.native.vocabSize;
  guided = await warmGuidedDecoding(loaded);
  app = buildApp({ engine: loaded.engine, tokenizer: loaded.tokenizer, template: loaded.template, servedModelName: 'tiny-moe', vocabSize, guidedDecoding: guided });
  baseURL = `${await listenLoopback(app)}/v1`;
}, 120_000);

afterAll(async () => {
  await app?.close();
  await loaded?.engine.close();
  await guided?.close();
  fs.rmSync(corpus, { recursive: true, force: true });
});

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** A fetch that adds `guided_regex` (chosen from the request's messages) to every chat completion request. */
function steering(pick: (messages: { role: string; content: string }[]) => string) {
  const seen: Record<string, unknown>[] = [];
  const wrapped: typeof fetch = async (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    if (url.endsWith('/chat/completions') && typeof init?.body === 'string') {
      const body = JSON.parse(init.body) as Record<string, unknown>;
      body.guided_regex = pick(body.messages as { role: string; content: string }[]);
      seen.push(body);
      return fetch(input, { ...init, body: JSON.stringify(body) });
    }
    return fetch(input, init);
  };
  return { fetch: wrapped, seen };
}

const call = (name: string, args: unknown) => escape(`<tool_call>\n${JSON.stringify({ name, arguments: args })}\n</tool_call>`);

describe('research() against a real moeserve server', () => {
  it('ReAct: searches the corpus, visits the document it found, and answers, on the model’s own tokens', async () => {
    const steer = steering((messages) => {
      const turns = messages.filter((m) => m.role === 'user').length;
      if (turns === 1) return `<think>[a-z ]{1,12}</think>\n${call('search', { query: ['Calatrava first bridge'] })}`;
      if (turns === 2) return `<think>[a-z ]{1,12}</think>\n${call('visit', { url: ['corpus://calatrava.md'], goal: 'first bridge' })}`;
      return '<think>[a-z ]{1,12}</think>\n<answer>Bach de Roda</answer>';
    });
    const events: string[] = [];
    const result = await research('Which bridge did Calatrava build first?', {
      baseURL, fetch: steer.fetch, tools: ['search', 'visit'], toolOptions: { corpusDir: corpus, allowNetwork: false },
      maxCalls: 6, sampling: { max_tokens: 200 }, onEvent: (e) => events.push(e.type), metrics: { intervalMs: 10 },
    });
    expect(result.answer).toBe('Bach de Roda');
    expect(result.termination).toBe('answer');
    expect(steer.seen).toHaveLength(3);
    // The tool responses the model was shown: the search found the document, the visit returned its text.
    const last = steer.seen[2]!.messages as { role: string; content: string }[];
    const responses = last.filter((m) => m.role === 'user' && m.content.startsWith('<tool_response>')).map((m) => m.content);
    expect(responses[0]).toContain('[Santiago Calatrava](corpus://calatrava.md)');
    expect(responses[1]).toContain('Bach de Roda bridge in Barcelona, completed in 1987');
    // The reference agent's request shape, unchanged by the steering.
    expect(steer.seen[0]).toMatchObject({ temperature: 0.6, top_p: 0.95, presence_penalty: 1.1, stop: ['\n<tool_response>', '<tool_response>'] });
    expect(result.stats.calls).toBe(3);
    expect(result.stats.completionTokens).toBeGreaterThan(0);
    expect(events).toContain('tool_result');
  });

  it('Heavy mode: 4 agents batched together on the server, sharing their system prompt through the prefix cache', async () => {
    const steer = steering((messages) => {
      const synthesis = messages.some((m) => m.role === 'user' && /agents? reported:/.test(m.content));
      // Long enough reports that the four agents' requests overlap on the server.
      return synthesis ? '<think>[a-z ]{1,12}</think>\n<answer>[a-z]{3,8}</answer>' : '<think>[a-z ]{1,12}</think>\n<report>[a-z ]{150,160}</report>\n<answer>[a-z]{3,8}</answer>';
    });
    const result = await research('Which bridge did Calatrava build first?', {
      baseURL, fetch: steer.fetch, heavy: 4, tools: ['search', 'visit'], toolOptions: { corpusDir: corpus, allowNetwork: false },
      maxCalls: 3, sampling: { max_tokens: 300 }, metrics: { intervalMs: 5 },
    });
    expect(result.mode).toBe('heavy');
    expect(result.answer).toMatch(/^[a-z]{3,8}$/);
    expect(steer.seen).toHaveLength(5); // 4 agents' rounds and the synthesis
    const m = result.metrics;
    if (!m?.available) throw new Error(`the server's /metrics were not read: ${m?.reason ?? 'off'}`);
    expect(m.server).toBe('moeserve');
    expect(m.peakRunning).toBeGreaterThanOrEqual(2);
    expect(m.prefixCacheHitRate).toBeGreaterThan(0);
    console.log(
      `heavy ×4: prefix-cache hit rate ${(100 * m.prefixCacheHitRate!).toFixed(1)}%, peak ${m.peakRunning} running, ` +
        `${result.stats.tokensPerSecond.toFixed(0)} tok/s over ${result.stats.calls} calls`,
    );
  });
});
