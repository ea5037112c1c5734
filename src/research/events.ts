// What a research run reports while it runs (ResearchOptions.onEvent; progress.ts renders them). Every event
// names its agent: 0 in ReAct mode, 1…N for Heavy mode's IterResearch agents, and 'synthesis' for the
// Research-Synthesis call; `at` is milliseconds since the run started.

export type AgentId = number | 'synthesis';

export interface TokenUsage {
  prompt: number;
  completion: number;
}

/** Why an agent stopped. */
export type Termination =
  /** The model wrote <answer>…</answer>. */
  | 'answer'
  /** The context neared max-context; the model was asked for its best answer now and gave one. */
  | 'context limit'
  /** As 'context limit', but the reply had no <answer>: its text (thinking removed) stands as the answer. */
  | 'context limit, no answer tags'
  /** The reply had no <answer> tags: its text (thinking removed) stands as the answer (the synthesis). */
  | 'no answer tags'
  /** The context was full: not even the request asking for the answer fitted the server's context. */
  | 'context full'
  /** The call budget (max-calls) ran out before an answer. */
  | 'call budget'
  /** The run was aborted (ResearchOptions.signal). */
  | 'aborted'
  /** A request failed (the error is in the agent's result and the trace). */
  | 'error';

export type ResearchEvent =
  | { type: 'start'; at: number; mode: 'react' | 'heavy'; agents: number; question: string; model: string; baseURL: string; tools: string[]; maxCalls: number; maxContext: number }
  /** A chat completion request is sent. `round` counts the agent's model calls from 1. */
  | { type: 'request'; at: number; agent: AgentId; round: number; final: boolean }
  /** Its reply. `total` is the whole run's usage so far. */
  | { type: 'response'; at: number; agent: AgentId; round: number; usage: TokenUsage; ms: number; finishReason: string | null; total: TokenUsage; calls: number }
  /** The model asked for a tool. `arguments` is what it wrote (parsed when it parsed). */
  | { type: 'tool_call'; at: number; agent: AgentId; round: number; name: string; arguments: unknown }
  /** The tool's output as sent back (after truncation); `error` when it failed (the error text is what the model got). */
  | { type: 'tool_result'; at: number; agent: AgentId; round: number; name: string; chars: number; truncated: boolean; ms: number; error?: string }
  /** Heavy mode: an agent's report after a round. */
  | { type: 'report'; at: number; agent: AgentId; round: number; chars: number }
  /** The context neared max-context: the agent is asked for its answer now. */
  | { type: 'context_limit'; at: number; agent: AgentId; round: number; promptTokens: number; maxContext: number }
  /** A retry: an empty reply, or max_tokens cut to the room the server reported. */
  | { type: 'retry'; at: number; agent: AgentId; round: number; reason: string }
  | { type: 'agent_done'; at: number; agent: AgentId; rounds: number; termination: Termination; answer: string | null; error?: string }
  | { type: 'done'; at: number; answer: string | null; termination: Termination };
