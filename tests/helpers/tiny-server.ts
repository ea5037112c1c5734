// A real server on loopback over a small generated model (the real addon, engine, tokenizer and chat
// template), for the hardening tests: each starts its own with the options its attack needs.
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { loadServedModel, type LoadedModel, type LoadModelOptions } from '../../src/cli/load-model.ts';
import { buildApp, type AppOptions } from '../../src/server/app.ts';
import { guidedDecodingFor, type GuidedDecoding } from '../../src/guided/guided-decoding.ts';
import { testModel } from './model-fixtures.ts';
import { listenLoopback } from './loopback.ts';

export const TINY_MODEL = 'tiny-moe';

/** A shape that loads in well under a second and generates hundreds of tokens per second (512 positions unless told). */
export function tinyModelDir(maxPositionEmbeddings = 512): Promise<string> {
  return testModel({ seed: 3, layers: 2, hidden: 32, heads: 2, kvHeads: 1, headDim: 16, experts: 4, topK: 2, moeIntermediate: 16, intermediate: 32, maxPositionEmbeddings });
}

export interface TinyServer {
  loaded: LoadedModel;
  app: FastifyInstance;
  origin: string;
  port: number;
  close(): Promise<void>;
}

export async function startTinyServer(
  app: Omit<Partial<AppOptions>, 'engine' | 'tokenizer' | 'template'> = {},
  load: Partial<LoadModelOptions> = {},
): Promise<TinyServer> {
  const dir = await tinyModelDir();
  const loaded = await loadServedModel({ dir, threads: 2, kvCacheGiB: 0.05, maxModelLen: 512, generationConfig: 'vllm', ...load });
  const server = buildApp({
    engine: loaded.engine,
    tokenizer: loaded.tokenizer,
    template: loaded.template,
    servedModelName: TINY_MODEL,
    vocabSize: loaded.config.native.vocabSize,
    ...app,
  });
  const origin = await listenLoopback(server);
  return {
    loaded,
    app: server,
    origin,
    port: (server.server.address() as AddressInfo).port,
    async close() {
      await server.close();
      await loaded.engine.close();
    },
  };
}

/** Guided decoding for a loaded model (its tokenizer.json, vocabulary and stop ids), its worker warmed up. */
export async function warmGuidedDecoding(loaded: LoadedModel): Promise<GuidedDecoding> {
  const guided = guidedDecodingFor(path.join(loaded.config.dir, 'tokenizer.json'), loaded.config.native.vocabSize, loaded.engine.eosTokenIds);
  await guided.warmup();
  return guided;
}
