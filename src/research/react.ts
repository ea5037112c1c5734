// The ReAct agent, as Tongyi DeepResearch's inference/react_agent.py runs it:
//   messages = [system (the tools inside <tools>, the date), user (the question)]
//   each call: the reply (its <think> and all) is appended as the assistant turn; an <answer>…</answer>
//   ends the run; else its first <tool_call>{json}</tool_call> is run and the result goes back as a user
//   turn "<tool_response>\n…\n</tool_response>" (an invalid call, unknown tool or failing tool: an error
//   text there, never the end of the run); a reply with neither is kept and the model called again.
//   Ends by <answer>, by the call budget (MAX_LLM_CALL_PER_RUN, here maxCalls), or, when the context
//   reaches maxContext, by one more call in which the last tool response is replaced by the reference's
//   "You have now reached the maximum context length…" message asking for the best answer now.
// The context is counted from the server's usage: the last call's prompt and completion tokens plus an
// estimate of the tool response appended since (session.ts calibrates it on the server's counts).
import type { AgentId, Termination } from './events.ts';
import { CONTEXT_LIMIT_MESSAGE, reactSystemPrompt } from './prompts.ts';
import { extractAnswer, extractToolCall, stripThink } from './parse.ts';
import { ContextExceededError, type ResearchSession } from './session.ts';
import type { TraceMessage } from './trace.ts';

export interface AgentResult {
  agent: AgentId;
  answer: string | null;
  termination: Termination;
  /** Model calls the agent made (retries of empty replies not counted). */
  rounds: number;
  /** Heavy mode: the agent's last report. */
  report?: string;
  error?: string;
}

export interface ReactOptions {
  maxCalls: number;
  maxContext: number;
  date: string;
}

export async function runReact(session: ResearchSession, question: string, options: ReactOptions): Promise<AgentResult> {
  const agent = 0;
  const messages: TraceMessage[] = [
    { role: 'system', content: reactSystemPrompt(session.o.tools, options.date) },
    { role: 'user', content: question },
  ];
  let round = 0;
  let estimate: number | undefined;
  const done = (termination: Termination, answer: string | null, error?: string): AgentResult => {
    const result: AgentResult = { agent, answer, termination, rounds: round, ...(error !== undefined ? { error } : {}) };
    session.o.trace.agent({ ...result });
    session.emit({ type: 'agent_done', at: session.now(), agent, rounds: round, termination, answer, ...(error !== undefined ? { error } : {}) });
    return result;
  };

  const finalAnswer = async (promptTokens: number): Promise<AgentResult> => {
    session.emit({ type: 'context_limit', at: session.now(), agent, round, promptTokens, maxContext: options.maxContext });
    session.o.trace.note(agent, round, session.now(), `context ~${promptTokens} tokens >= max-context ${options.maxContext}: asking for the final answer`);
    const last = messages[messages.length - 1];
    if (last.role === 'user' && messages.length > 2) last.content = CONTEXT_LIMIT_MESSAGE;
    else messages.push({ role: 'user', content: CONTEXT_LIMIT_MESSAGE });
    round++;
    let reply;
    try {
      reply = await session.chat(agent, round, messages, true);
    } catch (err) {
      // The reply that filled the context left no room even for the request asking for the answer.
      if (err instanceof ContextExceededError) return done('context full', null, (err as Error).message);
      throw err;
    }
    messages.push({ role: 'assistant', content: reply.text });
    const answer = extractAnswer(reply.text);
    return answer !== null ? done('context limit', answer) : done('context limit, no answer tags', stripThink(reply.text) || null);
  };

  try {
    while (round < options.maxCalls) {
      round++;
      let reply;
      try {
        reply = await session.chat(agent, round, messages, false, estimate);
      } catch (err) {
        if (!(err instanceof ContextExceededError)) throw err;
        round--;
        return await finalAnswer(err.promptTokens ?? estimate ?? options.maxContext);
      }
      messages.push({ role: 'assistant', content: reply.text });
      const answer = extractAnswer(reply.text);
      if (answer !== null) return done('answer', answer);
      const call = extractToolCall(reply.text);
      let appended = 0;
      if (call !== null) {
        const outcome = await session.runTool(agent, round, call);
        const content = `<tool_response>\n${outcome.text}\n</tool_response>`;
        messages.push({ role: 'user', content });
        appended = content.length;
      }
      if (round >= options.maxCalls) break;
      // The next prompt: this one, the reply, and what was appended after it.
      estimate = reply.usage.prompt > 0
        ? reply.usage.prompt + reply.usage.completion + session.estimateChars(appended) + 8
        : session.estimateTokens(messages);
      if (estimate >= options.maxContext) return await finalAnswer(estimate);
    }
    return done('call budget', null);
  } catch (err) {
    if (session.o.signal.aborted) return done('aborted', null, (err as Error).message);
    return done('error', null, (err as Error).message);
  }
}
