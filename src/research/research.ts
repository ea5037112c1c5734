// research(question, options): Tongyi DeepResearch's agent paradigms against any OpenAI-compatible
// /v1/chat/completions — ReAct (react.ts) by default, Heavy mode (heavy.ts: N IterResearch agents and a
// Research-Synthesis call) with `heavy: N`. The CLI's `moeserve research` is a thin layer over this.
import { setMaxListeners } from 'node:events';
import OpenAI from 'openai';
import type { ResearchEvent, Termination } from './events.ts';
import { runHeavy } from './heavy.ts';
import { isoDate } from './prompts.ts';
import { runReact, type AgentResult } from './react.ts';
import { MetricsWatcher, metricsUrl, type MetricsReport } from './server-metrics.ts';
import { REFERENCE_SAMPLING, ResearchSession, type Sampling } from './session.ts';
import type { ResearchTool } from './tool.ts';
import { createTools, type CreateToolsOptions } from './tools/index.ts';
import { TraceRecorder, type ResearchTrace } from './trace.ts';

/** react_agent.py's MAX_LLM_CALL_PER_RUN default. */
export const DEFAULT_MAX_CALLS = 100;
/** react_agent.py's limit: 110 × 1024 tokens (of the model's 128K). */
export const REFERENCE_MAX_CONTEXT = 110 * 1024;
export const DEFAULT_TOOL_OUTPUT_CHARS = 20_000;
export const DEFAULT_REPORT_CHARS = 12_000;
export const DEFAULT_TOOL_TIMEOUT_MS = 120_000;

export interface ResearchOptions {
  /** An OpenAI base URL, e.g. http://127.0.0.1:8000/v1. */
  baseURL: string;
  /** Default: the first model the server lists at /v1/models. */
  model?: string;
  /** Default 'EMPTY' (as for vLLM). */
  apiKey?: string;
  /** 0 or absent: ReAct; N ≥ 1: Heavy mode with N IterResearch agents and a synthesis. */
  heavy?: number;
  /** Model calls per agent (default 100, the reference's). */
  maxCalls?: number;
  /**
   * Tokens: when an agent's next prompt would reach this, it is asked for its answer now. Default: the
   * reference's 110K, at most the server's context (from /v1/models) less room for a reply.
   */
  maxContext?: number;
  /** The tools: built ones, or names for createTools (default search and visit) with `toolOptions`. */
  tools?: ResearchTool[] | string[];
  /** For tools given by name: corpusDir, serperApiKey, serperBaseUrl, allowNetwork, fetch… */
  toolOptions?: Omit<CreateToolsOptions, 'names'>;
  /** Characters of one tool output sent back to the model (default 20000). */
  toolOutputChars?: number;
  /** Per tool call (default 120 s). */
  toolTimeoutMs?: number;
  /** Heavy mode: the longest report carried between rounds, in characters (default 12000). */
  reportChars?: number;
  /** Overrides of the reference sampling (temperature 0.6, top_p 0.95, presence_penalty 1.1, max_tokens 10000, its stop strings). */
  sampling?: Partial<Sampling>;
  signal?: AbortSignal;
  onEvent?: (event: ResearchEvent) => void;
  /** Writes the JSON trace there at the end (also when the run fails). */
  trace?: string;
  /** Read the server's /metrics (default true); intervalMs: how often num_requests_running is sampled. */
  metrics?: boolean | { url?: string; intervalMs?: number };
  /** The date in the system prompt (default today, YYYY-MM-DD). */
  date?: string;
  /** An OpenAI client to use instead of one built from baseURL/apiKey. */
  client?: OpenAI;
  /** fetch for the OpenAI client and /metrics (tests). */
  fetch?: typeof fetch;
  /** Per request (default 10 minutes). */
  timeoutMs?: number;
}

export interface ResearchStats {
  /** Chat completion requests made (retries included). */
  calls: number;
  promptTokens: number;
  completionTokens: number;
  elapsedMs: number;
  /** Completion tokens per second of the whole run (all agents together, tool time included). */
  tokensPerSecond: number;
}

export interface ResearchResult {
  /** The final answer; null when the run ended without one (see termination). */
  answer: string | null;
  /** Heavy mode: the synthesis' reasoning (its <think>). */
  reasoning: string | null;
  termination: Termination;
  mode: 'react' | 'heavy';
  model: string;
  agents: AgentResult[];
  stats: ResearchStats;
  metrics: MetricsReport | null;
  trace: ResearchTrace;
}

/** A run that failed (a request error, every Heavy agent failing, an abort); `trace` holds what happened. */
export class ResearchError extends Error {
  constructor(message: string, readonly trace: ResearchTrace, readonly termination: Termination) {
    super(message);
    this.name = termination === 'aborted' ? 'AbortError' : 'ResearchError';
  }
}

interface ModelInfo {
  id: string;
  max_model_len?: number;
}

async function listModels(client: OpenAI, signal: AbortSignal): Promise<ModelInfo[]> {
  const page = await client.models.list({ signal });
  return page.data as unknown as ModelInfo[];
}

function positiveInt(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`${name} must be a positive integer (got ${value})`);
  return value;
}

export async function research(question: string, options: ResearchOptions): Promise<ResearchResult> {
  if (typeof question !== 'string' || question.trim() === '') throw new Error('the question is empty');
  const heavy = options.heavy ?? 0;
  if (!Number.isSafeInteger(heavy) || heavy < 0) throw new Error(`heavy must be a whole number of agents (got ${heavy})`);
  const mode = heavy > 0 ? 'heavy' : 'react';
  const maxCalls = positiveInt('maxCalls', options.maxCalls ?? DEFAULT_MAX_CALLS);
  const sampling: Sampling = { ...REFERENCE_SAMPLING, ...options.sampling };
  positiveInt('max_tokens', sampling.max_tokens);
  const toolOutputChars = positiveInt('toolOutputChars', options.toolOutputChars ?? DEFAULT_TOOL_OUTPUT_CHARS);
  const reportChars = positiveInt('reportChars', options.reportChars ?? DEFAULT_REPORT_CHARS);
  const toolTimeoutMs = positiveInt('toolTimeoutMs', options.toolTimeoutMs ?? DEFAULT_TOOL_TIMEOUT_MS);
  // The run's own signal, following the caller's: every request and tool call listens to it (no listener cap).
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  const abort = () => controller.abort(options.signal?.reason);
  if (options.signal?.aborted) abort();
  else options.signal?.addEventListener('abort', abort, { once: true });
  const signal = controller.signal;

  const tools =
    options.tools !== undefined && options.tools.length > 0 && typeof options.tools[0] !== 'string'
      ? (options.tools as ResearchTool[])
      : await createTools({ ...options.toolOptions, names: options.tools as string[] | undefined });
  const client = options.client ?? new OpenAI({
    baseURL: options.baseURL,
    apiKey: options.apiKey || 'EMPTY',
    timeout: options.timeoutMs ?? 600_000,
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });

  // The model and the server's context length, from /v1/models (moeserve and vLLM report max_model_len).
  let models: ModelInfo[] = [];
  let listError: string | null = null;
  try {
    models = await listModels(client, signal);
  } catch (err) {
    listError = (err as Error).message;
  }
  const model = options.model ?? models[0]?.id;
  if (model === undefined) {
    throw new Error(`no model to ask: ${listError !== null ? `GET ${options.baseURL}/models failed (${listError})` : `${options.baseURL}/models lists none`}; name one (--model)`);
  }
  const served = models.find((m) => m.id === model);
  const maxModelLen = typeof served?.max_model_len === 'number' && served.max_model_len > 0 ? served.max_model_len : null;
  const maxContext = positiveInt(
    'maxContext',
    options.maxContext ?? (maxModelLen === null ? REFERENCE_MAX_CONTEXT : Math.min(REFERENCE_MAX_CONTEXT, maxModelLen - Math.min(sampling.max_tokens, Math.floor(maxModelLen / 4)))),
  );

  const start = performance.now();
  const config = {
    baseURL: options.baseURL, model, mode, agents: mode === 'heavy' ? heavy : 1, maxCalls, maxContext, maxModelLen,
    tools: tools.map((t) => t.name), toolOutputChars, reportChars: mode === 'heavy' ? reportChars : undefined, sampling,
  };
  const recorder = new TraceRecorder({ question, mode, config });
  const emit = (event: ResearchEvent) => {
    try {
      options.onEvent?.(event);
    } catch {
      // a listener's error is not the run's
    }
  };
  const session = new ResearchSession({
    client, model, sampling, tools, toolOutputChars, toolTimeoutMs, maxModelLen, signal, trace: recorder, emit, start,
  });
  const metricsOption = options.metrics ?? true;
  const watcher = metricsOption === false
    ? null
    : new MetricsWatcher(
        (typeof metricsOption === 'object' ? metricsOption.url : undefined) ?? metricsUrl(options.baseURL),
        options.fetch ?? fetch,
        typeof metricsOption === 'object' ? metricsOption.intervalMs : undefined,
      );
  await watcher?.start();

  const date = options.date ?? isoDate();
  emit({ type: 'start', at: 0, mode, agents: config.agents, question, model, baseURL: options.baseURL, tools: config.tools, maxCalls, maxContext });
  let answer: string | null;
  let reasoning: string | null = null;
  let termination: Termination;
  let agents: AgentResult[];
  let error: string | undefined;
  if (mode === 'react') {
    const agent = await runReact(session, question, { maxCalls, maxContext, date });
    agents = [agent];
    ({ answer, termination, error } = agent);
  } else {
    const result = await runHeavy(session, question, { agents: heavy, maxCalls, maxContext, date, reportChars });
    ({ answer, reasoning, termination, agents, error } = result);
  }
  options.signal?.removeEventListener('abort', abort);
  const metrics = (await watcher?.stop()) ?? null;
  const elapsedMs = Math.round(performance.now() - start);
  const stats: ResearchStats = {
    calls: session.calls,
    promptTokens: session.totals.prompt,
    completionTokens: session.totals.completion,
    elapsedMs,
    tokensPerSecond: elapsedMs > 0 ? session.totals.completion / (elapsedMs / 1000) : 0,
  };
  emit({ type: 'done', at: elapsedMs, answer, termination });
  const trace = recorder.trace;
  trace.result = { answer, reasoning, termination };
  trace.stats = stats;
  trace.metrics = metrics;
  if (error !== undefined && (termination === 'error' || termination === 'aborted')) trace.error = error;
  if (options.trace !== undefined) recorder.write(options.trace);
  if (termination === 'error' || termination === 'aborted') {
    throw new ResearchError(termination === 'aborted' ? `research aborted${error ? `: ${error}` : ''}` : `research failed: ${error ?? 'unknown error'}`, trace, termination);
  }
  return { answer, reasoning, termination, mode, model, agents, stats, metrics, trace };
}
