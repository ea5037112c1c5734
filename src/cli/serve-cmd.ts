// `moeserve serve [MODEL_DIR]`: vLLM's `vllm serve` conventions over our engine.
import os from 'node:os';
import path from 'node:path';
import { Command, Option } from 'commander';
import { buildApp } from '../server/app.ts';
import { DEFAULT_BLOCK_SIZE, DEFAULT_KV_CACHE_GIB, loadServedModel } from './load-model.ts';
import { ensureDemoModel } from './demo-model.ts';
import { choiceArg, intArg, positiveNumberArg } from './options.ts';
import { packageVersion } from './package-info.ts';
import { byteProgress } from './progress.ts';

export interface ServeOptions {
  host: string;
  port: number;
  servedModelName?: string[];
  apiKey?: string;
  maxModelLen?: number;
  threads: number;
  kvCacheMemory: number;
  blockSize: number;
  generationConfig: 'auto' | 'vllm';
}

export async function serve(modelDirArg: string | undefined, opts: ServeOptions): Promise<void> {
  const modelDir = path.resolve(modelDirArg ?? (await ensureDemoModel()));
  console.log(`loading ${modelDir} (${opts.threads} threads)`);
  const progress = byteProgress('loading weights');
  const loaded = await loadServedModel({
    dir: modelDir,
    maxModelLen: opts.maxModelLen,
    threads: opts.threads,
    kvCacheGiB: opts.kvCacheMemory,
    blockSize: opts.blockSize,
    generationConfig: opts.generationConfig,
    onProgress: (done, total) => progress.update(done, total),
  }).finally(() => progress.stop());
  const names = opts.servedModelName?.length ? opts.servedModelName : [path.basename(modelDir)];
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
    logger: { level: 'warn' },
  });
  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) {
      console.log(`${signal} again: exiting now`);
      process.exit(1);
    }
    closing = true;
    console.log(`${signal}: shutting down`);
    // Stop listening and end in-flight requests (as aborted) together: an open stream would
    // otherwise hold app.close() until it finished generating.
    await Promise.all([app.close(), loaded.engine.close()]);
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  const address = await app.listen({ host: opts.host, port: opts.port });
  console.log(
    `serving ${JSON.stringify(names[0])} (max_model_len ${loaded.maxModelLen}, ` +
      `KV cache ${loaded.kvBlocks} blocks × ${loaded.blockSize} tokens) at ${address}/v1` +
      (opts.apiKey ? ' (API key required)' : ''),
  );
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
    .option('--threads <n>', 'CPU threads for the model', intArg(1), os.availableParallelism())
    .option('--kv-cache-memory <GiB>', 'memory for the paged KV cache, in GiB', positiveNumberArg, DEFAULT_KV_CACHE_GIB)
    .option('--block-size <tokens>', 'tokens per KV cache block', intArg(1), DEFAULT_BLOCK_SIZE)
    .option(
      '--generation-config <source>',
      "'auto': default temperature/top_p/top_k from the model's generation_config.json (as vLLM); 'vllm': OpenAI's defaults",
      choiceArg(['auto', 'vllm'] as const),
      'auto',
    )
    .action(async (modelDir: string | undefined, opts: ServeOptions) => {
      await serve(modelDir, opts);
    });
}
