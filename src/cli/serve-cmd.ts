// `moeserve serve [MODEL_DIR]`: vLLM's `vllm serve` conventions over our engine.
import os from 'node:os';
import path from 'node:path';
import { Command, Option } from 'commander';
import type { FastifyInstance } from 'fastify';
import { buildApp, DEFAULT_MAX_CHOICES_PER_REQUEST, DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT_MS } from '../server/app.ts';
import { DEFAULT_TOKENIZER_WORKERS } from '../chat/text-service.ts';
import { DEFAULT_SHUTDOWN_TIMEOUT_S, drain } from '../server/drain.ts';
import { DEFAULT_MAX_NUM_BATCHED_TOKENS, DEFAULT_MAX_NUM_SEQS } from '../engine/engine.ts';
import { DEFAULT_BLOCK_SIZE, loadServedModel, type LoadedModel } from './load-model.ts';
import { DEFAULT_GPU_MEMORY_UTILIZATION, describeKvPlan } from './kv-plan.ts';
import { DTYPE_CHOICES, KV_CACHE_DTYPE_CHOICES } from './precision.ts';
import { DEVICE_CHOICES, resolveDevice, type DeviceChoice } from './device.ts';
import { loadAddon } from '../native/load-addon.ts';
import { ensureDemoModel } from './demo-model.ts';
import { choiceArg, fractionArg, intArg, nonNegativeNumberArg, positiveNumberArg } from './options.ts';
import { packageVersion } from './package-info.ts';
import { byteProgress } from './progress.ts';
import { guidedDecodingFor } from '../guided/guided-decoding.ts';

export interface ServeOptions {
  host: string;
  port: number;
  servedModelName?: string[];
  apiKey?: string;
  maxModelLen?: number;
  threads: number;
  device: DeviceChoice;
  loadFormat: 'auto' | 'safetensors' | 'dummy';
  /** GiB; undefined: the default from free memory (CPU) or --gpu-memory-utilization (CUDA). */
  kvCacheMemory?: number;
  /** undefined: DEFAULT_GPU_MEMORY_UTILIZATION (left undefined so that an explicit one on the CPU gets its note). */
  gpuMemoryUtilization?: number;
  dtype: (typeof DTYPE_CHOICES)[number];
  kvCacheDtype: (typeof KV_CACHE_DTYPE_CHOICES)[number];
  blockSize: number;
  maxNumSeqs: number;
  maxNumBatchedTokens: number;
  /** commander's --no-prefix-caching. */
  prefixCaching: boolean;
  generationConfig: 'auto' | 'vllm';
  /** vLLM's flag: no reasoning parser unless one is named ('none' is accepted as off). */
  reasoningParser?: 'qwen3' | 'none';
  /** On by default when the tokenizer has the <tool_call> markers; 'none' turns it off. */
  toolCallParser: 'hermes' | 'none';
  /** Accepted for vLLM compatibility: tool_choice 'auto' is always served when a tool-call parser is on. */
  enableAutoToolChoice?: boolean;
  /** vLLM's --trust-request-chat-template: requests may bring their own chat_template. */
  trustRequestChatTemplate?: boolean;
  /** MiB of Responses API responses kept in memory (0: stateless). */
  responseStoreSize: number;
  mlock?: boolean;
  /** commander's --no-weight-coding. */
  weightCoding: boolean;
  // ---- limits and timeouts (README: Security and limits) ----
  maxChoicesPerRequest: number;
  /** MiB; undefined: from max-model-len (defaultBodyLimit). */
  maxBodySize?: number;
  /** Seconds. */
  requestTimeout: number;
  writeTimeout: number;
  shutdownTimeout: number;
  maxConnections: number;
  tokenizerWorkers: number;
}

/** Where startServer's start-up log goes (serve: stdout and stderr; research --serve: stderr only). */
export interface ServeLog {
  log(line: string): void;
  warn(line: string): void;
  /** The load progress bar's stream (drawn only on a TTY). */
  progress: NodeJS.WriteStream;
}

const CONSOLE_LOG: ServeLog = { log: (line) => console.log(line), warn: (line) => console.warn(line), progress: process.stdout };

/** A server started by startServer: listening at `address` (its origin), its model loaded. */
export interface StartedServer {
  app: FastifyInstance;
  loaded: LoadedModel;
  names: string[];
  address: string;
  guidedDecoding: ReturnType<typeof guidedDecodingFor>;
}

export async function serve(modelDirArg: string | undefined, opts: ServeOptions): Promise<void> {
  const { app, loaded, names, address, guidedDecoding } = await startServer(modelDirArg, opts);
  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) {
      console.log(`${signal} again: exiting now`);
      process.exit(1);
    }
    closing = true;
    const grace = opts.shutdownTimeout;
    console.log(`${signal}: draining (no new connections; running requests have ${grace} s to finish, --shutdown-timeout)`);
    try {
      await drain(app, loaded.engine, grace * 1000);
      await guidedDecoding.close();
    } catch (err) {
      console.error(`shutdown failed: ${(err as Error).message}`);
      process.exit(1);
    }
    console.log('shut down');
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  console.log(
    `serving ${JSON.stringify(names[0])} (max_model_len ${loaded.maxModelLen}, ` +
      `KV cache ${loaded.kvBlocks} blocks × ${loaded.blockSize} tokens) at ${address}/v1` +
      (opts.apiKey ? ' (API key required)' : ''),
  );
}

/**
 * Loads the model (the demo model without a directory), builds the app, warms its workers and listens on
 * opts.host:opts.port: everything `serve` does but the signal handlers and the "serving" line.
 */
export async function startServer(modelDirArg: string | undefined, opts: ServeOptions, out: ServeLog = CONSOLE_LOG): Promise<StartedServer> {
  const console = { log: out.log, warn: out.warn };
  const modelDir = path.resolve(modelDirArg ?? (await ensureDemoModel(out.log)));
  // Resolved here too, so that an unusable --device cuda fails before anything is read or logged.
  const device = resolveDevice(opts.device, loadAddon().backends());
  const dummy = opts.loadFormat === 'dummy';
  console.log(
    `loading ${modelDir} on ${device === 'cuda' ? 'CUDA' : 'the CPU'}` +
      `${opts.device === 'auto' ? ' (--device auto)' : ''}, ${plural(opts.threads, device === 'cuda' ? 'host thread' : 'thread')}` +
      (dummy ? ", random weights of config.json's shapes (--load-format dummy)" : ''),
  );
  const progress = byteProgress(dummy ? 'generating weights' : device === 'cuda' ? 'uploading weights' : 'loading weights', out.progress);
  const loaded = await loadServedModel({
    dir: modelDir,
    device,
    loadFormat: opts.loadFormat,
    maxModelLen: opts.maxModelLen,
    threads: opts.threads,
    kvCacheGiB: opts.kvCacheMemory,
    gpuMemoryUtilization: opts.gpuMemoryUtilization,
    dtype: opts.dtype,
    kvCacheDtype: opts.kvCacheDtype,
    blockSize: opts.blockSize,
    maxNumSeqs: opts.maxNumSeqs,
    maxNumBatchedTokens: opts.maxNumBatchedTokens,
    enablePrefixCaching: opts.prefixCaching,
    generationConfig: opts.generationConfig,
    mlock: opts.mlock,
    codeWeights: opts.weightCoding,
    onProgress: (done, total) => progress.update(done, total),
  }).finally(() => progress.stop());
  for (const note of loaded.notes) console.log(`note: ${note}`);
  console.log(describeDevice(loaded, opts.threads));
  console.log(describeDtype(loaded));
  console.log(describeKvPlan(loaded.kv, loaded.maxModelLen, loaded.kvCacheDtype));
  const coded = loaded.codedWeights;
  if (coded.matrices > 0) {
    const gib = (b: number) => (b / 2 ** 30).toFixed(2);
    console.log(`weights: ${coded.matrices} bf16 matrices coded losslessly, ${gib(coded.sourceBytes)} → ${gib(coded.codedBytes)} GiB (--no-weight-coding to keep them as they are)`);
  }
  if (loaded.mlock === 'locked') console.log('weights locked in RAM (--mlock)');
  else if (loaded.mlock !== 'off') console.warn(`warning: --mlock: ${loaded.mlock}; serving with unlocked weights`);
  console.log(
    `scheduler: max-num-seqs ${loaded.maxNumSeqs}, max-num-batched-tokens ${loaded.maxNumBatchedTokens}, ` +
      `prefix caching ${loaded.enablePrefixCaching ? 'on' : 'off'}`,
  );
  const names = opts.servedModelName?.length ? opts.servedModelName : [path.basename(modelDir)];
  const guidedDecoding = guidedDecodingFor(path.join(modelDir, 'tokenizer.json'), loaded.config.native.vocabSize, loaded.engine.eosTokenIds);
  const app = buildApp({
    engine: loaded.engine,
    tokenizer: loaded.tokenizer,
    template: loaded.template,
    servedModelName: names,
    apiKey: opts.apiKey,
    maxModelLen: loaded.maxModelLen,
    vocabSize: loaded.config.native.vocabSize,
    modelRoot: modelDir,
    samplingDefaults: loaded.samplingDefaults,
    version: packageVersion(),
    reasoningParser: opts.reasoningParser === 'qwen3' ? 'qwen3' : null,
    toolCallParser: opts.toolCallParser === 'none' ? null : undefined,
    guidedDecoding,
    trustRequestChatTemplate: opts.trustRequestChatTemplate === true,
    responseStoreBytes: Math.floor(opts.responseStoreSize * 1024 * 1024),
    logger: { level: 'warn' },
    maxChoicesPerRequest: opts.maxChoicesPerRequest,
    bodyLimit: opts.maxBodySize === undefined ? undefined : Math.floor(opts.maxBodySize * 2 ** 20),
    requestTimeoutMs: opts.requestTimeout * 1000,
    writeTimeoutMs: opts.writeTimeout * 1000,
    maxConnections: opts.maxConnections,
    tokenizerWorkers: opts.tokenizerWorkers,
  });
  // Before listening, not on the first request, and at the same time: each tokenizer worker builds the
  // tokenizer and the grammar worker prepares the vocabulary (about a second each, on threads of their own).
  await Promise.all([
    app.textService.warmup(),
    guidedDecoding.warmup().catch((err: unknown) => {
      console.warn(`guided decoding unavailable until a request retries it: ${(err as Error).message}`);
    }),
  ]);
  const address = await app.listen({ host: opts.host, port: opts.port });
  return { app, loaded, names, address, guidedDecoding };
}

/** The start-up log's device line: where the model runs, its memory, and the weights' size on it. */
export function describeDevice(loaded: Pick<LoadedModel, 'device' | 'loadFormat'>, threads: number): string {
  const d = loaded.device;
  const random = loaded.loadFormat === 'dummy' ? ', random (--load-format dummy)' : '';
  if (d.backend === 'cuda') {
    const mem = d.memory ? `: ${gib(d.memory.totalBytes)} GiB total, ${gib(d.memory.freeBytes)} GiB free after load` : '';
    return `device: ${d.name}${mem}; weights ${gib(d.weightBytes)} GiB on the device${random}`;
  }
  const where = loaded.loadFormat === 'dummy' ? 'in RAM' : 'memory-mapped safetensors';
  return `device: ${d.name}, ${plural(threads, 'thread')}; weights ${gib(d.weightBytes)} GiB${random}, ${where}`;
}

/** The start-up log's arithmetic line (--dtype). */
export function describeDtype(loaded: Pick<LoadedModel, 'device' | 'dtype'>): string {
  if (loaded.dtype === 'float32') return 'dtype: float32 (exact: matmul activations in f32; --dtype)';
  // Only the CPU's avx512bf16 kernels have the bf16 mode (addon-types.ts, LoadOptions.activations).
  const rounds = loaded.device.backend === 'cpu' && loaded.device.name === 'cpu/avx512bf16';
  return rounds
    ? 'dtype: bfloat16 (matmul activations on bf16 weights rounded to bf16, as llama.cpp and vLLM; --dtype float32 for the exact mode)'
    : `dtype: bfloat16 (${loaded.device.name} keeps matmul activations in f32 here; --dtype)`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function gib(bytes: number): string {
  return (bytes / 2 ** 30).toFixed(2);
}

export function serveCommand(): Command {
  return new Command('serve')
    .description('serve a Qwen3-MoE checkpoint (Hugging Face layout) over the OpenAI API; without MODEL_DIR, a generated demo model')
    .argument('[MODEL_DIR]', 'model directory: config.json, *.safetensors, tokenizer.json, tokenizer_config.json')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port to listen on (0: any free port)', intArg(0), 8000)
    .option('--served-model-name <names...>', 'model name(s) the API answers to (default: the directory name)')
    .addOption(new Option('--api-key <key>', 'require `Authorization: Bearer <key>` on /v1 routes').env('MOESERVE_API_KEY'))
    .option('--max-model-len <tokens>', "context length (default: config.json's max_position_embeddings)", intArg(2))
    .option('--device <device>', "where the model runs: 'cuda' (an NVIDIA GPU), 'cpu', or 'auto': the GPU when CUDA is usable here (see `moeserve info`)", choiceArg(DEVICE_CHOICES), 'auto')
    .option(
      '--load-format <format>',
      "'auto'/'safetensors': the checkpoint's *.safetensors; 'dummy': random weights of config.json's shapes (no weight files needed)",
      choiceArg(['auto', 'safetensors', 'dummy'] as const),
      'auto',
    )
    .option('--threads <n>', 'CPU threads for the model (with --device cuda: host threads for loading)', intArg(1), os.availableParallelism())
    .option(
      '--kv-cache-memory <GiB>',
      'memory for the paged KV cache, in GiB, on either device (default: CPU, a share of the free memory; CUDA, what --gpu-memory-utilization leaves; logged at start)',
      positiveNumberArg,
    )
    .option(
      '--gpu-memory-utilization <share>',
      `CUDA: the share of the GPU's memory for the weights, workspace and KV cache, in (0, 1] (default ${DEFAULT_GPU_MEMORY_UTILIZATION}; ignored on the CPU)`,
      fractionArg,
    )
    .option(
      '--dtype <dtype>',
      "the arithmetic: 'auto' (= 'bfloat16' unless the checkpoint is float32) rounds the CPU's matmul activations on bf16 weights to bf16, " +
        "as llama.cpp and vLLM run bf16 models; 'float32' is the exact mode (f32 activations, and f32 KV on the CPU)",
      choiceArg(DTYPE_CHOICES),
      'auto',
    )
    .option(
      '--kv-cache-dtype <dtype>',
      "the KV cache's storage: 'auto' follows --dtype ('bf16', or 'f32' with --dtype float32 on the CPU); 'bf16' is half the memory of 'f32' (CPU only)",
      choiceArg(KV_CACHE_DTYPE_CHOICES),
      'auto',
    )
    .option('--block-size <tokens>', 'tokens per KV cache block', intArg(1), DEFAULT_BLOCK_SIZE)
    .option('--max-num-seqs <n>', 'most sequences in one step (the running batch)', intArg(1), DEFAULT_MAX_NUM_SEQS)
    .option(
      '--max-num-batched-tokens <tokens>',
      'token budget of one step (decodes first, then prompt chunks: chunked prefill)',
      intArg(1),
      DEFAULT_MAX_NUM_BATCHED_TOKENS,
    )
    .option('--mlock', 'lock the weights in RAM so that the OS never pages out an idle expert (as llama.cpp)')
    .option('--no-weight-coding', 'read bf16 weights as they are, not in their lossless 12-bit coded form (decode reads a quarter fewer bytes coded)')
    .option('--no-prefix-caching', 'turn off automatic prefix caching (reuse of the KV of earlier prompts)')
    .option(
      '--generation-config <source>',
      "'auto': default temperature/top_p/top_k from the model's generation_config.json (as vLLM); 'vllm': OpenAI's defaults",
      choiceArg(['auto', 'vllm'] as const),
      'auto',
    )
    .option('--reasoning-parser <name>', "'qwen3': <think>…</think> → reasoning_content and reasoning (default: none, the block stays in content, as vLLM)", choiceArg(['qwen3', 'none'] as const))
    .option('--tool-call-parser <name>', "<tool_call> blocks → tool_calls ('none' to turn off)", choiceArg(['hermes', 'none'] as const), 'hermes')
    .option('--enable-auto-tool-choice', "accepted as in vLLM; tool_choice 'auto' is on whenever a tool-call parser is")
    .option('--response-store-size <MiB>', 'Responses API responses kept in memory for previous_response_id and item_reference (0: stateless)', nonNegativeNumberArg, 64)
    .option('--trust-request-chat-template', "let chat requests bring their own 'chat_template' (a Jinja template runs in the server: trusted clients only)")
    .option('--max-choices-per-request <n>', 'most choices (prompts × n) one request may ask for', intArg(1), DEFAULT_MAX_CHOICES_PER_REQUEST)
    .option('--max-body-size <MiB>', 'largest request body (default: 64 bytes per token of max-model-len, 1 to 32 MiB)', positiveNumberArg)
    .option('--request-timeout <seconds>', 'time to receive a whole request, headers and body', intArg(1), DEFAULT_TIMEOUT_MS / 1000)
    .option('--write-timeout <seconds>', 'how long a stream waits for a client that does not read it before closing the connection', intArg(1), DEFAULT_TIMEOUT_MS / 1000)
    .option('--max-connections <n>', 'open connections at most; more are closed on arrival', intArg(1), DEFAULT_MAX_CONNECTIONS)
    .option('--shutdown-timeout <seconds>', 'on SIGTERM/SIGINT, how long running requests may take to finish before they get a 503', intArg(0), DEFAULT_SHUTDOWN_TIMEOUT_S)
    .option('--tokenizer-workers <n>', 'worker threads that tokenize prompts and render chat templates', intArg(1), DEFAULT_TOKENIZER_WORKERS)
    .action(async (modelDir: string | undefined, opts: ServeOptions) => {
      await serve(modelDir, opts);
    });
}
