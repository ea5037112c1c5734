// What the server's Prometheus /metrics says about a run: the prefix-cache hit rate over the run (the
// growth of prefix_cache_hits_total over that of prefix_cache_queries_total, both counted in prompt tokens)
// and the most requests seen running at once (num_requests_running, sampled while the run goes). moeserve
// names them `moeserve:…`, vLLM `vllm:…`; both are read. The counters are the server's, so other clients'
// traffic during the run counts too. /metrics is at the base URL's origin: http://HOST:PORT/v1 →
// http://HOST:PORT/metrics.

export interface ServerMetrics {
  available: true;
  url: string;
  /** 'moeserve' or 'vllm'. */
  server: string;
  prefixCacheQueries: number;
  prefixCacheHits: number;
  /** hits / queries over the run; null when nothing was looked up. */
  prefixCacheHitRate: number | null;
  /** The most requests seen running at once (sampled every intervalMs, and at the start and end). */
  peakRunning: number;
  /** Tokens the server counted over the run (its prompt_tokens_total and generation_tokens_total growth). */
  promptTokens: number | null;
  generationTokens: number | null;
}

export type MetricsReport = ServerMetrics | { available: false; url: string; reason: string };

/** Sums of samples by metric name (every label set added up). */
export function parsePromText(text: string): Map<string, number> {
  const sums = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})?\s+(\S+)/.exec(line);
    if (m === null) continue;
    const value = Number(m[2]);
    if (!Number.isFinite(value)) continue;
    sums.set(m[1], (sums.get(m[1]) ?? 0) + value);
  }
  return sums;
}

const PREFIXES = ['moeserve:', 'vllm:'];

interface Snapshot {
  server: string;
  values: Map<string, number>;
}

/** http://host:port/v1 → http://host:port/metrics (the base URL's path minus a trailing /v1). */
export function metricsUrl(baseURL: string): string {
  const url = new URL(baseURL);
  url.pathname = url.pathname.replace(/\/+$/, '').replace(/\/v1$/, '') + '/metrics';
  url.search = '';
  return url.toString();
}

export class MetricsWatcher {
  private first: Snapshot | null = null;
  private last: Snapshot | null = null;
  private peak = 0;
  private timer: NodeJS.Timeout | null = null;
  private failure: string | null = null;
  private polling: Promise<void> | null = null;

  constructor(
    readonly url: string,
    private readonly fetchImpl: typeof fetch = fetch,
    private readonly intervalMs = 250,
  ) {}

  private async snapshot(): Promise<Snapshot | null> {
    try {
      const res = await this.fetchImpl(this.url, { signal: AbortSignal.timeout(5000) });
      if (!res.ok) {
        this.failure = `GET ${this.url}: HTTP ${res.status}`;
        return null;
      }
      const values = parsePromText(await res.text());
      const prefix = PREFIXES.find((p) => values.has(`${p}prefix_cache_queries_total`));
      if (prefix === undefined) {
        this.failure = `${this.url} has no prefix-cache counters (not moeserve or vLLM)`;
        return null;
      }
      const snap = { server: prefix.slice(0, -1), values: new Map([...values].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v])) };
      this.peak = Math.max(this.peak, snap.values.get('num_requests_running') ?? 0);
      return snap;
    } catch (err) {
      this.failure = `${this.url} unreachable (${(err as Error).message})`;
      return null;
    }
  }

  async start(): Promise<void> {
    this.first = await this.snapshot();
    if (this.first === null) return;
    this.timer = setInterval(() => {
      if (this.polling !== null) return;
      this.polling = this.snapshot().then((s) => {
        if (s !== null) this.last = s;
        this.polling = null;
      });
    }, this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<MetricsReport> {
    if (this.timer !== null) clearInterval(this.timer);
    await this.polling;
    if (this.first === null) return { available: false, url: this.url, reason: this.failure ?? 'not read' };
    const end = (await this.snapshot()) ?? this.last;
    if (end === null) return { available: false, url: this.url, reason: this.failure ?? 'not read at the end' };
    const delta = (name: string) => {
      const a = this.first!.values.get(name);
      const b = end.values.get(name);
      return a === undefined || b === undefined ? null : b - a;
    };
    const queries = delta('prefix_cache_queries_total') ?? 0;
    const hits = delta('prefix_cache_hits_total') ?? 0;
    return {
      available: true,
      url: this.url,
      server: end.server,
      prefixCacheQueries: queries,
      prefixCacheHits: hits,
      prefixCacheHitRate: queries > 0 ? hits / queries : null,
      peakRunning: this.peak,
      promptTokens: delta('prompt_tokens_total'),
      generationTokens: delta('generation_tokens_total'),
    };
  }
}
