// /metrics without the addon: families, counters that follow the engine's totals without double
// counting, gauges read at scrape time, latency histograms timed on a fake clock, and the route.
import fs from 'node:fs';
import { beforeEach, describe, expect, it } from 'vitest';
import {
  createMetrics,
  E2E_BUCKETS,
  ITL_BUCKETS,
  kvCacheUsage,
  TTFT_BUCKETS,
} from '../../src/server/metrics.ts';
import { RequestError, type Engine, type EngineEvent, type EngineStats, type GenerateRequest } from '../../src/engine/types.ts';
import { buildApp } from '../../src/server/app.ts';
import { createTokenizer } from '../../src/chat/tokenizer.ts';
import { createChatTemplate } from '../../src/chat/template.ts';
import { qwen3TokenizerFile } from '../../src/model/tokenizer-files.ts';
import { parsePromText, sampleValue, type PromFamily } from '../helpers/prom-text.ts';
import { ScriptedEngine } from './server-scripted-engine.ts';

const zeroStats = (): EngineStats => ({
  running: 0, waiting: 0, kvBlocksTotal: 100, kvBlocksUsed: 0, kvBlocksCached: 0, numPreemptions: 0,
  prefixCacheQueries: 0, prefixCacheHits: 0, promptTokens: 0, generationTokens: 0,
});

/** Events at given clock times; the fake clock jumps to each event's time before it is delivered. */
class TimedEngine implements Engine {
  readonly maxModelLen = 1234;
  readonly eosTokenIds = [7];
  current = zeroStats();
  clock = 0;
  constructor(private readonly script: [atMs: number, event: EngineEvent][]) {}
  generate(request: GenerateRequest): AsyncIterable<EngineEvent> {
    if (request.promptTokens.length === 0) {
      return (async function* () {
        throw new RequestError('empty prompt', 'prompt');
      })();
    }
    const self = this;
    return (async function* () {
      for (const [at, event] of self.script) {
        self.clock = at;
        yield event;
      }
    })();
  }
  stats(): EngineStats {
    return { ...this.current };
  }
  async close(): Promise<void> {}
}

const params = { maxTokens: 8, temperature: 0, topP: 1, topK: 0, stopTokenIds: [], ignoreEos: false, logprobs: null, promptLogprobs: null };
const label = { model_name: 'm' };

async function scrape(render: () => Promise<string>): Promise<Map<string, PromFamily>> {
  return parsePromText(await render());
}

async function drain(events: AsyncIterable<EngineEvent>): Promise<EngineEvent[]> {
  const out: EngineEvent[] = [];
  for await (const e of events) out.push(e);
  return out;
}

function histogram(f: Map<string, PromFamily>, name: string): { sum: number; count: number; buckets: Map<number, number> } {
  const fam = f.get(name)!;
  const buckets = new Map<number, number>();
  for (const s of fam.samples) if (s.name === `${name}_bucket`) buckets.set(Number(s.labels.le === '+Inf' ? Infinity : s.labels.le), s.value);
  return { sum: sampleValue(f, name, label, `${name}_sum`), count: sampleValue(f, name, label, `${name}_count`), buckets };
}

describe('metrics', () => {
  let engine: TimedEngine;
  let metrics: ReturnType<typeof createMetrics>;

  beforeEach(() => {
    engine = new TimedEngine([
      [100, { type: 'token', token: 1, logprob: null }],
      [150, { type: 'token', token: 2, logprob: null }],
      [250, { type: 'token', token: 3, logprob: null }],
      // The stop token (7) was sampled at 300 ms but is not sent as a token event.
      [300, { type: 'finish', reason: 'stop', promptTokens: 5, completionTokens: 4, stopToken: 7 }],
    ]);
    metrics = createMetrics({ engine, modelName: 'm', now: () => engine.clock });
  });

  it('exposes every family, typed, labelled with the model name, from the first scrape', async () => {
    const f = await scrape(metrics.render);
    const want: Record<string, string> = {
      'moeserve:num_requests_running': 'gauge',
      'moeserve:num_requests_waiting': 'gauge',
      'moeserve:kv_cache_usage_perc': 'gauge',
      'moeserve:prefix_cache_queries_total': 'counter',
      'moeserve:prefix_cache_hits_total': 'counter',
      'moeserve:prompt_tokens_total': 'counter',
      'moeserve:generation_tokens_total': 'counter',
      'moeserve:num_preemptions_total': 'counter',
      'moeserve:time_to_first_token_seconds': 'histogram',
      'moeserve:inter_token_latency_seconds': 'histogram',
      'moeserve:e2e_request_latency_seconds': 'histogram',
    };
    expect(Object.fromEntries([...f.values()].map((x) => [x.name, x.type]))).toEqual(want);
    for (const fam of f.values()) {
      expect(fam.samples.length, fam.name).toBeGreaterThan(0);
      for (const s of fam.samples) expect(s.labels.model_name, s.name).toBe('m');
      if (fam.type !== 'histogram') expect(sampleValue(f, fam.name, label)).toBe(0);
    }
    expect(metrics.contentType).toMatch(/^text\/plain/);
  });

  it("uses vLLM's histogram buckets", async () => {
    const f = await scrape(metrics.render);
    const les = (name: string) => [...histogram(f, name).buckets.keys()];
    expect(les('moeserve:time_to_first_token_seconds')).toEqual([...TTFT_BUCKETS, Infinity]);
    expect(les('moeserve:inter_token_latency_seconds')).toEqual([...ITL_BUCKETS, Infinity]);
    expect(les('moeserve:e2e_request_latency_seconds')).toEqual([...E2E_BUCKETS, Infinity]);
    expect(TTFT_BUCKETS.at(-1)).toBe(2560);
    expect(E2E_BUCKETS.at(-1)).toBe(7680);
  });

  it('counters follow the engine totals: repeated scrapes never add twice', async () => {
    engine.current = { ...zeroStats(), promptTokens: 10, generationTokens: 3, prefixCacheQueries: 10, prefixCacheHits: 0, numPreemptions: 1 };
    let f = await scrape(metrics.render);
    expect(sampleValue(f, 'moeserve:prompt_tokens_total', label)).toBe(10);
    f = await scrape(metrics.render);
    expect(sampleValue(f, 'moeserve:prompt_tokens_total', label)).toBe(10);
    expect(sampleValue(f, 'moeserve:num_preemptions_total', label)).toBe(1);
    engine.current = { ...engine.current, promptTokens: 42, generationTokens: 9, prefixCacheQueries: 42, prefixCacheHits: 16 };
    f = await scrape(metrics.render);
    expect(sampleValue(f, 'moeserve:prompt_tokens_total', label)).toBe(42);
    expect(sampleValue(f, 'moeserve:generation_tokens_total', label)).toBe(9);
    expect(sampleValue(f, 'moeserve:prefix_cache_queries_total', label)).toBe(42);
    expect(sampleValue(f, 'moeserve:prefix_cache_hits_total', label)).toBe(16);
  });

  it('gauges read the engine at scrape time; KV usage counts request-held and cached blocks', async () => {
    engine.current = { ...zeroStats(), running: 3, waiting: 2, kvBlocksTotal: 200, kvBlocksUsed: 30, kvBlocksCached: 20 };
    let f = await scrape(metrics.render);
    expect(sampleValue(f, 'moeserve:num_requests_running', label)).toBe(3);
    expect(sampleValue(f, 'moeserve:num_requests_waiting', label)).toBe(2);
    expect(sampleValue(f, 'moeserve:kv_cache_usage_perc', label)).toBeCloseTo(0.25, 12);
    engine.current = { ...engine.current, running: 0, waiting: 0, kvBlocksUsed: 0 };
    f = await scrape(metrics.render);
    expect(sampleValue(f, 'moeserve:num_requests_running', label)).toBe(0);
    expect(sampleValue(f, 'moeserve:kv_cache_usage_perc', label)).toBeCloseTo(0.1, 12);
    expect(kvCacheUsage({ kvBlocksTotal: 0, kvBlocksUsed: 0, kvBlocksCached: 0 })).toBe(0);
  });

  it('times TTFT, inter-token latency (the stop token included) and e2e latency of a request', async () => {
    const timed = metrics.instrument(engine);
    expect(timed.maxModelLen).toBe(1234);
    expect(timed.eosTokenIds).toEqual([7]);
    const events = await drain(timed.generate({ promptTokens: [1, 2, 3, 4, 5], params }));
    expect(events.map((e) => e.type)).toEqual(['token', 'token', 'token', 'finish']);
    const f = await scrape(metrics.render);
    const ttft = histogram(f, 'moeserve:time_to_first_token_seconds');
    expect(ttft.count).toBe(1);
    expect(ttft.sum).toBeCloseTo(0.1, 9);
    expect(ttft.buckets.get(0.08)).toBe(0);
    expect(ttft.buckets.get(0.1)).toBe(1);
    const itl = histogram(f, 'moeserve:inter_token_latency_seconds');
    expect(itl.count).toBe(3); // 150-100, 250-150, 300-250
    expect(itl.sum).toBeCloseTo(0.2, 9);
    expect(itl.buckets.get(0.05)).toBe(2);
    const e2e = histogram(f, 'moeserve:e2e_request_latency_seconds');
    expect(e2e.count).toBe(1);
    expect(e2e.sum).toBeCloseTo(0.3, 9);
  });

  it('an aborted request adds no e2e latency; an engine refusal passes through untouched', async () => {
    const aborted = new TimedEngine([
      [40, { type: 'token', token: 1, logprob: null }],
      [90, { type: 'finish', reason: 'abort', promptTokens: 1, completionTokens: 1 }],
    ]);
    const m = createMetrics({ engine: aborted, modelName: 'm', now: () => aborted.clock });
    const timed = m.instrument(aborted);
    await drain(timed.generate({ promptTokens: [1], params }));
    await expect(drain(timed.generate({ promptTokens: [], params }))).rejects.toThrow(RequestError);
    const f = await scrape(m.render);
    expect(histogram(f, 'moeserve:time_to_first_token_seconds').count).toBe(1);
    expect(histogram(f, 'moeserve:inter_token_latency_seconds').count).toBe(0);
    expect(histogram(f, 'moeserve:e2e_request_latency_seconds').count).toBe(0);
  });
});

describe('GET /metrics', () => {
  it('is served outside /v1 without the API key, and times requests made through the routes', async () => {
    const config = JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer_config.json'), 'utf8'));
    const tokenizer = createTokenizer(JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer.json'), 'utf8')), config);
    const engine = new ScriptedEngine(tokenizer.encode(' one two three'));
    const app = buildApp({ engine, tokenizer, template: createChatTemplate(config), servedModelName: ['tiny', 'alias'], apiKey: 'k' });
    try {
      const done = await app.inject({
        method: 'POST', url: '/v1/completions', headers: { authorization: 'Bearer k' },
        payload: { model: 'tiny', prompt: 'hi', max_tokens: 2 },
      });
      expect(done.statusCode).toBe(200);
      const res = await app.inject({ method: 'GET', url: '/metrics' });
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
      const f = parsePromText(res.body);
      const tiny = { model_name: 'tiny' };
      expect(sampleValue(f, 'moeserve:time_to_first_token_seconds', tiny, 'moeserve:time_to_first_token_seconds_count')).toBe(1);
      expect(sampleValue(f, 'moeserve:inter_token_latency_seconds', tiny, 'moeserve:inter_token_latency_seconds_count')).toBe(1);
      expect(sampleValue(f, 'moeserve:e2e_request_latency_seconds', tiny, 'moeserve:e2e_request_latency_seconds_count')).toBe(1);
    } finally {
      await app.close();
    }
  });
});
