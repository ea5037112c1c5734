// The prompts of `moeserve research`.
//
// ReAct: Tongyi DeepResearch's own system prompt (Alibaba-NLP/DeepResearch, inference/prompt.py SYSTEM_PROMPT,
// as react_agent.py uses it): the role and the <answer></answer> rule, the tools as JSON lines inside
// <tools></tools>, the <tool_call> format, and "Current date: " with today's date. The model was trained on
// this shape, so it is kept as the reference writes it; only the tool list is ours. The context cut-off
// message is react_agent.py's, word for word.
//
// IterResearch (Heavy mode) and Research-Synthesis: the reference repository publishes no prompts for
// them; these follow the IterResearch paper's design (each round the agent sees a rebuilt workspace — the
// question, its evolving report, its last action and that action's result — and writes a thinking, the
// updated report and one action, a tool call or the answer) in the same tags the model knows
// (<think>, <tool_call>, <tool_response>, <answer>), with <report> for the report.
import { toolDefinition, type ResearchTool } from './tool.ts';

/** The tools as the model's template writes them: one JSON function definition a line. */
export function toolsBlock(tools: readonly ResearchTool[]): string {
  return tools.map((t) => JSON.stringify(toolDefinition(t))).join('\n');
}

const TOOL_SECTION = (tools: readonly ResearchTool[]) =>
  '# Tools\n\n' +
  'You may call one or more functions to assist with the user query.\n\n' +
  'You are provided with function signatures within <tools></tools> XML tags:\n' +
  `<tools>\n${toolsBlock(tools)}\n</tools>\n\n` +
  'For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n' +
  '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>';

/** YYYY-MM-DD of `date` (local time, as the reference's datetime.date.today()). */
export function isoDate(date: Date = new Date()): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

/** The ReAct agent's system prompt (inference/prompt.py's SYSTEM_PROMPT + today's date). */
export function reactSystemPrompt(tools: readonly ResearchTool[], date: string): string {
  return (
    'You are a deep research assistant. Your core function is to conduct thorough, multi-source investigations into any topic. ' +
    'You must handle both broad, open-domain inquiries and queries within specialized academic fields. ' +
    'For every request, synthesize information from credible, diverse sources to deliver a comprehensive, accurate, and objective response. ' +
    'When you have gathered sufficient information and are ready to provide the definitive response, ' +
    'you must enclose the entire final answer within <answer></answer> tags.\n\n' +
    `${TOOL_SECTION(tools)}\n\n` +
    `Current date: ${date}`
  );
}

/** react_agent.py's message when the context reaches its limit: it replaces the last tool response. */
export const CONTEXT_LIMIT_MESSAGE =
  'You have now reached the maximum context length you can handle. You should stop making tool calls and, ' +
  'based on all the information above, think again and provide what you consider the most likely answer in the following format:' +
  '<think>your final thinking</think>\n<answer>your answer</answer>';

/**
 * The IterResearch agent's system prompt: the same for every agent and every round (so that on moeserve all
 * of Heavy mode's requests share it as a cached prefix); the round's workspace follows as the user turn.
 */
export function iterResearchSystemPrompt(tools: readonly ResearchTool[], date: string): string {
  return (
    'You are a deep research assistant. Your core function is to conduct thorough, multi-source investigations into any topic. ' +
    'For every request, synthesize information from credible, diverse sources to deliver a comprehensive, accurate, and objective response.\n\n' +
    '# How you work: rounds\n\n' +
    'You research in rounds. At the start of each round you are shown a workspace: the question, your report so far, ' +
    'your last action and its result. You do not see earlier rounds: the report is your only memory. ' +
    'Keep in it everything you will need later: the facts you found, each with its source, what you have tried, and what is still open.\n\n' +
    'Reply in each round in exactly this format:\n' +
    '<think>your reasoning about the last result and what to do next</think>\n' +
    '<report>the updated report: the previous report revised with what the last result taught you</report>\n' +
    'and then exactly one action: either one tool call (format below) or, once the report holds enough to answer the question, ' +
    'the final answer within <answer></answer> tags.\n\n' +
    `${TOOL_SECTION(tools)}\n\n` +
    `Current date: ${date}`
  );
}

export interface Workspace {
  question: string;
  round: number;
  maxRounds: number;
  report: string;
  /** The last action as the model wrote it (its <tool_call> block), or null in the first round. */
  lastAction: string | null;
  /** The last action's result (the tool's output, or an error text). */
  lastResult: string | null;
  /** Answer now: the last round of the budget, or the context limit. */
  final: boolean;
}

/** The user turn of one IterResearch round: the rebuilt workspace. */
export function workspacePrompt(w: Workspace): string {
  const parts = [`Question: ${w.question}`, `Round ${w.round} of at most ${w.maxRounds}.`];
  parts.push(`Your report so far:\n<report>\n${w.report.trim() === '' ? '(empty: this is your first round)' : w.report.trim()}\n</report>`);
  if (w.lastAction === null) parts.push('Last action: none yet.');
  else parts.push(`Last action:\n${w.lastAction.trim()}`, `Its result:\n<tool_response>\n${w.lastResult ?? ''}\n</tool_response>`);
  parts.push(
    w.final
      ? 'This is your last round: do not call a tool. Based on your report and the result above, give your best answer now, in this format:\n' +
          '<think>your final thinking</think>\n<report>your final report</report>\n<answer>your answer</answer>'
      : 'Now write your <think>, your updated <report>, and one action: a <tool_call> or the final <answer>.',
  );
  return parts.join('\n\n');
}

/** The Research-Synthesis call's system prompt. */
export const SYNTHESIS_SYSTEM_PROMPT =
  'You are a research synthesizer. Several research agents have investigated the same question independently. ' +
  "You are given each agent's final report and answer (or how it ended without one). " +
  'Compare them: where they agree, where they conflict, and which evidence is stronger ' +
  '(named sources, specific facts, agreement between independent agents, internal consistency). ' +
  'Do not invent facts that no report supports. Then write the final answer.\n\n' +
  'Reply in exactly this format:\n' +
  '<think>your reasoning: what each report contributes, how you resolved conflicts, how confident you are</think>\n' +
  '<answer>the final answer: complete and self-contained, with its key evidence</answer>';

export interface AgentOutcome {
  agent: number;
  report: string;
  answer: string | null;
  termination: string;
}

/** The synthesis call's user turn: the question and every agent's report and answer. */
export function synthesisPrompt(question: string, outcomes: readonly AgentOutcome[]): string {
  const parts = [`Question: ${question}`, `${outcomes.length} agent${outcomes.length === 1 ? '' : 's'} reported:`];
  for (const o of outcomes) {
    parts.push(
      `## Agent ${o.agent}\n` +
        `<report>\n${o.report.trim() === '' ? '(no report)' : o.report.trim()}\n</report>\n` +
        (o.answer !== null ? `<answer>\n${o.answer.trim()}\n</answer>` : `(no answer: ended by ${o.termination})`),
    );
  }
  parts.push('Now write your <think> and the final <answer>.');
  return parts.join('\n\n');
}
