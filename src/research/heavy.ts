// Heavy mode: N IterResearch agents on the same question, in parallel, then one Research-Synthesis call.
//
// An IterResearch agent does not carry its history. Each round its prompt is rebuilt from scratch: the
// shared system prompt, then a workspace (prompts.ts workspacePrompt) with the question, the agent's
// evolving report, its last action and that action's result. The reply's <report> replaces the report
// (cut to reportChars), its <tool_call> is run (result cut to toolOutputChars), and an <answer> ends the
// agent. So a round's prompt is bounded by the question + reportChars + toolOutputChars however many rounds
// run. The last round of the call budget, or a round whose prompt would reach maxContext, asks for the
// answer now. All requests of all agents start with the same system prompt: on moeserve they share its
// cached KV and run in one batch.
//
// The synthesis call gets every agent's report and answer (or how it ended) and writes the final answer
// with its reasoning (<think>, <answer>).
import type { Termination } from './events.ts';
import { extractAnswer, extractReport, extractToolCall, stripThink, thinkText } from './parse.ts';
import { iterResearchSystemPrompt, SYNTHESIS_SYSTEM_PROMPT, synthesisPrompt, workspacePrompt, type AgentOutcome } from './prompts.ts';
import type { AgentResult } from './react.ts';
import { ContextExceededError, truncateOutput, type ResearchSession } from './session.ts';
import type { TraceMessage } from './trace.ts';

export interface HeavyOptions {
  agents: number;
  maxCalls: number;
  maxContext: number;
  date: string;
  /** Longest report carried from round to round, in characters. */
  reportChars: number;
}

/** Reply when a round had neither a tool call nor an answer. */
export const NO_ACTION =
  'Error: your reply had no action. End it with one <tool_call> or with the final <answer></answer>.';

export async function runIterAgent(session: ResearchSession, question: string, agent: number, options: HeavyOptions): Promise<AgentResult> {
  const system = iterResearchSystemPrompt(session.o.tools, options.date);
  let report = '';
  let lastAction: string | null = null;
  let lastResult: string | null = null;
  let round = 0;
  let forceFinal = false;
  const done = (termination: Termination, answer: string | null, error?: string): AgentResult => {
    const result: AgentResult = { agent, answer, termination, rounds: round, report, ...(error !== undefined ? { error } : {}) };
    session.o.trace.agent({ ...result });
    session.emit({ type: 'agent_done', at: session.now(), agent, rounds: round, termination, answer, ...(error !== undefined ? { error } : {}) });
    return result;
  };
  try {
    while (round < options.maxCalls) {
      round++;
      const messages = (final: boolean): TraceMessage[] => [
        { role: 'system', content: system },
        { role: 'user', content: workspacePrompt({ question, round, maxRounds: options.maxCalls, report, lastAction, lastResult, final }) },
      ];
      let final: boolean = forceFinal || round === options.maxCalls;
      let prompt = messages(final);
      const estimate = session.estimateTokens(prompt);
      if (!final && estimate >= options.maxContext) {
        forceFinal = final = true;
        prompt = messages(true);
        session.emit({ type: 'context_limit', at: session.now(), agent, round, promptTokens: estimate, maxContext: options.maxContext });
      }
      let reply;
      try {
        reply = await session.chat(agent, round, prompt, final, estimate);
      } catch (err) {
        if (!(err instanceof ContextExceededError)) throw err;
        if (final) return done('context full', null, (err as Error).message);
        // The workspace does not fit: the last result goes, and the agent is asked for its answer.
        session.emit({ type: 'context_limit', at: session.now(), agent, round, promptTokens: err.promptTokens ?? estimate, maxContext: options.maxContext });
        lastResult = '(dropped: it did not fit the context)';
        forceFinal = true;
        round--;
        continue;
      }
      const newReport = extractReport(reply.text);
      if (newReport !== null) {
        report = truncateOutput(newReport, options.reportChars).text;
        session.emit({ type: 'report', at: session.now(), agent, round, chars: report.length });
      }
      const answer = extractAnswer(reply.text);
      if (answer !== null) return done(forceFinal ? 'context limit' : 'answer', answer);
      if (final) {
        if (forceFinal) return done('context limit, no answer tags', stripThink(reply.text) || null);
        return done('call budget', null);
      }
      const call = extractToolCall(reply.text);
      if (call === null) {
        lastAction = '(none)';
        lastResult = NO_ACTION;
        continue;
      }
      const outcome = await session.runTool(agent, round, call);
      lastAction = call.block;
      lastResult = outcome.text;
    }
    return done('call budget', null);
  } catch (err) {
    if (session.o.signal.aborted) return done('aborted', null, (err as Error).message);
    return done('error', null, (err as Error).message);
  }
}

export interface HeavyResult {
  agents: AgentResult[];
  answer: string | null;
  reasoning: string | null;
  termination: Termination;
  error?: string;
}

export async function runHeavy(session: ResearchSession, question: string, options: HeavyOptions): Promise<HeavyResult> {
  const ids = Array.from({ length: options.agents }, (_, i) => i + 1);
  const agents = await Promise.all(ids.map((id) => runIterAgent(session, question, id, options)));
  if (session.o.signal.aborted) return { agents, answer: null, reasoning: null, termination: 'aborted', error: 'aborted' };
  const usable = agents.filter((a) => a.termination !== 'error' && a.termination !== 'aborted');
  if (usable.length === 0) {
    return { agents, answer: null, reasoning: null, termination: 'error', error: `every agent failed: ${agents.map((a) => `agent ${a.agent}: ${a.error}`).join('; ')}` };
  }
  // Each report gets an equal share of the context (with room for the prompts and the reply).
  const room = Math.max(1000, options.maxContext - session.estimateChars(SYNTHESIS_SYSTEM_PROMPT.length + question.length) - 512);
  const perReport = Math.max(500, Math.min(options.reportChars, Math.floor(room / session.estimateChars(1000) * 1000 / usable.length)));
  const outcomes: AgentOutcome[] = usable.map((a) => ({
    agent: a.agent as number,
    report: truncateOutput(a.report ?? '', perReport).text,
    answer: a.answer === null ? null : truncateOutput(a.answer, perReport).text,
    termination: a.termination,
  }));
  const messages: TraceMessage[] = [
    { role: 'system', content: SYNTHESIS_SYSTEM_PROMPT },
    { role: 'user', content: synthesisPrompt(question, outcomes) },
  ];
  try {
    const reply = await session.chat('synthesis', 1, messages, true);
    const answer = extractAnswer(reply.text);
    const reasoning = thinkText(reply.text) || null;
    const termination: Termination = answer !== null ? 'answer' : 'no answer tags';
    const text = answer ?? (stripThink(reply.text) || null);
    session.o.trace.agent({ agent: 'synthesis', rounds: 1, termination, answer: text });
    session.emit({ type: 'agent_done', at: session.now(), agent: 'synthesis', rounds: 1, termination, answer: text });
    return { agents, answer: text, reasoning, termination };
  } catch (err) {
    const message = (err as Error).message;
    const termination: Termination = session.o.signal.aborted ? 'aborted' : 'error';
    session.o.trace.agent({ agent: 'synthesis', rounds: 1, termination, answer: null, error: message });
    session.emit({ type: 'agent_done', at: session.now(), agent: 'synthesis', rounds: 1, termination, answer: null, error: message });
    return { agents, answer: null, reasoning: null, termination, error: `synthesis failed: ${message}` };
  }
}
