// Prometheus metrics for GET /metrics, named after vLLM's (`vllm:` → `moeserve:`), each with a
// `model_name` label. Gauges and counters are read from engine.stats() when scraped; the latency
// histograms time the engine's event streams as the HTTP layer consumes them.
//
// kv_cache_usage_perc counts the blocks held by requests plus the free blocks that still keep a
// reusable cached prefix, i.e. every block that cannot be handed out without evicting something.
// Once all requests are done it falls back to the share held by the prefix cache (0 without
// prefix caching). Cached blocks are evicted (LRU) on demand, so a value near 1 with prefix
// caching on is not by itself memory pressure: num_requests_waiting and num_preemptions_total are.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Engine, EngineEvent, EngineStats, GenerateRequest } from '../engine/types.ts';

export const METRIC_PREFIX = 'moeserve:';

/** vLLM's buckets (vllm/v1/metrics/loggers.py), so dashboards built for vLLM read the same. */
export const TTFT_BUCKETS = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
export const ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];
export const E2E_BUCKETS = [
  0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
];

/** Share of the pool that cannot be allocated without eviction (see the file comment). */
export function kvCacheUsage(s: Pick<EngineStats, 'kvBlocksTotal' | 'kvBlocksUsed' | 'kvBlocksCached'>): number {
  return s.kvBlocksTotal > 0 ? (s.kvBlocksUsed + s.kvBlocksCached) / s.kvBlocksTotal : 0;
}

type CounterField = 'prefixCacheQueries' | 'prefixCacheHits' | 'promptTokens' | 'generationTokens' | 'numPreemptions';

const COUNTERS: [name: string, help: string, field: CounterField][] = [
  ['prefix_cache_queries_total', 'Prefix cache queries, in prompt tokens looked up.', 'prefixCacheQueries'],
  ['prefix_cache_hits_total', 'Prefix cache hits, in prompt tokens found cached.', 'prefixCacheHits'],
  ['prompt_tokens_total', 'Prompt tokens of the requests received.', 'promptTokens'],
  ['generation_tokens_total', 'Tokens generated.', 'generationTokens'],
  ['num_preemptions_total', 'Sequences preempted (their KV freed, to be recomputed later).', 'numPreemptions'],
];

export interface ServingMetrics {
  readonly registry: Registry;
  readonly contentType: string;
  /** The Prometheus text exposition, every family read from one engine.stats() snapshot. */
  render(): Promise<string>;
  /** `engine` with its requests timed into the latency histograms; everything else passes through. */
  instrument(engine: Engine): Engine;
}

export interface MetricsOptions {
  /** Read at scrape time. */
  engine: Pick<Engine, 'stats'>;
  modelName: string;
  /** Milliseconds; injectable for tests. */
  now?: () => number;
}

export function createMetrics(options: MetricsOptions): ServingMetrics {
  const { engine, modelName } = options;
  const now = options.now ?? (() => performance.now());
  const labels = { model_name: modelName };
  const registry = new Registry();
  const labelNames = ['model_name'] as const;
  // One snapshot per scrape keeps the families consistent with each other.
  let snapshot: EngineStats | null = null;
  const stats = () => snapshot ?? engine.stats();

  const gauge = (name: string, help: string, read: (s: EngineStats) => number) =>
    new Gauge({
      name: METRIC_PREFIX + name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.set(labels, read(stats()));
      },
    });
  gauge('num_requests_running', 'Requests in the running batch (their KV in the pool).', (s) => s.running);
  gauge('num_requests_waiting', 'Requests waiting to be scheduled (new or preempted).', (s) => s.waiting);
  gauge('kv_cache_usage_perc', 'KV cache usage, 0-1: blocks held by requests or by the prefix cache.', kvCacheUsage);

  for (const [name, help, field] of COUNTERS) {
    // The engine's counters are monotonic totals: add only what grew since the last scrape.
    let seen = 0;
    const counter = new Counter({
      name: METRIC_PREFIX + name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        const value = stats()[field];
        if (value > seen) {
          this.inc(labels, value - seen);
          seen = value;
        }
      },
    });
    counter.inc(labels, 0);
  }

  const histogram = (name: string, help: string, buckets: number[]) => {
    const h = new Histogram({ name: METRIC_PREFIX + name, help, labelNames, buckets, registers: [registry] });
    h.zero(labels);
    return h.labels(labels);
  };
  const ttft = histogram('time_to_first_token_seconds', 'Time from request arrival to its first token.', TTFT_BUCKETS);
  const itl = histogram('inter_token_latency_seconds', 'Time between consecutive tokens of a request.', ITL_BUCKETS);
  const e2e = histogram('e2e_request_latency_seconds', 'Time from arrival to the last token, of requests that finished (stop or length).', E2E_BUCKETS);

  async function* timed(events: AsyncIterable<EngineEvent>, start: number): AsyncGenerator<EngineEvent> {
    let tokens = 0;
    let last = start;
    const token = (t: number) => {
      (tokens === 0 ? ttft : itl).observe((t - last) / 1000);
      last = t;
      tokens++;
    };
    for await (const event of events) {
      if (event.type === 'token') token(now());
      else if (event.type === 'finish' && event.reason !== 'abort') {
        const t = now();
        // A stop token is sampled but not sent as an event: it still ends a token interval.
        if (event.completionTokens > tokens) token(t);
        e2e.observe((t - start) / 1000);
      }
      yield event;
    }
  }

  return {
    registry,
    contentType: registry.contentType,
    async render() {
      snapshot = engine.stats();
      try {
        return await registry.metrics();
      } finally {
        snapshot = null;
      }
    },
    instrument(inner: Engine): Engine {
      return {
        get maxModelLen() {
          return inner.maxModelLen;
        },
        get eosTokenIds() {
          return inner.eosTokenIds;
        },
        generate: (request: GenerateRequest) => timed(inner.generate(request), now()),
        stats: () => inner.stats(),
        close: (reason?: Error) => inner.close(reason),
      };
    },
  };
}
