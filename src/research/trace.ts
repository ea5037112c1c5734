// The JSON trace of a research run (`--trace FILE`, ResearchResult.trace): every model request (its
// messages, sampling, reply, usage and timing), every tool call (arguments, the result the model got,
// timing), each agent's outcome, the synthesis, the run's totals and the server's metrics.
//
// Messages are delta-coded per agent, or the trace of a long ReAct run would repeat its whole history in
// every request: a request's `messages` are those after the first `keep` messages of that agent's previous
// request (keep 0: all of them). The full list of request k is prev.messages.slice(0, keep) + messages.
// Times (`at`) are milliseconds since the run started; `ms` are durations.
import fs from 'node:fs';
import type { AgentId, Termination, TokenUsage } from './events.ts';

export interface TraceMessage {
  role: string;
  content: string;
}

export interface TraceRequest {
  type: 'request';
  agent: AgentId;
  round: number;
  at: number;
  ms: number;
  /** Leading messages of this agent's previous request that this one repeats (not written again). */
  keep: number;
  messages: TraceMessage[];
  params: Record<string, unknown>;
  /** The reply as the agent read it (see parse.ts replyText), the server's finish_reason and usage. */
  reply?: string;
  finishReason?: string | null;
  usage?: TokenUsage;
  error?: string;
}

export interface TraceToolCall {
  type: 'tool';
  agent: AgentId;
  round: number;
  at: number;
  ms: number;
  name: string;
  arguments: unknown;
  /** The text sent back inside <tool_response> (truncated as the model got it). */
  result: string;
  truncated: boolean;
  /** The tool's own output length before truncation. */
  chars: number;
  error?: string;
}

export interface TraceNote {
  type: 'note';
  agent: AgentId;
  round: number;
  at: number;
  text: string;
}

export type TraceEntry = TraceRequest | TraceToolCall | TraceNote;

export interface TraceAgent {
  agent: AgentId;
  rounds: number;
  termination: Termination;
  answer: string | null;
  /** Heavy mode: the agent's last report. */
  report?: string;
  error?: string;
}

export interface ResearchTrace {
  version: 1;
  question: string;
  mode: 'react' | 'heavy';
  startedAt: string;
  config: Record<string, unknown>;
  entries: TraceEntry[];
  agents: TraceAgent[];
  result?: { answer: string | null; reasoning: string | null; termination: Termination };
  stats?: unknown;
  metrics?: unknown;
  error?: string;
}

const sameMessage = (a: TraceMessage, b: TraceMessage) => a.role === b.role && a.content === b.content;

export class TraceRecorder {
  readonly trace: ResearchTrace;
  private readonly lastMessages = new Map<AgentId, TraceMessage[]>();

  constructor(init: Pick<ResearchTrace, 'question' | 'mode' | 'config'>) {
    this.trace = { version: 1, ...init, startedAt: new Date().toISOString(), entries: [], agents: [] };
  }

  /** Adds a request (its reply fields filled in later on the returned object). */
  request(agent: AgentId, round: number, at: number, messages: readonly TraceMessage[], params: Record<string, unknown>): TraceRequest {
    const prev = this.lastMessages.get(agent) ?? [];
    let keep = 0;
    while (keep < prev.length && keep < messages.length && sameMessage(prev[keep], messages[keep])) keep++;
    this.lastMessages.set(agent, messages.map((m) => ({ role: m.role, content: m.content })));
    const entry: TraceRequest = {
      type: 'request', agent, round, at, ms: 0, keep,
      messages: messages.slice(keep).map((m) => ({ role: m.role, content: m.content })),
      params,
    };
    this.trace.entries.push(entry);
    return entry;
  }

  tool(entry: Omit<TraceToolCall, 'type'>): void {
    this.trace.entries.push({ type: 'tool', ...entry });
  }

  note(agent: AgentId, round: number, at: number, text: string): void {
    this.trace.entries.push({ type: 'note', agent, round, at, text });
  }

  agent(outcome: TraceAgent): void {
    this.trace.agents.push(outcome);
  }

  write(file: string): void {
    fs.writeFileSync(file, `${JSON.stringify(this.trace, null, 2)}\n`);
  }
}

/** A request's full message list, rebuilt from the delta-coded entries before it (for readers and tests). */
export function fullMessages(trace: Pick<ResearchTrace, 'entries'>, request: TraceRequest): TraceMessage[] {
  let messages: TraceMessage[] = [];
  for (const e of trace.entries) {
    if (e.type !== 'request' || e.agent !== request.agent) continue;
    messages = [...messages.slice(0, e.keep), ...e.messages];
    if (e === request) return messages;
  }
  throw new Error('request not in the trace');
}
