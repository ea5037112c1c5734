// Serving many clients at once, end to end: a generated checkpoint, the real addon and engine, the
// real server on loopback, the official `openai` client, and /metrics read as Prometheus text.
//  (a) 32 concurrent greedy requests of mixed prompt lengths give exactly the tokens they give one
//      at a time (logprobs within 1e-3): prefix caching on and off, and a pool small enough to preempt;
//  (b) after finished, aborted (client gone, streaming and not) and preempted requests, KV usage is
//      back to the prefix cache's share (0 with prefix caching off);
//  (c) a conversation's second turn hits the prefix cache for the whole first prompt, in blocks;
//  (d) /metrics parses and carries every family, consistent with what was served.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import type { FastifyInstance } from 'fastify';
import { loadServedModel, type LoadedModel, type LoadModelOptions } from '../../src/cli/load-model.ts';
import { estimateKvBytesPerToken } from '../../src/cli/kv-plan.ts';
import { loadModelConfig } from '../../src/model/config.ts';
import { buildApp } from '../../src/server/app.ts';
import { testModel } from '../helpers/model-fixtures.ts';
import { randomTokens } from '../helpers/native-steps.ts';
import { parsePromText, sampleValue, type PromFamily } from '../helpers/prom-text.ts';
import { listenLoopback } from '../helpers/loopback.ts';

const MODEL = 'serve-moe';
const BLOCK = 16;
const MAX_MODEL_LEN = 3072;
const TOL = 1e-3;
const label = { model_name: MODEL };

interface Server {
  loaded: LoadedModel;
  app: FastifyInstance;
  client: OpenAI;
  base: string;
}

let dir = '';
const servers: Server[] = [];

async function startServer(blocks: number, o: Partial<LoadModelOptions>): Promise<Server> {
  // Half a token over the exact size, so float rounding cannot cost a block.
  // The default KV storage (--kv-cache-dtype auto following --dtype auto on this bf16 checkpoint): bf16.
  const estimate = estimateKvBytesPerToken(loadModelConfig(dir), 'bf16');
  const kvCacheGiB = ((blocks * BLOCK + 0.5) * estimate) / 1024 ** 3;
  const loaded = await loadServedModel({ dir, threads: 2, kvCacheGiB, blockSize: BLOCK, maxModelLen: MAX_MODEL_LEN, generationConfig: 'vllm', ...o });
  expect(loaded.kvBlocks).toBe(blocks);
  // The sizing estimate is what the backend really stores.
  expect(loaded.kv.bytesPerToken).toBe(estimate);
  const app = buildApp({ engine: loaded.engine, tokenizer: loaded.tokenizer, template: loaded.template, servedModelName: MODEL, vocabSize: loaded.config.native.vocabSize });
  const base = await listenLoopback(app);
  const server = { loaded, app, base, client: new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120_000 }) };
  servers.push(server);
  return server;
}

async function metrics(s: Server): Promise<Map<string, PromFamily>> {
  const res = await fetch(`${s.base}/metrics`);
  expect(res.status).toBe(200);
  return parsePromText(await res.text());
}

const metric = (f: Map<string, PromFamily>, name: string, sample = name) => sampleValue(f, `moeserve:${name}`, label, `moeserve:${sample}`);

interface Req {
  prompt: number[];
  maxTokens: number;
  logprobs: number;
  ignoreEos: boolean;
  stream: boolean;
}

interface Result {
  ids: number[];
  logprobs: number[];
  tops: Record<string, number>[];
  finish: string | null;
}

/** 32 requests: prompts of 1 to 2900 tokens (some continuing a shared 300-token prefix), half streamed. */
function requests(): Req[] {
  const lens = [1, 2900, 3, 16, 17, 700, 31, 32, 33, 5, 250, 64, 1, 129, 9, 1200, 48, 2, 400, 15, 90, 7, 333, 20, 1000, 11, 160, 4, 65, 600, 8, 24];
  const shared = randomTokens(300, 4242);
  return lens.map((len, i) => {
    const own = randomTokens(len, 100 + i);
    return {
      prompt: i % 2 === 1 && len > 300 ? [...shared, ...own.slice(300)] : own,
      maxTokens: 3 + ((i * 7) % 14),
      logprobs: i % 3 === 0 ? 5 : i % 3 === 1 ? 1 : 0,
      ignoreEos: i % 4 !== 0,
      stream: i % 2 === 0,
    };
  });
}

function body(r: Req) {
  return {
    model: MODEL, prompt: r.prompt, max_tokens: r.maxTokens, temperature: 0, logprobs: r.logprobs,
    return_tokens_as_token_ids: true, ignore_eos: r.ignoreEos,
  };
}

const tokenId = (t: string) => {
  const m = /^token_id:(\d+)$/.exec(t);
  if (!m) throw new Error(`not a token_id:N token: ${t}`);
  return Number(m[1]);
};

async function complete(client: OpenAI, r: Req): Promise<Result> {
  const out: Result = { ids: [], logprobs: [], tops: [], finish: null };
  const add = (lp: OpenAI.Completions.CompletionChoice.Logprobs | null | undefined) => {
    out.ids.push(...(lp?.tokens ?? []).map(tokenId));
    out.logprobs.push(...(lp?.token_logprobs ?? []));
    out.tops.push(...(lp?.top_logprobs ?? []));
  };
  if (r.stream) {
    const stream = await client.completions.create({ ...body(r), stream: true } as OpenAI.CompletionCreateParamsStreaming);
    for await (const chunk of stream) {
      for (const c of chunk.choices) {
        add(c.logprobs);
        out.finish = c.finish_reason ?? out.finish;
      }
    }
  } else {
    const res = await client.completions.create(body(r) as OpenAI.CompletionCreateParamsNonStreaming);
    add(res.choices[0].logprobs);
    out.finish = res.choices[0].finish_reason;
  }
  return out;
}

function compare(got: Result[], want: Result[]): void {
  got.forEach((g, i) => {
    const w = want[i];
    expect(g.ids, `request ${i} tokens`).toEqual(w.ids);
    expect(g.finish, `request ${i} finish`).toBe(w.finish);
    g.logprobs.forEach((lp, k) => expect(Math.abs(lp - w.logprobs[k]), `request ${i} token ${k}`).toBeLessThan(TOL));
    expect(g.tops).toHaveLength(w.tops.length);
    g.tops.forEach((top, k) => {
      // Ranked values agree; ids may differ only between alternatives tied within the tolerance.
      const a = Object.values(top).sort((x, y) => y - x);
      const b = Object.values(w.tops[k]).sort((x, y) => y - x);
      expect(a.length, `request ${i} top ${k}`).toBe(b.length);
      a.forEach((v, j) => expect(Math.abs(v - b[j]), `request ${i} top ${k}`).toBeLessThan(TOL));
      for (const [id, v] of Object.entries(top)) if (id in w.tops[k]) expect(Math.abs(v - w.tops[k][id])).toBeLessThan(TOL);
    });
  });
}

const ABANDONED_MAX_TOKENS = 2000;

/**
 * Two requests whose clients go away mid-generation: a stream after its 5th chunk, and a plain
 * request once `others` have all finished (it is decoding by then: the pool has room).
 */
function abandoned(client: OpenAI, seed: number, others: Promise<unknown>): Promise<void>[] {
  const prompt = (n: number) => randomTokens(n, seed + n);
  const long = { model: MODEL, temperature: 0, max_tokens: ABANDONED_MAX_TOKENS, ignore_eos: true };
  const streamed = (async () => {
    const stream = await client.completions.create({ ...long, prompt: prompt(900), stream: true } as OpenAI.CompletionCreateParamsStreaming);
    let chunks = 0;
    for await (const _chunk of stream) if (++chunks === 5) break; // closes the connection
  })();
  const plain = (async () => {
    const controller = new AbortController();
    void others.finally(() => setTimeout(() => controller.abort(), 100));
    await expect(client.completions.create({ ...long, prompt: prompt(1000) } as OpenAI.CompletionCreateParamsNonStreaming, { signal: controller.signal }))
      .rejects.toBeInstanceOf(OpenAI.APIUserAbortError);
  })();
  return [streamed, plain];
}

async function idle(s: Server): Promise<void> {
  await expect.poll(() => s.loaded.engine.stats().running + s.loaded.engine.stats().waiting, { timeout: 10_000, interval: 20 }).toBe(0);
}

let reqs: Req[] = [];
let alone: Result[] = [];
let reference: Server;

beforeAll(async () => {
  dir = await testModel({
    seed: 31, layers: 2, hidden: 64, heads: 4, kvHeads: 2, headDim: 16, experts: 8, topK: 2, moeIntermediate: 32,
    intermediate: 96, mlpOnlyLayers: [1], maxPositionEmbeddings: MAX_MODEL_LEN,
  });
  reqs = requests();
  // The reference: every request alone, on a roomy pool without prefix caching.
  reference = await startServer(1024, { enablePrefixCaching: false });
  alone = [];
  for (const r of reqs) alone.push(await complete(reference.client, r));
});

afterAll(async () => {
  for (const s of servers) {
    await s.app.close();
    await s.loaded.engine.close();
  }
});

describe('serving many clients at once', () => {
  it('the reference is sane: lengths, finish reasons, a logprob per token', () => {
    alone.forEach((o, i) => {
      expect(o.ids.length, `request ${i}`).toBeGreaterThan(0);
      expect(o.ids.length).toBeLessThanOrEqual(reqs[i].maxTokens);
      if (reqs[i].ignoreEos) expect(o.ids).toHaveLength(reqs[i].maxTokens);
      expect(o.finish).toBe(o.ids.length === reqs[i].maxTokens ? 'length' : 'stop');
      expect(o.logprobs).toHaveLength(o.ids.length);
      o.tops.forEach((t) => expect(Object.keys(t).length).toBe(Math.max(reqs[i].logprobs, 1)));
    });
  });

  it('(a, d) 32 concurrent requests, prefix caching off: same tokens; /metrics counts them', async () => {
    const before = await metrics(reference);
    const got = await Promise.all(reqs.map((r) => complete(reference.client, r)));
    compare(got, alone);
    await idle(reference);
    const after = await metrics(reference);
    const diff = (name: string, sample = name) => metric(after, name, sample) - metric(before, name, sample);
    const generated = got.reduce((n, g) => n + g.ids.length, 0);
    const stops = got.filter((g) => g.finish === 'stop').length;
    expect(diff('prompt_tokens_total')).toBe(reqs.reduce((n, r) => n + r.prompt.length, 0));
    // A stop token is generated but not returned.
    expect(diff('generation_tokens_total')).toBe(generated + stops);
    expect(diff('prefix_cache_queries_total')).toBe(0);
    expect(diff('prefix_cache_hits_total')).toBe(0);
    expect(diff('time_to_first_token_seconds', 'time_to_first_token_seconds_count')).toBe(32);
    expect(diff('inter_token_latency_seconds', 'inter_token_latency_seconds_count')).toBe(generated + stops - 32);
    expect(diff('e2e_request_latency_seconds', 'e2e_request_latency_seconds_count')).toBe(32);
    expect(metric(after, 'num_requests_running')).toBe(0);
    expect(metric(after, 'num_requests_waiting')).toBe(0);
    expect(metric(after, 'kv_cache_usage_perc')).toBe(0);
  });

  it('(d) /metrics is Prometheus text with every family, typed and labelled', async () => {
    const res = await fetch(`${reference.base}/metrics`);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const f = parsePromText(await res.text());
    const types: Record<string, string> = {
      num_requests_running: 'gauge', num_requests_waiting: 'gauge', kv_cache_usage_perc: 'gauge',
      prefix_cache_queries_total: 'counter', prefix_cache_hits_total: 'counter', prompt_tokens_total: 'counter',
      generation_tokens_total: 'counter', num_preemptions_total: 'counter', time_to_first_token_seconds: 'histogram',
      inter_token_latency_seconds: 'histogram', e2e_request_latency_seconds: 'histogram',
    };
    for (const [name, type] of Object.entries(types)) {
      const fam = f.get(`moeserve:${name}`);
      expect(fam?.type, name).toBe(type);
      expect(fam!.help.length).toBeGreaterThan(0);
      expect(fam!.samples.every((s) => s.labels.model_name === MODEL)).toBe(true);
    }
    // Histogram buckets are cumulative and end at the count.
    for (const name of ['time_to_first_token_seconds', 'inter_token_latency_seconds', 'e2e_request_latency_seconds']) {
      const buckets = f.get(`moeserve:${name}`)!.samples.filter((s) => s.name.endsWith('_bucket')).map((s) => s.value);
      expect(buckets).toEqual([...buckets].sort((a, b) => a - b));
      expect(buckets.at(-1)).toBe(metric(f, name, `${name}_count`));
      expect(buckets.at(-1)).toBeGreaterThan(0);
    }
  });

  it('(a, b) prefix caching on: same tokens; afterwards usage is the prefix cache share', async () => {
    const s = await startServer(1024, { enablePrefixCaching: true, maxNumSeqs: 32, maxNumBatchedTokens: 256 });
    const got = await Promise.all(reqs.map((r) => complete(s.client, r)));
    compare(got, alone);
    await idle(s);
    const f = await metrics(s);
    const st = s.loaded.engine.stats();
    expect(st.kvBlocksUsed).toBe(0);
    expect(st.kvBlocksCached).toBeGreaterThan(0);
    expect(metric(f, 'kv_cache_usage_perc')).toBeCloseTo(st.kvBlocksCached / 1024, 12);
    // The requests sharing the 300-token prefix reused it.
    expect(metric(f, 'prefix_cache_hits_total')).toBeGreaterThanOrEqual(Math.floor(300 / BLOCK) * BLOCK);
    expect(metric(f, 'prefix_cache_queries_total')).toBe(reqs.reduce((n, r) => n + r.prompt.length, 0));
  });

  for (const caching of [true, false]) {
    it(`(a, b) a pool that forces preemption, prefix caching ${caching ? 'on' : 'off'}, with clients going away: same tokens, KV back to ${caching ? 'the cache share' : '0'}`, async () => {
      // 200 blocks hold 3200 tokens: the longest request fits alone; all 34 together need ~15000.
      const s = await startServer(200, { enablePrefixCaching: caching, maxNumSeqs: 32, maxNumBatchedTokens: 512 });
      const served = Promise.all(reqs.map((r) => complete(s.client, r)));
      const [got] = await Promise.all([served, ...abandoned(s.client, caching ? 1 : 2, served)]);
      compare(got, alone);
      await idle(s);
      const f = await metrics(s);
      expect(metric(f, 'num_preemptions_total')).toBeGreaterThan(0);
      expect(metric(f, 'num_requests_running') + metric(f, 'num_requests_waiting')).toBe(0);
      const st = s.loaded.engine.stats();
      expect(st.kvBlocksUsed).toBe(0);
      if (caching) {
        expect(st.kvBlocksCached).toBeGreaterThan(0);
        expect(metric(f, 'kv_cache_usage_perc')).toBeCloseTo(st.kvBlocksCached / 200, 12);
      } else {
        expect(st.kvBlocksCached).toBe(0);
        expect(metric(f, 'kv_cache_usage_perc')).toBe(0);
      }
      // The abandoned requests ended early: together nowhere near the max_tokens of either.
      const generated = got.reduce((n, g) => n + g.ids.length, 0);
      expect(metric(f, 'generation_tokens_total') - generated).toBeLessThan(ABANDONED_MAX_TOKENS);
    });
  }

  it('(c) a second chat turn hits the prefix cache for the first prompt, in whole blocks', async () => {
    const s = await startServer(1024, { enablePrefixCaching: true });
    const { tokenizer, template } = s.loaded;
    const rules = Array.from({ length: 12 }, (_, i) => `Rule ${i + 1}: cite a source for every claim about topic ${i + 1}.`).join('\n');
    const system = { role: 'system' as const, content: `You are a research agent. Answer briefly.\n${rules}` };
    // The first prompt's last token ("\n" after "assistant") may merge with the reply's first
    // characters when turn 2 re-renders it; a length that is not a whole number of blocks keeps that
    // token out of the blocks being counted.
    let question = 'What is a mixture of experts?';
    const promptLen = (q: string) => tokenizer.encode(template!.render([system, { role: 'user', content: q }])).length;
    while (promptLen(question) % BLOCK === 0) question += ' Please.';
    const turn1 = [system, { role: 'user' as const, content: question }];
    const first = await s.client.chat.completions.create({ model: MODEL, messages: turn1, max_tokens: 12, temperature: 0 });
    const firstPrompt = first.usage!.prompt_tokens;
    expect(firstPrompt).toBe(promptLen(question));
    expect(firstPrompt).toBeGreaterThan(10 * BLOCK);
    const turn2 = [...turn1, { role: 'assistant' as const, content: first.choices[0].message.content ?? '' }, { role: 'user' as const, content: 'And why is it fast?' }];
    const before = metric(await metrics(s), 'prefix_cache_hits_total');
    const second = await s.client.chat.completions.create({ model: MODEL, messages: turn2, max_tokens: 8, temperature: 0 });
    const hits = metric(await metrics(s), 'prefix_cache_hits_total') - before;
    expect(hits).toBeGreaterThanOrEqual(Math.floor(firstPrompt / BLOCK) * BLOCK);
    expect(hits).toBeLessThan(second.usage!.prompt_tokens);
    // Reusing the cached KV changes nothing: the same turn on the server without prefix caching.
    const cold = await reference.client.chat.completions.create({ model: MODEL, messages: turn2, max_tokens: 8, temperature: 0 });
    expect(second.choices[0].message.content).toBe(cold.choices[0].message.content);
  });
});
