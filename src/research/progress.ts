// Live progress of a research run on a terminal (stderr by default; the answer goes to stdout). Events are
// logged as lines — each tool call with its arguments, its result's size, context cut-offs, retries, each
// agent's end — and, on a TTY, a status block below them is redrawn in place: one line per agent (its round
// and what it is doing), and the run's elapsed time, calls and tokens. Not a TTY (a pipe, a CI log): plain
// lines only, including one per model reply with its tokens, nothing redrawn.
import type { AgentId, ResearchEvent, TokenUsage } from './events.ts';

export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  stream?: ProgressStream;
  /** Default: stream.isTTY. */
  tty?: boolean;
  /** Redraw interval on a TTY (default 1000 ms; elapsed time keeps moving while the model thinks). */
  refreshMs?: number;
  /** Characters of a tool call's arguments shown (default 200). */
  argumentChars?: number;
}

export interface Progress {
  onEvent(event: ResearchEvent): void;
  /** Stops redrawing and clears the status block (the log lines stay). */
  close(): void;
}

const num = (n: number) => Math.round(n).toLocaleString('en-US');
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

function clip(text: string, max: number): string {
  const flat = text.replace(/[ \t]*[\r\n\t]+[ \t]*/g, ' ');
  return flat.length <= max ? flat : `${flat.slice(0, Math.max(0, max - 1))}…`;
}

function agentName(agent: AgentId, heavy: boolean): string {
  if (agent === 'synthesis') return 'synthesis';
  return heavy ? `agent ${agent}` : 'agent';
}

interface AgentState {
  round: number;
  doing: string;
  tokens: number;
  done: boolean;
}

export function createProgress(options: ProgressOptions = {}): Progress {
  const stream = options.stream ?? process.stderr;
  const tty = options.tty ?? stream.isTTY === true;
  const argChars = options.argumentChars ?? 200;
  const agents = new Map<AgentId, AgentState>();
  let heavy = false;
  let startedAt = performance.now();
  let total: TokenUsage = { prompt: 0, completion: 0 };
  let calls = 0;
  let drawn = 0;
  let timer: NodeJS.Timeout | null = null;
  let closed = false;

  const width = () => Math.max(40, (stream.columns ?? 120) - 1);
  const stamp = (at: number) => `[${(at / 1000).toFixed(1).padStart(6)}s]`;
  const state = (agent: AgentId): AgentState => {
    let s = agents.get(agent);
    if (s === undefined) agents.set(agent, (s = { round: 0, doing: 'starting', tokens: 0, done: false }));
    return s;
  };

  const statusLines = (): string[] => {
    const elapsed = performance.now() - startedAt;
    const lines = [...agents].map(([id, s]) => clip(`  ${agentName(id, heavy).padEnd(heavy ? 9 : 5)} │ round ${String(s.round).padStart(3)} │ ${num(s.tokens).padStart(7)} tok │ ${s.doing}`, width()));
    const rate = elapsed > 0 ? total.completion / (elapsed / 1000) : 0;
    lines.push(clip(`  ${secs(elapsed)} · ${calls} calls · ${num(total.prompt + total.completion)} tokens (prompt ${num(total.prompt)}, completion ${num(total.completion)}) · ${rate.toFixed(1)} tok/s`, width()));
    return lines;
  };

  const render = (log: string[]) => {
    if (closed) return;
    if (!tty) {
      for (const line of log) stream.write(`${line}\n`);
      return;
    }
    let out = drawn > 0 ? `\x1b[${drawn}A\r\x1b[J` : '';
    for (const line of log) out += `${clip(line, width())}\n`;
    const status = statusLines();
    out += status.map((l) => `${l}\n`).join('');
    drawn = status.length;
    stream.write(out);
  };

  const onEvent = (e: ResearchEvent) => {
    const log: string[] = [];
    const who = 'agent' in e ? `${agentName(e.agent, heavy)} · round ${'round' in e ? e.round : '-'}` : '';
    switch (e.type) {
      case 'start':
        heavy = e.mode === 'heavy';
        startedAt = performance.now() - e.at;
        log.push(
          `${stamp(e.at)} ${heavy ? `Heavy mode: ${e.agents} IterResearch agents and a synthesis` : 'ReAct'} · model ${e.model} at ${e.baseURL} · ` +
            `tools ${e.tools.join(', ') || 'none'} · at most ${num(e.maxCalls)} calls${heavy ? ' per agent' : ''} · max context ${num(e.maxContext)} tokens`,
        );
        if (heavy) for (let i = 1; i <= e.agents; i++) state(i);
        else state(0);
        break;
      case 'request': {
        const s = state(e.agent);
        s.round = e.round;
        s.doing = e.agent === 'synthesis' ? 'writing the answer from the reports' : e.final ? 'writing its answer' : 'thinking';
        break;
      }
      case 'response': {
        const s = state(e.agent);
        s.tokens += e.usage.prompt + e.usage.completion;
        total = e.total;
        calls = e.calls;
        if (!tty) log.push(`${stamp(e.at)} ${who} · reply ${num(e.usage.completion)} tokens (prompt ${num(e.usage.prompt)}) in ${secs(e.ms)}${e.finishReason === 'length' ? ' [cut at max_tokens]' : ''} · run ${num(e.total.prompt + e.total.completion)} tokens`);
        break;
      }
      case 'tool_call': {
        const args = typeof e.arguments === 'string' ? e.arguments : JSON.stringify(e.arguments);
        state(e.agent).doing = `${e.name} ${clip(args, 80)}`;
        log.push(`${stamp(e.at)} ${who} · ${e.name} ${clip(args, argChars)}`);
        break;
      }
      case 'tool_result':
        state(e.agent).doing = 'thinking';
        log.push(
          e.error !== undefined
            ? `${stamp(e.at)} ${who} · ${e.name} → ${clip(e.error, argChars)}`
            : `${stamp(e.at)} ${who} · ${e.name} → ${num(e.chars)} chars${e.truncated ? ' (truncated)' : ''} in ${secs(e.ms)}`,
        );
        break;
      case 'report':
        if (!tty) log.push(`${stamp(e.at)} ${who} · report ${num(e.chars)} chars`);
        break;
      case 'context_limit':
        log.push(`${stamp(e.at)} ${who} · context ~${num(e.promptTokens)} tokens ≥ max ${num(e.maxContext)}: asking for the answer now`);
        break;
      case 'retry':
        log.push(`${stamp(e.at)} ${who} · retry: ${e.reason}`);
        break;
      case 'agent_done': {
        const s = state(e.agent);
        s.done = true;
        s.round = e.rounds;
        s.doing = `done: ${e.termination}${e.error ? ` (${clip(e.error, 80)})` : ''}`;
        log.push(`${stamp(e.at)} ${agentName(e.agent, heavy)} done after ${e.rounds} round${e.rounds === 1 ? '' : 's'}: ${e.termination}${e.error ? ` (${e.error})` : ''}`);
        break;
      }
      case 'done':
        break;
    }
    render(log);
  };

  if (tty) {
    timer = setInterval(() => render([]), options.refreshMs ?? 1000);
    timer.unref();
  }
  return {
    onEvent,
    close() {
      if (timer !== null) clearInterval(timer);
      if (tty && drawn > 0 && !closed) stream.write(`\x1b[${drawn}A\r\x1b[J`);
      closed = true;
    },
  };
}

/** The end-of-run summary lines: tokens, calls, elapsed, tokens/s, and the server's prefix cache and batching. */
export function summaryLines(result: {
  stats: { calls: number; promptTokens: number; completionTokens: number; elapsedMs: number; tokensPerSecond: number };
  metrics: import('./server-metrics.ts').MetricsReport | null;
  termination: string;
  agents: { agent: AgentId; termination: string; rounds: number }[];
  mode: string;
}): string[] {
  const s = result.stats;
  const lines = [
    `${result.termination === 'answer' ? 'answered' : `ended: ${result.termination}`} in ${secs(s.elapsedMs)} · ${s.calls} model calls · ` +
      `${num(s.promptTokens + s.completionTokens)} tokens (prompt ${num(s.promptTokens)}, completion ${num(s.completionTokens)}) · ${s.tokensPerSecond.toFixed(1)} tok/s generated`,
  ];
  if (result.mode === 'heavy') {
    lines.push(`agents: ${result.agents.map((a) => `${agentName(a.agent, true)} ${a.termination} (${a.rounds} rounds)`).join(', ')}`);
  }
  const m = result.metrics;
  if (m === null) lines.push('server metrics: not read');
  else if (!m.available) lines.push(`server metrics: ${m.reason}`);
  else {
    const rate = m.prefixCacheHitRate === null ? 'no lookups' : `${(m.prefixCacheHitRate * 100).toFixed(1)}%`;
    lines.push(`server (${m.server}): prefix-cache hit rate ${rate} (${num(m.prefixCacheHits)} of ${num(m.prefixCacheQueries)} prompt tokens) · peak ${m.peakRunning} requests running at once`);
  }
  return lines;
}
