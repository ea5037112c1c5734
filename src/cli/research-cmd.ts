// `moeserve research "QUESTION"`: Tongyi DeepResearch's agents (ReAct, or Heavy mode with --heavy N) against an
// OpenAI-compatible server (--base-url), or against a moeserve server started in-process (--serve).
// The answer goes to stdout; progress and the run's summary to stderr.
import { Command, InvalidArgumentError, Option } from 'commander';
import { research, ResearchError, type ResearchOptions, type ResearchResult } from '../research/research.ts';
import { createProgress, summaryLines } from '../research/progress.ts';
import { intArg, nonNegativeNumberArg, positiveNumberArg } from './options.ts';
import { serveCommand, startServer, type ServeOptions, type StartedServer } from './serve-cmd.ts';

export interface ResearchCliOptions {
  baseUrl?: string;
  model?: string;
  apiKey?: string;
  heavy?: number;
  maxCalls: number;
  maxContext?: number;
  tools: string;
  corpus?: string;
  serperKey?: string;
  serperUrl?: string;
  /** commander's --no-network. */
  network: boolean;
  toolOutputChars: number;
  reportChars: number;
  temperature?: number;
  topP?: number;
  presencePenalty?: number;
  maxTokens?: number;
  trace?: string;
  /** true: the demo model; a string: that model directory. */
  serve?: string | true;
  json?: boolean;
  /** commander's --no-progress. */
  progress: boolean;
}

/** The options `moeserve serve` would use for MODEL_DIR by default, on loopback at a free port. */
export async function defaultServeOptions(): Promise<ServeOptions> {
  let captured: ServeOptions | undefined;
  const cmd = serveCommand()
    .exitOverride()
    .action((_dir: string | undefined, opts: ServeOptions) => {
      captured = opts;
    });
  await cmd.parseAsync(['--host', '127.0.0.1', '--port', '0'], { from: 'user' });
  return captured!;
}

/** Starts a moeserve server in-process for --serve, its start-up log on stderr. */
export async function startInProcessServer(modelDir: string | undefined): Promise<{ server: StartedServer; baseURL: string; apiKey?: string; close(): Promise<void> }> {
  const opts = await defaultServeOptions();
  const log = (line: string) => process.stderr.write(`[serve] ${line}\n`);
  const server = await startServer(modelDir, opts, { log, warn: log, progress: process.stderr });
  log(`serving ${JSON.stringify(server.names[0])} (max_model_len ${server.loaded.maxModelLen}) at ${server.address}/v1`);
  return {
    server,
    baseURL: `${server.address}/v1`,
    apiKey: opts.apiKey,
    async close() {
      await server.app.close();
      await server.guidedDecoding.close();
      await server.loaded.engine.close();
    },
  };
}

export async function runResearchCli(question: string, opts: ResearchCliOptions): Promise<number> {
  if (opts.serve === undefined && opts.baseUrl === undefined) {
    throw new Error('give the server: --base-url URL (e.g. http://127.0.0.1:8000/v1), or --serve [MODEL_DIR] to start one here');
  }
  if (opts.serve !== undefined && opts.baseUrl !== undefined) throw new Error('--base-url and --serve exclude each other');
  const controller = new AbortController();
  let interrupted = 0;
  const onSignal = () => {
    interrupted++;
    if (interrupted > 1) process.exit(130);
    process.stderr.write('\ninterrupted: stopping the agents (again to exit now)\n');
    controller.abort(new Error('interrupted'));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let inProcess: Awaited<ReturnType<typeof startInProcessServer>> | null = null;
  const progress = opts.progress ? createProgress({ stream: process.stderr }) : null;
  try {
    if (opts.serve !== undefined) inProcess = await startInProcessServer(opts.serve === true ? undefined : opts.serve);
    const sampling: NonNullable<ResearchOptions['sampling']> = {};
    if (opts.temperature !== undefined) sampling.temperature = opts.temperature;
    if (opts.topP !== undefined) sampling.top_p = opts.topP;
    if (opts.presencePenalty !== undefined) sampling.presence_penalty = opts.presencePenalty;
    if (opts.maxTokens !== undefined) sampling.max_tokens = opts.maxTokens;
    let result: ResearchResult;
    try {
      result = await research(question, {
        baseURL: inProcess?.baseURL ?? opts.baseUrl!,
        model: opts.model,
        apiKey: opts.apiKey ?? inProcess?.apiKey,
        heavy: opts.heavy,
        maxCalls: opts.maxCalls,
        maxContext: opts.maxContext,
        tools: opts.tools.split(',').map((t) => t.trim()).filter(Boolean),
        toolOptions: {
          corpusDir: opts.corpus,
          serperApiKey: opts.serperKey,
          serperBaseUrl: opts.serperUrl,
          allowNetwork: opts.network,
        },
        toolOutputChars: opts.toolOutputChars,
        reportChars: opts.reportChars,
        sampling,
        signal: controller.signal,
        onEvent: progress?.onEvent,
        trace: opts.trace,
      });
    } finally {
      progress?.close();
    }
    for (const line of summaryLines(result)) process.stderr.write(`${line}\n`);
    if (opts.trace !== undefined) process.stderr.write(`trace: ${opts.trace}\n`);
    if (opts.json) {
      const { trace: _trace, ...rest } = result;
      process.stdout.write(`${JSON.stringify(rest, null, 2)}\n`);
    } else if (result.answer !== null) {
      process.stdout.write(`${result.answer}\n`);
    }
    if (result.answer === null) {
      process.stderr.write(`moeserve research: no answer (${result.termination}${result.termination === 'call budget' ? `: all ${opts.maxCalls} calls used; raise --max-calls` : ''})\n`);
      return 2;
    }
    return 0;
  } catch (err) {
    if (err instanceof ResearchError) {
      if (opts.trace !== undefined) process.stderr.write(`trace: ${opts.trace}\n`);
      process.stderr.write(`moeserve research: ${err.message}\n`);
      return err.termination === 'aborted' ? 130 : 1;
    }
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await inProcess?.close();
  }
}

export function researchCommand(): Command {
  return new Command('research')
    .description("run Tongyi DeepResearch's agent on a question: ReAct, or Heavy mode (--heavy N: N IterResearch agents and a synthesis)")
    .argument('<QUESTION>', 'the question')
    .option('--base-url <url>', 'the OpenAI base URL of the server, e.g. http://127.0.0.1:8000/v1')
    .option('--serve [MODEL_DIR]', 'start a moeserve server here on loopback over MODEL_DIR (without one: the demo model), with serve\'s defaults, and use it')
    .option('--model <name>', 'the model name (default: the first the server lists)')
    .addOption(new Option('--api-key <key>', 'the API key sent as Bearer (default EMPTY)').env('OPENAI_API_KEY'))
    .option('--heavy <n>', 'Heavy mode: N IterResearch agents in parallel, then a synthesis of their reports', intArg(1))
    .option('--max-calls <n>', 'model calls per agent at most (the reference: 100)', intArg(1), 100)
    .option('--max-context <tokens>', "when an agent's prompt reaches this, it is asked for its answer now (default: 110K, at most the server's context less room for a reply)", intArg(64))
    .option('--tools <list>', "tools, comma-separated: search, visit", 'search,visit')
    .option('--corpus <dir>', 'a directory of .txt/.md/.html documents for search and visit (works offline)')
    .addOption(new Option('--serper-key <key>', 'web search through a Serper-compatible API with this key').env('SERPER_API_KEY'))
    .option('--serper-url <url>', 'the Serper-compatible endpoint (default https://google.serper.dev)')
    .option('--no-network', 'no web search and no http(s) visits: the corpus only')
    .option('--tool-output-chars <n>', 'characters of one tool output sent to the model at most', intArg(100), 20_000)
    .option('--report-chars <n>', 'Heavy mode: characters of an agent\'s report carried between rounds at most', intArg(100), 12_000)
    .option('--temperature <t>', 'sampling temperature (the reference: 0.6)', nonNegativeNumberArg)
    .option('--top-p <p>', 'top_p (the reference: 0.95)', positiveNumberArg)
    .option('--presence-penalty <p>', 'presence_penalty (the reference: 1.1)', (v: string) => {
      const n = Number(v);
      if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`expected a number, got '${v}'`);
      return n;
    })
    .option('--max-tokens <n>', 'tokens per reply at most (the reference: 10000; cut to the room the context leaves)', intArg(1))
    .option('--trace <file>', 'write a JSON trace of the run (every request, tool call, result and timing) there')
    .option('--json', 'print the result (answer, reasoning, agents, stats, server metrics) as JSON instead of the answer')
    .option('--no-progress', 'no live progress on stderr')
    .action(async (question: string, opts: ResearchCliOptions) => {
      const code = await runResearchCli(question, opts);
      if (code !== 0) process.exitCode = code;
    });
}
