// The ReAct loop of `moeserve research` against a scripted OpenAI-compatible server: the reference agent's
// request shape, <tool_call> parsing (from content and from structured tool_calls), tool errors as text,
// the call budget, the context cut-off, <answer> termination, retries, the trace, events and server metrics.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { research, ResearchError, type ResearchOptions } from '../../src/research/research.ts';
import { CONTEXT_LIMIT_MESSAGE } from '../../src/research/prompts.ts';
import { INVALID_TOOL_CALL } from '../../src/research/parse.ts';
import type { ResearchEvent } from '../../src/research/events.ts';
import { fullMessages, type TraceRequest } from '../../src/research/trace.ts';
import { fakeTool, startFakeOpenAI, toolCall, type FakeServer, type Script } from '../helpers/fake-openai.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moeserve-research-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let server: FakeServer | null = null;
afterEach(async () => {
  await server?.close();
  server = null;
});

async function serve(script: Script, extra: Partial<Parameters<typeof startFakeOpenAI>[0]> = {}) {
  server = await startFakeOpenAI({ script, ...extra });
  return server;
}

const QUESTION = 'Who designed the Oriente station?';
const base = (s: FakeServer, more: Partial<ResearchOptions> = {}): ResearchOptions => ({
  baseURL: s.baseURL, date: '2025-01-02', metrics: false, ...more,
});

describe('ReAct: a run as the reference agent makes it', () => {
  it('sends the reference request, runs the tool call from content, returns <tool_response> as a user turn, ends on <answer>', async () => {
    const search = fakeTool('search', (args) => `results for ${JSON.stringify(args.query)}`);
    const reply1 = `<think>\nI should search.\n</think>\n${toolCall('search', { query: ['Oriente station architect'] })}`;
    const s = await serve((_b, i) => (i === 0 ? reply1 : '<think>\nFound it.\n</think>\n<answer>Santiago Calatrava</answer>'));
    const events: ResearchEvent[] = [];
    const result = await research(QUESTION, base(s, { tools: [search.tool], onEvent: (e) => events.push(e) }));

    expect(result.answer).toBe('Santiago Calatrava');
    expect(result.termination).toBe('answer');
    expect(result.mode).toBe('react');
    expect(result.model).toBe('fake-model');
    expect(search.calls).toEqual([{ query: ['Oriente station architect'] }]);
    expect(s.requests).toHaveLength(2);

    const [first, second] = s.requests;
    // react_agent.py's call_server: no `tools` field, its sampling and stop strings.
    expect(first).toMatchObject({ model: 'fake-model', temperature: 0.6, top_p: 0.95, presence_penalty: 1.1, max_tokens: 10000, stop: ['\n<tool_response>', '<tool_response>'] });
    expect('tools' in first).toBe(false);
    expect(first.messages).toHaveLength(2);
    const system = first.messages[0];
    expect(system.role).toBe('system');
    expect(system.content).toMatch(/^You are a deep research assistant\./);
    expect(system.content).toContain('you must enclose the entire final answer within <answer></answer> tags');
    expect(system.content).toContain(`<tools>\n${JSON.stringify({ type: 'function', function: { name: 'search', description: search.tool.description, parameters: search.tool.parameters } })}\n</tools>`);
    expect(system.content).toContain('<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>');
    expect(system.content.endsWith('Current date: 2025-01-02')).toBe(true);
    expect(first.messages[1]).toEqual({ role: 'user', content: QUESTION });
    expect(second.messages.slice(0, 2)).toEqual(first.messages);
    expect(second.messages[2]).toEqual({ role: 'assistant', content: reply1 });
    expect(second.messages[3]).toEqual({ role: 'user', content: '<tool_response>\nresults for ["Oriente station architect"]\n</tool_response>' });

    // Totals from the server's usage.
    const usage = s.requests.map((b, i) => ({ p: Math.ceil(b.messages.reduce((n, m) => n + m.content.length, 0) / 4), c: Math.ceil((i === 0 ? reply1 : '<think>\nFound it.\n</think>\n<answer>Santiago Calatrava</answer>').length / 4) }));
    expect(result.stats.promptTokens).toBe(usage[0].p + usage[1].p);
    expect(result.stats.completionTokens).toBe(usage[0].c + usage[1].c);
    expect(result.stats.calls).toBe(2);
    expect(result.metrics).toBeNull();

    expect(events.map((e) => e.type)).toEqual(['start', 'request', 'response', 'tool_call', 'tool_result', 'request', 'response', 'agent_done', 'done']);
    const call = events.find((e) => e.type === 'tool_call');
    expect(call).toMatchObject({ agent: 0, round: 1, name: 'search', arguments: { query: ['Oriente station architect'] } });
    expect(events.at(-1)).toMatchObject({ type: 'done', answer: 'Santiago Calatrava', termination: 'answer' });
  });

  it('accepts structured tool_calls and a split-off reasoning_content (a server with parsers on), keeping the history in content', async () => {
    const search = fakeTool('search', () => 'hit');
    const s = await serve((_b, i) =>
      i === 0
        ? { content: null, reasoning_content: 'Search first.', tool_calls: [{ type: 'function', function: { name: 'search', arguments: '{"query": ["q"]}' } }] }
        : { content: '<answer>done</answer>', reasoning_content: 'Enough.' },
    );
    const result = await research(QUESTION, base(s, { tools: [search.tool] }));
    expect(result.answer).toBe('done');
    expect(search.calls).toEqual([{ query: ['q'] }]);
    expect(s.requests[1].messages[2]).toEqual({ role: 'assistant', content: '<think>\nSearch first.\n</think>\n<tool_call>\n{"name":"search","arguments":{"query":["q"]}}\n</tool_call>' });
    expect(result.trace.entries.filter((e): e is TraceRequest => e.type === 'request')[1].reply).toBe('<think>\nEnough.\n</think>\n<answer>done</answer>');
  });

  it('turns failing tools, unknown tools and invalid calls into error text for the model, and truncates long outputs', async () => {
    const boom = fakeTool('search', () => {
      throw new Error('index offline');
    });
    const long = fakeTool('visit', () => 'x'.repeat(5000));
    const replies = [
      toolCall('search', { query: ['a'] }),
      toolCall('nope', { query: ['b'] }),
      '<tool_call>\n{"name": "search", "arguments": {"query": [\n</tool_call>',
      toolCall('visit', { query: ['c'] }),
      '<answer>still answered</answer>',
    ];
    const s = await serve((_b, i) => replies[i]);
    const result = await research(QUESTION, base(s, { tools: [boom.tool, long.tool], toolOutputChars: 1000 }));
    expect(result.answer).toBe('still answered');
    const responses = s.requests.at(-1)!.messages.filter((m) => m.role === 'user').slice(1).map((m) => m.content);
    expect(responses[0]).toBe('<tool_response>\nError: search failed: index offline\n</tool_response>');
    expect(responses[1]).toBe('<tool_response>\nError: Tool nope not found\n</tool_response>');
    expect(responses[2]).toBe(`<tool_response>\n${INVALID_TOOL_CALL}\n</tool_response>`);
    const truncated = responses[3].slice('<tool_response>\n'.length, -'\n</tool_response>'.length);
    expect(truncated.length).toBe(1000);
    expect(truncated).toMatch(/\[… output truncated: 1000 of 5000 characters shown\]$/);
    const tools = result.trace.entries.filter((e) => e.type === 'tool');
    expect(tools.map((t) => t.type === 'tool' && [t.name, t.error !== undefined, t.truncated])).toEqual([
      ['search', true, false], ['nope', true, false], ['(invalid)', true, false], ['visit', false, true],
    ]);
  });

  it('a tool that hangs is cut off by its timeout and reported to the model', async () => {
    const slow = { name: 'search', description: 'slow', parameters: { type: 'object' }, run: (_a: unknown, signal: AbortSignal) => new Promise<string>((_r, reject) => signal.addEventListener('abort', () => reject(signal.reason))) };
    const s = await serve((_b, i) => (i === 0 ? toolCall('search', {}) : '<answer>ok</answer>'));
    const result = await research(QUESTION, base(s, { tools: [slow], toolTimeoutMs: 50 }));
    expect(result.answer).toBe('ok');
    expect(s.requests[1].messages[3].content).toBe('<tool_response>\nError: search failed: timed out after 0.05 s\n</tool_response>');
  });

  it('stops at the call budget without an answer', async () => {
    const search = fakeTool('search', () => 'nothing');
    const s = await serve(() => toolCall('search', { query: ['again'] }));
    const result = await research(QUESTION, base(s, { tools: [search.tool], maxCalls: 3 }));
    expect(result.answer).toBeNull();
    expect(result.termination).toBe('call budget');
    expect(s.requests).toHaveLength(3);
    expect(result.agents).toEqual([{ agent: 0, answer: null, termination: 'call budget', rounds: 3 }]);
  });

  it('keeps calling on a reply with neither a tool call nor an answer, and retries empty replies', async () => {
    const replies = ['', '<think>hmm</think>\nLet me think more.', '<answer>42</answer>'];
    const s = await serve((_b, i) => replies[i]);
    const events: ResearchEvent[] = [];
    const result = await research(QUESTION, base(s, { tools: [fakeTool('search', () => '').tool], onEvent: (e) => events.push(e) }));
    expect(result.answer).toBe('42');
    expect(s.requests).toHaveLength(3);
    expect(result.agents[0].rounds).toBe(2);
    expect(events.filter((e) => e.type === 'retry').map((e) => e.type === 'retry' && e.reason)).toEqual(['empty reply']);
    expect(s.requests[2].messages.at(-1)).toEqual({ role: 'assistant', content: '<think>hmm</think>\nLet me think more.' });
  });

  it('at the context limit, replaces the last tool response with the reference message and takes the answer', async () => {
    const search = fakeTool('search', () => 'y'.repeat(4000));
    // The server reports 700 prompt tokens + 50 completion: with ~4000 characters appended (about 1000
    // tokens at the server's ratio), the next prompt is past max-context 1500.
    const s = await serve((b, i) =>
      b.messages.at(-1)!.content === CONTEXT_LIMIT_MESSAGE
        ? '<think>final</think>\n<answer>best guess</answer>'
        : { content: toolCall('search', { query: [`q${i}`] }), usage: { prompt_tokens: 700, completion_tokens: 50 } },
    );
    const events: ResearchEvent[] = [];
    const result = await research(QUESTION, base(s, { tools: [search.tool], maxContext: 1500, onEvent: (e) => events.push(e) }));
    expect(result.answer).toBe('best guess');
    expect(result.termination).toBe('context limit');
    expect(s.requests).toHaveLength(2);
    const last = s.requests[1].messages;
    expect(last).toHaveLength(4);
    expect(last[2].role).toBe('assistant');
    expect(last[3]).toEqual({ role: 'user', content: CONTEXT_LIMIT_MESSAGE });
    expect(CONTEXT_LIMIT_MESSAGE).toMatch(/^You have now reached the maximum context length you can handle\. .*provide what you consider the most likely answer.*<answer>your answer<\/answer>$/s);
    const limit = events.find((e) => e.type === 'context_limit');
    expect(limit).toMatchObject({ agent: 0, round: 1, maxContext: 1500 });
    expect((limit as { promptTokens: number }).promptTokens).toBeGreaterThanOrEqual(1500);
  });

  it('below the limit the run goes on (the estimate follows the server\'s usage, not a local tokenizer)', async () => {
    const search = fakeTool('search', () => 'short');
    const s = await serve((_b, i) => (i < 3 ? { content: toolCall('search', { query: ['q'] }), usage: { prompt_tokens: 100 + i * 10, completion_tokens: 5 } } : '<answer>a</answer>'));
    const result = await research(QUESTION, base(s, { tools: [search.tool], maxContext: 1500 }));
    expect(result.termination).toBe('answer');
    expect(s.requests).toHaveLength(4);
  });

  it("cuts max_tokens to the server's context: from /v1/models, and once more when the server says the reply does not fit", async () => {
    const s = await serve(
      (b, i) => {
        if (i === 0) {
          return { status: 400, error: `This model's maximum context length is 4096 tokens. However, you requested 4500 tokens (1000 in the input, ${b.max_tokens} in the completion). Please reduce the length of the input or 'max_tokens'.` };
        }
        return '<answer>fits</answer>';
      },
      { models: [{ id: 'tongyi', max_model_len: 4096 }, { id: 'other' }] },
    );
    const events: ResearchEvent[] = [];
    const result = await research(QUESTION, base(s, { tools: [fakeTool('search', () => '').tool], onEvent: (e) => events.push(e) }));
    expect(result.model).toBe('tongyi');
    expect(result.answer).toBe('fits');
    const first = s.requests[0].max_tokens as number;
    expect(first).toBeLessThan(4096);
    expect(first).toBeGreaterThan(3000);
    expect(s.requests[1].max_tokens).toBe(3096);
    expect(events.some((e) => e.type === 'retry' && /max_tokens cut to the 3096 tokens/.test(e.reason))).toBe(true);
    // Default max-context: the reference's 110K, at most the context less room for a reply (4096 - 1024).
    expect(result.trace.config.maxContext).toBe(3072);
  });

  it('a prompt that no longer fits the server goes to the final answer', async () => {
    const s = await serve((b, i) =>
      i === 1 ? { status: 400, error: "This model's maximum context length is 2048 tokens. However, your request has 2100 input tokens. Please reduce the length of the input." }
        : b.messages.at(-1)!.content === CONTEXT_LIMIT_MESSAGE ? '<answer>short</answer>'
        : toolCall('search', { query: ['q'] }),
    );
    const result = await research(QUESTION, base(s, { tools: [fakeTool('search', () => 'r').tool] }));
    expect(result.termination).toBe('context limit');
    expect(result.answer).toBe('short');
    expect(s.requests).toHaveLength(3);
  });

  it('when even the request asking for the answer does not fit, the run ends "context full" with no answer', async () => {
    const tooLong = "This model's maximum context length is 2048 tokens. However, your request has 2100 input tokens. Please reduce the length of the input.";
    const s = await serve((_b, i) => (i === 0 ? toolCall('search', { query: ['q'] }) : { status: 400, error: tooLong }));
    const result = await research(QUESTION, base(s, { tools: [fakeTool('search', () => 'r').tool] }));
    expect(result.termination).toBe('context full');
    expect(result.answer).toBeNull();
    expect(s.requests).toHaveLength(3);
    expect(s.requests[2].messages.at(-1)!.content).toBe(CONTEXT_LIMIT_MESSAGE);
  });

  it('a final reply without <answer> tags stands as the answer, its thinking removed', async () => {
    const s = await serve((b) => (b.messages.at(-1)!.content === CONTEXT_LIMIT_MESSAGE ? '<think>x</think>\nProbably Calatrava.' : { content: toolCall('search', {}), usage: { prompt_tokens: 5000, completion_tokens: 5 } }));
    const result = await research(QUESTION, base(s, { tools: [fakeTool('search', () => 'r').tool], maxContext: 1000 }));
    expect(result.termination).toBe('context limit, no answer tags');
    expect(result.answer).toBe('Probably Calatrava.');
  });

  it('fails with a clear error (and a trace) when the server refuses the request', async () => {
    const s = await serve(() => ({ status: 404, error: 'The model `x` does not exist.' }));
    const file = path.join(tmp, 'failed.json');
    const err = await research(QUESTION, base(s, { model: 'x', tools: [fakeTool('search', () => '').tool], trace: file })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResearchError);
    expect((err as Error).message).toMatch(/^research failed: 404 .*does not exist/);
    const trace = JSON.parse(fs.readFileSync(file, 'utf8'));
    expect(trace.error).toMatch(/does not exist/);
    expect(trace.result.termination).toBe('error');
  });

  it('an aborted run rejects with an AbortError', async () => {
    const controller = new AbortController();
    const s = await serve(() => {
      controller.abort();
      return { content: '<answer>late</answer>', delayMs: 200 };
    });
    const err = await research(QUESTION, base(s, { tools: [fakeTool('search', () => '').tool], signal: controller.signal })).catch((e: unknown) => e);
    expect((err as Error).name).toBe('AbortError');
  });

  it('needs a model: the first listed, or a clear error', async () => {
    const s = await serve(() => '<answer>a</answer>', { models: [] });
    await expect(research(QUESTION, base(s, { tools: [fakeTool('search', () => '').tool] }))).rejects.toThrow(/lists none; name one \(--model\)/);
  });
});

describe('ReAct: the trace', () => {
  it('records every request (delta-coded messages, sampling, reply, usage, timing) and tool call, and is written as JSON', async () => {
    const search = fakeTool('search', () => 'found');
    const replies = [toolCall('search', { query: ['a'] }), toolCall('search', { query: ['b'] }), '<answer>done</answer>'];
    const s = await serve((_b, i) => replies[i]);
    const file = path.join(tmp, 'trace.json');
    const result = await research(QUESTION, base(s, { tools: [search.tool], trace: file }));
    const trace = JSON.parse(fs.readFileSync(file, 'utf8'));
    expect(trace).toEqual(JSON.parse(JSON.stringify(result.trace)));
    expect(trace.version).toBe(1);
    expect(trace.question).toBe(QUESTION);
    expect(trace.mode).toBe('react');
    expect(trace.config).toMatchObject({ model: 'fake-model', maxCalls: 100, tools: ['search'], sampling: { temperature: 0.6, top_p: 0.95, presence_penalty: 1.1 } });
    expect(trace.entries.map((e: { type: string }) => e.type)).toEqual(['request', 'tool', 'request', 'tool', 'request']);
    const requests = trace.entries.filter((e: TraceRequest) => e.type === 'request') as TraceRequest[];
    expect(requests.map((r) => r.keep)).toEqual([0, 2, 4]);
    expect(requests[1].messages.map((m) => m.role)).toEqual(['assistant', 'user']);
    requests.forEach((r, i) => {
      expect(fullMessages(trace, r)).toEqual(s.requests[i].messages);
      expect(r.params).toMatchObject({ temperature: 0.6, max_tokens: 10000 });
      expect(r.reply).toBe(replies[i]);
      expect(r.usage!.prompt).toBeGreaterThan(0);
      expect(r.ms).toBeGreaterThanOrEqual(0);
      expect(r.at).toBeGreaterThanOrEqual(0);
    });
    expect(trace.entries[1]).toMatchObject({ type: 'tool', agent: 0, round: 1, name: 'search', arguments: { query: ['a'] }, result: 'found', truncated: false, chars: 5 });
    expect(trace.agents).toEqual([{ agent: 0, answer: 'done', termination: 'answer', rounds: 3 }]);
    expect(trace.result).toEqual({ answer: 'done', reasoning: null, termination: 'answer' });
    expect(trace.stats).toMatchObject({ calls: 3, promptTokens: result.stats.promptTokens, completionTokens: result.stats.completionTokens });
  });
});

describe("ReAct: the server's metrics", () => {
  const prom = (queries: number, hits: number, running: number) =>
    `# HELP moeserve:prefix_cache_queries_total x\n# TYPE moeserve:prefix_cache_queries_total counter\n` +
    `moeserve:prefix_cache_queries_total{model_name="m"} ${queries}\nmoeserve:prefix_cache_hits_total{model_name="m"} ${hits}\n` +
    `moeserve:num_requests_running{model_name="m"} ${running}\nmoeserve:prompt_tokens_total{model_name="m"} ${queries}\n` +
    `moeserve:generation_tokens_total{model_name="m"} 7\n`;

  it('reports the prefix-cache hit rate over the run and the peak of running requests from /metrics', async () => {
    let s!: FakeServer;
    s = await serve(
      (_b, i) => {
        s.setMetrics(prom(1000 + (i + 1) * 500, 200 + (i + 1) * 400, 3 - i));
        return { content: i === 0 ? toolCall('search', {}) : '<answer>a</answer>', delayMs: 80 };
      },
      { metrics: prom(1000, 200, 0) },
    );
    const result = await research(QUESTION, base(s, { tools: [fakeTool('search', () => 'r').tool], metrics: { intervalMs: 10 } }));
    expect(result.metrics).toMatchObject({ available: true, server: 'moeserve', prefixCacheQueries: 1000, prefixCacheHits: 800, prefixCacheHitRate: 0.8, promptTokens: 1000, generationTokens: 0 });
    expect((result.metrics as { peakRunning: number }).peakRunning).toBe(3);
    expect(result.metrics!.url).toBe(`${s.origin}/metrics`);
  });

  it('says so when /metrics is not there', async () => {
    const s = await serve(() => '<answer>a</answer>');
    const result = await research(QUESTION, base(s, { tools: [fakeTool('search', () => 'r').tool], metrics: true }));
    expect(result.metrics).toEqual({ available: false, url: `${s.origin}/metrics`, reason: `GET ${s.origin}/metrics: HTTP 404` });
    const down = await research(QUESTION, base(s, { tools: [fakeTool('search', () => 'r').tool], metrics: { url: 'http://127.0.0.1:1/metrics' } }));
    expect(down.metrics).toMatchObject({ available: false, reason: expect.stringMatching(/^http:\/\/127\.0\.0\.1:1\/metrics unreachable/) });
  });
});
