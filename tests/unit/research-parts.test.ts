// The pieces of `moeserve research` on their own: reading replies, truncation, /metrics parsing, the progress
// renderer (TTY and plain), and the package's own API entry (`import { research } from 'moeserve'`).
import { describe, expect, it } from 'vitest';
import { afterThink, extractAnswer, extractReport, extractToolCall, INVALID_TOOL_CALL, replyText, stripThink, thinkText } from '../../src/research/parse.ts';
import { truncateOutput } from '../../src/research/session.ts';
import { metricsUrl, parsePromText } from '../../src/research/server-metrics.ts';
import { createProgress, summaryLines } from '../../src/research/progress.ts';
import type { ResearchEvent } from '../../src/research/events.ts';
import { isoDate, workspacePrompt } from '../../src/research/prompts.ts';

describe('reading replies', () => {
  it('finds the first tool call after the thinking, with arguments as an object or a JSON string', () => {
    const text = '<think>maybe <tool_call>{"name":"x","arguments":{}}</tool_call>?</think>\n<tool_call>\n{"name": "search", "arguments": {"query": ["a"]}}\n</tool_call>\n<tool_call>{"name":"visit","arguments":{}}</tool_call>';
    expect(extractToolCall(text)).toEqual({ ok: true, name: 'search', arguments: { query: ['a'] }, block: '<tool_call>\n{"name": "search", "arguments": {"query": ["a"]}}\n</tool_call>' });
    expect(extractToolCall('<tool_call>{"name": "visit", "arguments": "{\\"url\\": [\\"u\\"]}"}</tool_call>')).toMatchObject({ ok: true, name: 'visit', arguments: { url: ['u'] } });
    expect(extractToolCall('<tool_call>{"name": "visit"}</tool_call>')).toMatchObject({ ok: true, arguments: {} });
    expect(extractToolCall('<tool_call>{"arguments": {}}</tool_call>')).toEqual({ ok: false, error: INVALID_TOOL_CALL, block: '<tool_call>{"arguments": {}}</tool_call>' });
    expect(extractToolCall('<tool_call>{"name": "search", "arguments": {')).toBeNull();
    expect(extractToolCall('no call')).toBeNull();
  });

  it('reads <answer>, <report> and <think>', () => {
    const text = '<think>\nreasoning\n</think>\n<report>r1</report> <report>\nr2\n</report>\n<answer>\n 42 \n</answer>';
    expect(extractAnswer(text)).toBe('42');
    expect(extractReport(text)).toBe('r2');
    expect(thinkText(text)).toBe('reasoning');
    expect(thinkText('opened by the template\n</think>\nrest')).toBe('opened by the template');
    expect(afterThink('a</think>b')).toBe('b');
    expect(stripThink('<think>x</think>\n  The answer.  ')).toBe('The answer.');
    expect(extractAnswer('<answer>unclosed')).toBeNull();
    expect(extractReport('nothing')).toBeNull();
  });

  it('puts split replies back into one text and drops a self-written tool response', () => {
    expect(replyText({ content: 'A', reasoning_content: 'R' })).toBe('<think>\nR\n</think>\nA');
    expect(replyText({ content: null, reasoning: 'R' })).toBe('<think>\nR\n</think>');
    expect(replyText({ content: '<think>x</think>A', reasoning_content: 'dup' })).toBe('<think>x</think>A');
    expect(replyText({ content: 'calling', tool_calls: [{ function: { name: 's', arguments: '{"q":1}' } }] })).toBe('calling\n<tool_call>\n{"name":"s","arguments":{"q":1}}\n</tool_call>');
    expect(replyText({ content: '<tool_call>\n{"name":"s","arguments":{}}\n</tool_call>', tool_calls: [{ function: { name: 's', arguments: '{}' } }] })).toBe('<tool_call>\n{"name":"s","arguments":{}}\n</tool_call>');
    expect(replyText({ content: 'x\n<tool_response>\nmade up' })).toBe('x');
    expect(replyText({})).toBe('');
  });

  it('truncates to the budget, saying how much was shown', () => {
    expect(truncateOutput('short', 10)).toEqual({ text: 'short', truncated: false });
    const t = truncateOutput('a'.repeat(500), 100);
    expect(t.truncated).toBe(true);
    expect(t.text.length).toBe(100);
    expect(t.text.endsWith('[… output truncated: 100 of 500 characters shown]')).toBe(true);
  });

  it('writes the date and the workspace', () => {
    expect(isoDate(new Date(2025, 0, 2))).toBe('2025-01-02');
    const w = workspacePrompt({ question: 'Q', round: 3, maxRounds: 5, report: 'R', lastAction: '<tool_call>{}</tool_call>', lastResult: 'out', final: true });
    expect(w).toBe(
      'Question: Q\n\nRound 3 of at most 5.\n\nYour report so far:\n<report>\nR\n</report>\n\nLast action:\n<tool_call>{}</tool_call>\n\n' +
        'Its result:\n<tool_response>\nout\n</tool_response>\n\nThis is your last round: do not call a tool. Based on your report and the result above, give your best answer now, in this format:\n' +
        '<think>your final thinking</think>\n<report>your final report</report>\n<answer>your answer</answer>',
    );
  });
});

describe('server metrics', () => {
  it('sums samples by name and finds /metrics from the base URL', () => {
    const m = parsePromText('# HELP a x\n# TYPE a counter\na{model_name="m"} 3\na{model_name="n"} 4\nb 1.5e3\nc NaN\n');
    expect([...m]).toEqual([['a', 7], ['b', 1500]]);
    expect(metricsUrl('http://127.0.0.1:8000/v1')).toBe('http://127.0.0.1:8000/metrics');
    expect(metricsUrl('http://h:1/v1/')).toBe('http://h:1/metrics');
    expect(metricsUrl('https://h/proxy/v1?x=1')).toBe('https://h/proxy/metrics');
  });
});

function sink(isTTY: boolean) {
  let out = '';
  return { stream: { isTTY, columns: 200, write: (s: string) => (out += s) }, text: () => out };
}

const RUN: ResearchEvent[] = [
  { type: 'start', at: 0, mode: 'heavy', agents: 2, question: 'Q', model: 'm', baseURL: 'http://x/v1', tools: ['search', 'visit'], maxCalls: 10, maxContext: 1000 },
  { type: 'request', at: 5, agent: 1, round: 1, final: false },
  { type: 'response', at: 900, agent: 1, round: 1, usage: { prompt: 1200, completion: 80 }, ms: 895, finishReason: 'stop', total: { prompt: 1200, completion: 80 }, calls: 1 },
  { type: 'tool_call', at: 901, agent: 1, round: 1, name: 'search', arguments: { query: ['Calatrava bridges'] } },
  { type: 'tool_result', at: 1300, agent: 1, round: 1, name: 'search', chars: 2345, truncated: true, ms: 399 },
  { type: 'tool_call', at: 1400, agent: 2, round: 1, name: 'visit', arguments: { url: ['corpus://a.md'] } },
  { type: 'tool_result', at: 1500, agent: 2, round: 1, name: 'visit', chars: 40, truncated: false, ms: 100, error: 'Error: visit failed: no such document' },
  { type: 'context_limit', at: 1600, agent: 2, round: 2, promptTokens: 1100, maxContext: 1000 },
  { type: 'agent_done', at: 2000, agent: 1, rounds: 3, termination: 'answer', answer: 'x' },
  { type: 'agent_done', at: 2100, agent: 'synthesis', rounds: 1, termination: 'answer', answer: 'x' },
];

describe('progress', () => {
  it('writes plain lines when not a TTY: each tool call with its arguments, results, replies with tokens, agents ending', () => {
    const s = sink(false);
    const p = createProgress({ stream: s.stream });
    for (const e of RUN) p.onEvent(e);
    p.close();
    const lines = s.text().trimEnd().split('\n');
    expect(s.text()).not.toContain('\x1b');
    expect(lines).toEqual([
      '[   0.0s] Heavy mode: 2 IterResearch agents and a synthesis · model m at http://x/v1 · tools search, visit · at most 10 calls per agent · max context 1,000 tokens',
      '[   0.9s] agent 1 · round 1 · reply 80 tokens (prompt 1,200) in 0.9 s · run 1,280 tokens',
      '[   0.9s] agent 1 · round 1 · search {"query":["Calatrava bridges"]}',
      '[   1.3s] agent 1 · round 1 · search → 2,345 chars (truncated) in 0.4 s',
      '[   1.4s] agent 2 · round 1 · visit {"url":["corpus://a.md"]}',
      '[   1.5s] agent 2 · round 1 · visit → Error: visit failed: no such document',
      '[   1.6s] agent 2 · round 2 · context ~1,100 tokens ≥ max 1,000: asking for the answer now',
      '[   2.0s] agent 1 done after 3 rounds: answer',
      '[   2.1s] synthesis done after 1 round: answer',
    ]);
  });

  it('on a TTY, redraws a status block (a line per agent and the totals) below the log, and clears it at the end', () => {
    const s = sink(true);
    const p = createProgress({ stream: s.stream, refreshMs: 60_000 });
    for (const e of RUN.slice(0, 4)) p.onEvent(e);
    const text = s.text();
    expect(text).toContain('\x1b[3A\r\x1b[J');
    expect(text).toContain('[   0.9s] agent 1 · round 1 · search {"query":["Calatrava bridges"]}\n');
    const block = text.slice(text.lastIndexOf('\x1b[J') + 3);
    const [log, ...lines] = block.trimEnd().split('\n');
    expect(log).toBe('[   0.9s] agent 1 · round 1 · search {"query":["Calatrava bridges"]}');
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^ {2}agent 1 +│ round +1 │ +1,280 tok │ search \{"query":\["Calatrava bridges"\]\}$/);
    expect(lines[1]).toMatch(/^ {2}agent 2 +│ round +0 │ +0 tok │ starting$/);
    expect(lines[2]).toMatch(/^ {2}[\d.]+ s · 1 calls · 1,280 tokens \(prompt 1,200, completion 80\) · [\d.]+ tok\/s$/);
    p.close();
    expect(s.text().endsWith('\x1b[3A\r\x1b[J')).toBe(true);
  });

  it('sums up a run, with or without the server metrics', () => {
    const base = { stats: { calls: 7, promptTokens: 12000, completionTokens: 900, elapsedMs: 4500, tokensPerSecond: 200 }, termination: 'answer', mode: 'heavy', agents: [{ agent: 1, termination: 'answer', rounds: 3 }] };
    expect(summaryLines({ ...base, metrics: { available: true, url: 'u', server: 'moeserve', prefixCacheQueries: 10000, prefixCacheHits: 7500, prefixCacheHitRate: 0.75, peakRunning: 4, promptTokens: 10000, generationTokens: 900 } })).toEqual([
      'answered in 4.5 s · 7 model calls · 12,900 tokens (prompt 12,000, completion 900) · 200.0 tok/s generated',
      'agents: agent 1 answer (3 rounds)',
      'server (moeserve): prefix-cache hit rate 75.0% (7,500 of 10,000 prompt tokens) · peak 4 requests running at once',
    ]);
    expect(summaryLines({ ...base, mode: 'react', metrics: { available: false, url: 'u', reason: 'u unreachable (fetch failed)' } }).at(-1)).toBe('server metrics: u unreachable (fetch failed)');
  });
});

describe("the package's API", () => {
  it("import { research } from 'moeserve' resolves to the API (package.json exports)", async () => {
    const api = await import('moeserve');
    expect(typeof api.research).toBe('function');
    expect(api.REFERENCE_SAMPLING).toMatchObject({ temperature: 0.6, top_p: 0.95, presence_penalty: 1.1, max_tokens: 10000 });
    expect(typeof api.createTools).toBe('function');
  });
});
