// What the agents of one research run share: the OpenAI client and sampling, the run's token and call
// totals, its events and trace, the tools (with their output budget and timeout), and the token estimate
// calibrated on the server's own usage reports (no local tokenizer).
import OpenAI from 'openai';
import type { AgentId, ResearchEvent, TokenUsage } from './events.ts';
import { replyText, type ReplyMessage, type ToolCallRead } from './parse.ts';
import type { ResearchTool } from './tool.ts';
import type { TraceMessage, TraceRecorder } from './trace.ts';

/** The sampling of every request: react_agent.py's call_server by default. */
export interface Sampling {
  temperature: number;
  top_p: number;
  presence_penalty: number;
  /** Per reply; cut to the room left in the server's context when that is known (see ResearchSession.chat). */
  max_tokens: number;
  stop: string[];
  /** The reference asks for logprobs and never reads them; off here (they cost the server time and the reply size). */
  logprobs: boolean;
  /** More request fields, sent as given (e.g. top_k, seed, repetition_penalty). */
  extra?: Record<string, unknown>;
}

export const REFERENCE_SAMPLING: Sampling = {
  temperature: 0.6,
  top_p: 0.95,
  presence_penalty: 1.1,
  max_tokens: 10000,
  stop: ['\n<tool_response>', '<tool_response>'],
  logprobs: false,
};

/** Empty replies retried (the reference retries them too) before the agent gives up on the round. */
export const EMPTY_REPLY_RETRIES = 2;

/** Thrown when the prompt alone no longer fits the server's context. */
export class ContextExceededError extends Error {
  constructor(message: string, readonly promptTokens: number | null) {
    super(message);
  }
}

export interface ChatReply {
  /** The reply as one text (parse.ts replyText). */
  text: string;
  finishReason: string | null;
  usage: TokenUsage;
  ms: number;
}

export interface ToolOutcome {
  /** What goes inside <tool_response>: the (truncated) output, or the error text. */
  text: string;
  error?: string;
  truncated: boolean;
}

export interface SessionOptions {
  client: OpenAI;
  model: string;
  sampling: Sampling;
  tools: readonly ResearchTool[];
  toolOutputChars: number;
  toolTimeoutMs: number;
  /** The server's context length (from /v1/models), when it reports one. */
  maxModelLen: number | null;
  signal: AbortSignal;
  trace: TraceRecorder;
  emit: (event: ResearchEvent) => void;
  start: number;
}

const messageChars = (messages: readonly TraceMessage[]) => messages.reduce((n, m) => n + m.content.length + 16, 0);

/** Truncates a tool's output to `budget` characters, saying so in the text the model gets. */
export function truncateOutput(text: string, budget: number): { text: string; truncated: boolean } {
  if (text.length <= budget) return { text, truncated: false };
  const note = `\n[… output truncated: ${budget} of ${text.length} characters shown]`;
  return { text: text.slice(0, Math.max(0, budget - note.length)) + note, truncated: true };
}

export class ResearchSession {
  readonly totals: TokenUsage = { prompt: 0, completion: 0 };
  calls = 0;
  /** Tokens per character of prompt, from the last reply's usage (English is about 0.25; start cautious). */
  private tokensPerChar = 0.34;
  private readonly toolsByName: Map<string, ResearchTool>;

  constructor(readonly o: SessionOptions) {
    this.toolsByName = new Map(o.tools.map((t) => [t.name, t]));
  }

  now(): number {
    return Math.round(performance.now() - this.o.start);
  }

  emit(event: ResearchEvent): void {
    this.o.emit(event);
  }

  /** Estimated prompt tokens of `messages`, calibrated on the server's counts so far. */
  estimateTokens(messages: readonly TraceMessage[]): number {
    return Math.ceil(messageChars(messages) * this.tokensPerChar) + 8;
  }

  /** Estimated tokens of `chars` characters of text. */
  estimateChars(chars: number): number {
    return Math.ceil(chars * this.tokensPerChar);
  }

  /**
   * One chat completion: the agent's messages with the run's sampling. max_tokens is cut to the room the
   * server's context leaves (estimated; when the server answers that the reply does not fit, once more with
   * the room it reports). Empty replies are retried. Throws ContextExceededError when the prompt alone does
   * not fit, and the client's error (after its own retries of connection errors and 5xx) otherwise.
   */
  async chat(agent: AgentId, round: number, messages: TraceMessage[], final: boolean, promptEstimate?: number): Promise<ChatReply> {
    const { sampling, maxModelLen } = this.o;
    let maxTokens = sampling.max_tokens;
    if (maxModelLen !== null) {
      const estimate = promptEstimate ?? this.estimateTokens(messages);
      maxTokens = Math.max(1, Math.min(maxTokens, maxModelLen - estimate));
    }
    let empties = 0;
    let roomRetried = false;
    this.emit({ type: 'request', at: this.now(), agent, round, final });
    for (;;) {
      const params: Record<string, unknown> = {
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        presence_penalty: sampling.presence_penalty,
        max_tokens: maxTokens,
        stop: sampling.stop,
        ...(sampling.logprobs ? { logprobs: true } : {}),
        ...sampling.extra,
      };
      const entry = this.o.trace.request(agent, round, this.now(), messages, params);
      const t0 = performance.now();
      let response: OpenAI.ChatCompletion;
      try {
        this.calls++;
        response = await this.o.client.chat.completions.create(
          { model: this.o.model, messages: messages as OpenAI.ChatCompletionMessageParam[], ...params } as OpenAI.ChatCompletionCreateParamsNonStreaming,
          { signal: this.o.signal },
        );
      } catch (err) {
        entry.ms = Math.round(performance.now() - t0);
        entry.error = (err as Error).message;
        const context = contextError(err);
        if (context?.kind === 'reply' && !roomRetried && context.room >= 1) {
          roomRetried = true;
          maxTokens = context.room;
          this.emit({ type: 'retry', at: this.now(), agent, round, reason: `max_tokens cut to the ${context.room} tokens the server's context leaves` });
          continue;
        }
        if (context?.kind === 'prompt') throw new ContextExceededError((err as Error).message, context.promptTokens);
        throw err;
      }
      const ms = Math.round(performance.now() - t0);
      const choice = response.choices[0];
      const text = replyText((choice?.message ?? {}) as ReplyMessage);
      const usage = { prompt: response.usage?.prompt_tokens ?? 0, completion: response.usage?.completion_tokens ?? 0 };
      this.totals.prompt += usage.prompt;
      this.totals.completion += usage.completion;
      if (usage.prompt > 0) this.tokensPerChar = Math.max(0.05, usage.prompt / messageChars(messages));
      Object.assign(entry, { ms, reply: text, finishReason: choice?.finish_reason ?? null, usage });
      this.emit({ type: 'response', at: this.now(), agent, round, usage, ms, finishReason: choice?.finish_reason ?? null, total: { ...this.totals }, calls: this.calls });
      if (text === '' && empties < EMPTY_REPLY_RETRIES) {
        empties++;
        this.emit({ type: 'retry', at: this.now(), agent, round, reason: 'empty reply' });
        continue;
      }
      return { text, finishReason: choice?.finish_reason ?? null, usage, ms };
    }
  }

  /**
   * Runs a tool call as the model wrote it. Never throws (but for an abort of the run): an unknown tool, bad
   * JSON, a tool's error or its timeout become an error text for the model, as in the reference agent.
   */
  async runTool(agent: AgentId, round: number, call: ToolCallRead): Promise<ToolOutcome> {
    const t0 = performance.now();
    const name = call.ok ? call.name : '(invalid)';
    const args: unknown = call.ok ? call.arguments : call.block;
    this.emit({ type: 'tool_call', at: this.now(), agent, round, name, arguments: args });
    let output: string;
    let error: string | undefined;
    if (!call.ok) {
      output = call.error;
      error = call.error;
    } else {
      const tool = this.toolsByName.get(call.name);
      if (tool === undefined) {
        output = `Error: Tool ${call.name} not found`;
        error = output;
      } else {
        const signal = AbortSignal.any([this.o.signal, AbortSignal.timeout(this.o.toolTimeoutMs)]);
        try {
          output = await tool.run(call.arguments, signal);
          if (typeof output !== 'string') output = String(output);
        } catch (err) {
          if (this.o.signal.aborted) throw err;
          const message = signal.aborted && !this.o.signal.aborted
            ? `timed out after ${this.o.toolTimeoutMs / 1000} s`
            : (err as Error)?.message ?? String(err);
          output = `Error: ${call.name} failed: ${message}`;
          error = output;
        }
      }
    }
    const chars = output.length;
    const { text, truncated } = truncateOutput(output, this.o.toolOutputChars);
    const ms = Math.round(performance.now() - t0);
    this.o.trace.tool({ agent, round, at: this.now(), ms, name, arguments: args, result: text, truncated, chars, ...(error ? { error } : {}) });
    this.emit({ type: 'tool_result', at: this.now(), agent, round, name, chars: text.length, truncated, ms, ...(error ? { error } : {}) });
    return { text, truncated, ...(error ? { error } : {}) };
  }
}

/** A 400 saying the request does not fit the context (moeserve's and vLLM's wording). */
function contextError(err: unknown): { kind: 'reply'; room: number } | { kind: 'prompt'; promptTokens: number | null } | null {
  if (!(err instanceof OpenAI.APIError) || err.status !== 400) return null;
  const message = err.message;
  const limit = /maximum context length is (\d+)/.exec(message);
  if (limit === null) return null;
  const requested = /\((\d+) in the (?:input|messages|prompt)/.exec(message);
  if (requested !== null) {
    const promptTokens = Number(requested[1]);
    const room = Number(limit[1]) - promptTokens;
    return room >= 1 ? { kind: 'reply', room } : { kind: 'prompt', promptTokens };
  }
  const prompt = /(\d+) input tokens/.exec(message);
  return { kind: 'prompt', promptTokens: prompt ? Number(prompt[1]) : null };
}
