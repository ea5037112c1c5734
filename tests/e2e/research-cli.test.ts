// `moeserve research` as a user runs it (bin/moeserve.js in a child process): against a scripted server with
// a local corpus (the answer on stdout, progress and the summary on stderr, the trace file, the exit codes),
// and with --serve over a generated model (a real in-process moeserve: its /metrics read at the end).
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { startFakeOpenAI, toolCall, type FakeServer } from '../helpers/fake-openai.ts';
import { tinyModelDir } from '../helpers/tiny-server.ts';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin/moeserve.js');
const run = promisify(execFile);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moeserve-research-cli-'));
const corpus = path.join(tmp, 'corpus');
fs.mkdirSync(corpus);
fs.writeFileSync(path.join(corpus, 'calatrava.md'), '# Santiago Calatrava\n\nThe Spanish architect designed the Oriente station in Lisbon (1998). His first bridge was the Bach de Roda bridge in Barcelona, completed in 1987.\n');
fs.writeFileSync(path.join(corpus, 'lisbon.txt'), 'Lisbon is the capital of Portugal. Its Oriente station opened for Expo 98.\n');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let server: FakeServer | null = null;
afterEach(async () => {
  await server?.close();
  server = null;
});

async function moeserve(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [bin, 'research', ...args], { cwd: tmp, env: { ...process.env, SERPER_API_KEY: '', OPENAI_API_KEY: '' } });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout: string; stderr: string; code: number };
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

describe('moeserve research', () => {
  it('runs the ReAct loop over a corpus: answer on stdout, progress and summary on stderr, a JSON trace', async () => {
    server = await startFakeOpenAI({
      script: (b, i) => {
        if (i === 0) return `<think>\nsearch the corpus\n</think>\n${toolCall('search', { query: ['Calatrava first bridge'] })}`;
        if (i === 1) {
          const link = /corpus:\/\/[^\s)\]]+/.exec(b.messages.at(-1)!.content)?.[0] ?? 'corpus://missing';
          return toolCall('visit', { url: [link], goal: 'first bridge' });
        }
        return `<think>\nThe page says 1987.\n</think>\n<answer>${b.messages.at(-1)!.content.includes('completed in 1987') ? 'The Bach de Roda bridge, 1987.' : 'not found'}</answer>`;
      },
    });
    const trace = path.join(tmp, 'trace.json');
    const { stdout, stderr, code } = await moeserve('Which bridge did the architect of the Oriente station complete first?', '--base-url', server.baseURL, '--corpus', corpus, '--no-network', '--trace', trace);
    expect(stderr).toContain('search {"query":["Calatrava first bridge"]}');
    expect(code).toBe(0);
    expect(stdout).toBe('The Bach de Roda bridge, 1987.\n');
    expect(stderr).toMatch(/ReAct · model fake-model at http:\/\/127\.0\.0\.1:\d+\/v1 · tools search, visit/);
    expect(stderr).toMatch(/visit \{"url":\["corpus:\/\/calatrava\.md"\],"goal":"first bridge"\}/);
    expect(stderr).toMatch(/answered in [\d.]+ s · 3 model calls · /);
    expect(stderr).toContain(`server metrics: GET ${server.origin}/metrics: HTTP 404`);
    expect(stderr).toContain(`trace: ${trace}`);
    const t = JSON.parse(fs.readFileSync(trace, 'utf8'));
    expect(t.result).toEqual({ answer: 'The Bach de Roda bridge, 1987.', reasoning: null, termination: 'answer' });
    expect(t.entries.filter((e: { type: string }) => e.type === 'tool').map((e: { name: string }) => e.name)).toEqual(['search', 'visit']);
    expect(server.requests[0].messages[0].content).toContain('"name":"visit"');
  });

  it('exits 2 when the call budget runs out without an answer, and 1 with a clear message on usage errors', async () => {
    server = await startFakeOpenAI({ script: () => toolCall('search', { query: ['again'] }) });
    const budget = await moeserve('Q?', '--base-url', server.baseURL, '--corpus', corpus, '--max-calls', '2', '--no-progress');
    expect(budget.code).toBe(2);
    expect(budget.stdout).toBe('');
    expect(budget.stderr).toContain('moeserve research: no answer (call budget: all 2 calls used; raise --max-calls)');

    const noServer = await moeserve('Q?', '--corpus', corpus);
    expect(noServer.code).toBe(1);
    expect(noServer.stderr).toContain('give the server: --base-url URL');

    const noTools = await moeserve('Q?', '--base-url', server.baseURL, '--no-network');
    expect(noTools.code).toBe(1);
    expect(noTools.stderr).toMatch(/moeserve: the search tool has nothing to search/);

    const down = await moeserve('Q?', '--base-url', 'http://127.0.0.1:1/v1', '--corpus', corpus, '--model', 'm', '--no-progress');
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/moeserve research: research failed: Connection error/);
  });

  it('--serve starts moeserve in-process over a model directory and reports its prefix cache', async () => {
    const dir = await tinyModelDir(16384);
    const trace = path.join(tmp, 'serve-trace.json');
    const { stdout, stderr, code } = await moeserve('Q?', '--serve', dir, '--corpus', corpus, '--max-calls', '2', '--max-tokens', '8', '--heavy', '2', '--trace', trace);
    // A random model writes neither a call nor an answer: both agents end by the budget; the synthesis answers.
    expect(stderr).toMatch(/\[serve\] serving "[^"]+" \(max_model_len 16384\) at http:\/\/127\.0\.0\.1:\d+\/v1/);
    expect(stderr).toMatch(/Heavy mode: 2 IterResearch agents and a synthesis/);
    expect(stderr).toMatch(/server \(moeserve\): prefix-cache hit rate [\d.]+% \([\d,]+ of [\d,]+ prompt tokens\) · peak \d requests running at once/);
    const t = JSON.parse(fs.readFileSync(trace, 'utf8'));
    expect(t.entries.filter((e: { type: string }) => e.type === 'request')).toHaveLength(5);
    expect(t.metrics.available).toBe(true);
    expect(t.metrics.prefixCacheHits).toBeGreaterThan(0);
    expect(code === 0 ? stdout.length > 0 : code === 2).toBe(true);
  });
});
