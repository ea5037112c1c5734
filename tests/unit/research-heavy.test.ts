// Heavy mode against a scripted server: N IterResearch agents run in parallel, each round's prompt is the
// shared system prompt plus a rebuilt workspace (question, report, last action, its result) so that it stays
// bounded, the last round asks for the answer, and the synthesis call reads every agent's report.
import { afterEach, describe, expect, it } from 'vitest';
import { research, ResearchError } from '../../src/research/research.ts';
import { SYNTHESIS_SYSTEM_PROMPT } from '../../src/research/prompts.ts';
import { NO_ACTION } from '../../src/research/heavy.ts';
import type { ResearchEvent } from '../../src/research/events.ts';
import { fakeTool, startFakeOpenAI, toolCall, type ChatBody, type FakeServer, type Script } from '../helpers/fake-openai.ts';

let server: FakeServer | null = null;
afterEach(async () => {
  await server?.close();
  server = null;
});

const QUESTION = 'Which bridge did Calatrava complete first?';
const TOOL_OUTPUT = 'Result: the Bach de Roda bridge, 1987. '.repeat(5);

const roundOf = (b: ChatBody) => Number(/Round (\d+) of at most (\d+)\./.exec(b.messages[1].content)![1]);
const reportOf = (b: ChatBody) => /Your report so far:\n<report>\n([\s\S]*?)\n<\/report>/.exec(b.messages[1].content)![1];
const isSynthesis = (b: ChatBody) => b.messages[0].content === SYNTHESIS_SYSTEM_PROMPT;

/** Agents tell themselves apart by the name their first round writes into the report. */
function agentScript(answerRound: number): Script {
  let next = 0;
  return (b) => {
    if (isSynthesis(b)) return '<think>\nAll agents agree on 1987.\n</think>\n<answer>The Bach de Roda bridge (1987).</answer>';
    const round = roundOf(b);
    const prev = reportOf(b);
    const name = round === 1 ? `agent-${'ABCDEFGH'[next++]}` : prev.split(':')[0];
    const report = round === 1 ? `${name}: fact 1.` : `${prev} fact ${round}.`;
    const head = `<think>\nround ${round}\n</think>\n<report>${report}</report>\n`;
    return round >= answerRound ? `${head}<answer>${name} says 1987</answer>` : `${head}${toolCall('search', { query: ['Calatrava first bridge'] })}`;
  };
}

describe('Heavy mode', () => {
  it('runs N agents in parallel over rebuilt, bounded workspaces, then synthesizes their reports', async () => {
    const search = fakeTool('search', () => TOOL_OUTPUT);
    server = await startFakeOpenAI({ script: agentScript(10) });
    const events: ResearchEvent[] = [];
    const result = await research(QUESTION, {
      baseURL: server.baseURL, heavy: 3, date: '2025-01-02', metrics: false, tools: [search.tool], onEvent: (e) => events.push(e),
    });
    expect(result.mode).toBe('heavy');
    expect(result.answer).toBe('The Bach de Roda bridge (1987).');
    expect(result.reasoning).toBe('All agents agree on 1987.');
    expect(result.termination).toBe('answer');
    expect(server.requests).toHaveLength(3 * 10 + 1);
    expect(search.calls).toHaveLength(3 * 9);
    expect(result.agents.map((a) => [a.agent, a.termination, a.rounds])).toEqual([[1, 'answer', 10], [2, 'answer', 10], [3, 'answer', 10]]);
    expect(result.agents.map((a) => a.answer).sort()).toEqual(['agent-A says 1987', 'agent-B says 1987', 'agent-C says 1987']);

    const agentRequests = server.requests.filter((b) => !isSynthesis(b));
    // Every request: the one shared system prompt (the prefix the server caches) and a workspace, nothing else.
    const system = agentRequests[0].messages[0];
    expect(system.role).toBe('system');
    expect(system.content).toContain('the report is your only memory');
    expect(system.content).toContain('<tools>\n{"type":"function","function":{"name":"search"');
    expect(system.content.endsWith('Current date: 2025-01-02')).toBe(true);
    for (const b of agentRequests) {
      expect(b.messages).toHaveLength(2);
      expect(b.messages[0]).toEqual(system);
      expect(b.messages[1].role).toBe('user');
      expect(b).toMatchObject({ temperature: 0.6, top_p: 0.95, presence_penalty: 1.1, stop: ['\n<tool_response>', '<tool_response>'] });
    }

    // Per agent (by the name in its report): round 1 starts empty; round r carries round r-1's report, action and result.
    const byAgent = new Map<string, ChatBody[]>();
    for (const b of agentRequests) {
      const round = roundOf(b);
      const name = round === 1 ? `first-${byAgent.size}` : reportOf(b).split(':')[0];
      if (round === 1) byAgent.set(name, [b]);
    }
    for (const b of agentRequests.filter((x) => roundOf(x) > 1)) {
      const name = reportOf(b).split(':')[0];
      if (!byAgent.has(name)) byAgent.set(name, []);
      byAgent.get(name)!.push(b);
    }
    const firsts = agentRequests.filter((b) => roundOf(b) === 1);
    expect(firsts).toHaveLength(3);
    for (const b of firsts) {
      expect(b.messages[1].content).toBe(
        `Question: ${QUESTION}\n\nRound 1 of at most 100.\n\nYour report so far:\n<report>\n(empty: this is your first round)\n</report>\n\n` +
          'Last action: none yet.\n\nNow write your <think>, your updated <report>, and one action: a <tool_call> or the final <answer>.',
      );
    }
    for (const name of ['agent-A', 'agent-B', 'agent-C']) {
      const rounds = byAgent.get(name)!;
      expect(rounds.map(roundOf)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10]);
      const r2 = rounds[0].messages[1].content;
      expect(r2).toBe(
        `Question: ${QUESTION}\n\nRound 2 of at most 100.\n\nYour report so far:\n<report>\n${name}: fact 1.\n</report>\n\n` +
          `Last action:\n${toolCall('search', { query: ['Calatrava first bridge'] })}\n\nIts result:\n<tool_response>\n${TOOL_OUTPUT}\n</tool_response>\n\n` +
          'Now write your <think>, your updated <report>, and one action: a <tool_call> or the final <answer>.',
      );
      // Bounded: round 10's prompt is round 2's plus the report's growth (and a digit), not the whole history.
      const r10 = rounds[8].messages[1].content;
      const growth = reportOf(rounds[8]).length - reportOf(rounds[0]).length;
      expect(r10.length - r2.length).toBeLessThanOrEqual(growth + 1);
      expect(r10.length).toBeLessThan(r2.length + 100);
    }

    // The synthesis: its own prompts, every agent's report and answer.
    const synthesis = server.requests.at(-1)!;
    expect(isSynthesis(synthesis)).toBe(true);
    const user = synthesis.messages[1].content;
    expect(user.startsWith(`Question: ${QUESTION}\n\n3 agents reported:`)).toBe(true);
    for (const a of result.agents) {
      expect(user).toContain(`## Agent ${a.agent}\n<report>\n${a.report}\n</report>\n<answer>\n${a.answer}\n</answer>`);
      expect(a.report).toMatch(/^agent-[ABC]: fact 1\. fact 2\. .* fact 10\.$/);
    }
    expect(events.filter((e) => e.type === 'agent_done').map((e) => e.type === 'agent_done' && e.agent).sort()).toEqual([1, 2, 3, 'synthesis']);
    expect(events.filter((e) => e.type === 'report')).toHaveLength(30);
    expect(result.trace.agents.map((a) => a.agent)).toContain('synthesis');
  });

  it('the agents are in flight together', async () => {
    let arrived = 0;
    let release!: () => void;
    const all = new Promise<void>((r) => (release = r));
    const script = agentScript(2);
    server = await startFakeOpenAI({
      script: async (b, i) => {
        if (!isSynthesis(b) && roundOf(b) === 1) {
          if (++arrived === 4) release();
          await Promise.race([all, new Promise((r) => setTimeout(r, 3000))]);
        }
        return script(b, i);
      },
    });
    const result = await research(QUESTION, { baseURL: server.baseURL, heavy: 4, metrics: false, tools: [fakeTool('search', () => 'r').tool] });
    expect(result.termination).toBe('answer');
    expect(server.peakInFlight).toBe(4);
  });

  it('the last round of the budget asks for the answer; an agent that still gives none ends by the budget and its report still counts', async () => {
    server = await startFakeOpenAI({
      script: (b) => {
        if (isSynthesis(b)) return '<answer>from the reports</answer>';
        return `<report>${reportOf(b).startsWith('(empty') ? '' : reportOf(b)} r${roundOf(b)}</report>\n${toolCall('search', { query: ['q'] })}`;
      },
    });
    const result = await research(QUESTION, { baseURL: server.baseURL, heavy: 2, maxCalls: 3, metrics: false, tools: [fakeTool('search', () => 'r').tool] });
    expect(server.requests).toHaveLength(2 * 3 + 1);
    const lasts = server.requests.filter((b) => !isSynthesis(b) && roundOf(b) === 3);
    expect(lasts).toHaveLength(2);
    for (const b of lasts) expect(b.messages[1].content).toContain('This is your last round: do not call a tool.');
    expect(server.requests.filter((b) => !isSynthesis(b) && roundOf(b) < 3).every((b) => !b.messages[1].content.includes('last round'))).toBe(true);
    expect(result.agents.map((a) => a.termination)).toEqual(['call budget', 'call budget']);
    expect(result.agents.map((a) => a.report)).toEqual(['r1 r2 r3', 'r1 r2 r3']);
    const synthesis = server.requests.at(-1)!.messages[1].content;
    expect(synthesis).toContain('## Agent 1\n<report>\nr1 r2 r3\n</report>\n(no answer: ended by call budget)');
    expect(result.answer).toBe('from the reports');
  });

  it('keeps the report when a reply has none, caps it at reportChars, and answers a reply without an action with an error', async () => {
    const replies = ['<report>first</report>\nno action here', '<think>x</think>\n' + toolCall('search', { query: ['q'] }), `<report>${'z'.repeat(3000)}</report>\n${toolCall('search', { query: ['q'] })}`, '<answer>ok</answer>'];
    let n = 0;
    server = await startFakeOpenAI({ script: (b) => (isSynthesis(b) ? '<answer>final</answer>' : replies[n++]) });
    const result = await research(QUESTION, { baseURL: server.baseURL, heavy: 1, metrics: false, reportChars: 1000, tools: [fakeTool('search', () => 'r').tool] });
    const ws = server.requests.slice(0, 4).map((b) => b.messages[1].content);
    expect(ws[1]).toContain('<report>\nfirst\n</report>');
    expect(ws[1]).toContain(`Last action:\n(none)\n\nIts result:\n<tool_response>\n${NO_ACTION}\n</tool_response>`);
    expect(ws[2]).toContain('<report>\nfirst\n</report>');
    expect(reportOf(server.requests[3]).length).toBe(1000);
    expect(reportOf(server.requests[3])).toMatch(/\[… output truncated: 1000 of 3000 characters shown\]$/);
    expect(result.answer).toBe('final');
  });

  it('a workspace that would pass max-context asks for the answer now', async () => {
    server = await startFakeOpenAI({
      script: (b) => (isSynthesis(b) ? '<answer>s</answer>' : b.messages[1].content.includes('This is your last round') ? '<report>big</report><answer>cut short</answer>' : `<report>ok</report>${toolCall('search', { query: ['q'] })}`),
    });
    const events: ResearchEvent[] = [];
    const result = await research(QUESTION, {
      baseURL: server.baseURL, heavy: 1, maxContext: 2000, metrics: false, tools: [fakeTool('search', () => 'w'.repeat(20000)).tool], toolOutputChars: 20000, onEvent: (e) => events.push(e),
    });
    expect(result.agents[0]).toMatchObject({ termination: 'context limit', answer: 'cut short', rounds: 2 });
    expect(events.some((e) => e.type === 'context_limit' && e.agent === 1 && e.round === 2)).toBe(true);
  });

  it('fails when every agent fails, naming why', async () => {
    server = await startFakeOpenAI({ script: () => ({ status: 400, error: 'bad request: nope' }) });
    const err = await research(QUESTION, { baseURL: server.baseURL, heavy: 2, metrics: false, tools: [fakeTool('search', () => 'r').tool] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResearchError);
    expect((err as Error).message).toMatch(/^research failed: every agent failed: agent 1: 400 bad request: nope; agent 2: 400/);
  });
});
