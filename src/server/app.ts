// The Fastify application: OpenAI-compatible routes over an Engine. No socket here: tests drive it
// with app.inject(), the CLI calls listen().
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { Engine } from '../engine/types.ts';
import type { TextTokenizer } from '../chat/tokenizer.ts';
import type { ChatTemplate } from '../chat/template.ts';
import { ApiError, frameworkErrorHandler, installErrorHandlers } from './errors.ts';
import { requireApiKey } from './auth.ts';
import { refuseOtherMethods } from './method-not-allowed.ts';
import { OPENAI_DEFAULTS, type SamplingDefaults } from './sampling.ts';
import { chatBodySchema, completionBodySchema, type ChatBody, type CompletionBody } from './schemas.ts';
import { completionsHandler } from './completions.ts';
import { chatCompletionsHandler } from './chat-completions.ts';
import { responsesHandler } from './responses.ts';
import { ResponseStore } from './response-store.ts';
import { responsesBodySchema, type ResponsesBody } from './responses-schema.ts';
import type { ServerContext } from './context.ts';
import { createMetrics } from './metrics.ts';
import { registerTokenizeRoutes } from './tokenize.ts';
import { installBodyGuard, installJsonParser } from './body-guard.ts';
import { refuseWhileDraining } from './drain.ts';
import type { GuidedDecoding } from '../guided/guided-decoding.ts';
import { createTextService, DEFAULT_TOKENIZER_WORKERS, type TextService } from '../chat/text-service.ts';

declare module 'fastify' {
  interface FastifyInstance {
    /** The app's tokenizer workers (warmup() before listening starts them). */
    textService: TextService;
  }
}

export interface AppOptions {
  engine: Engine;
  tokenizer: TextTokenizer;
  /** null: the model ships no chat template; chat requests get a 400. */
  template: ChatTemplate | null;
  /** One name or several (vLLM's --served-model-name accepts a list); the first is reported. */
  servedModelName: string | string[];
  /** When set, every /v1 route requires `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Defaults to the engine's; never more than the engine's. */
  maxModelLen?: number;
  /** Prompt token ids must be below this; defaults to the tokenizer's size. */
  vocabSize?: number;
  /** Reported as `root` in /v1/models (vLLM reports the model path). */
  modelRoot?: string;
  /** Defaults for unspecified sampling fields (e.g. from generation_config.json). */
  samplingDefaults?: Partial<SamplingDefaults>;
  version?: string;
  logger?: FastifyServerOptions['logger'];
  /**
   * Largest request body in bytes. Default: 64 bytes per token of context, at least 1 MiB and at most
   * 32 MiB (8 MiB for a 128K context; a 128K-token prompt is about 0.5 MB of text or 1 MB of JSON ids,
   * 12 bytes per token when a client escapes CJK text as \\uXXXX). Parsing JSON runs on the event loop.
   */
  bodyLimit?: number;
  /** Most choices (prompts × n) one request may ask for (default 1024, vLLM's VLLM_MAX_COMPLETION_PROMPTS). */
  maxChoicesPerRequest?: number;
  /** Milliseconds to receive a whole request, headers and body (a client sending a byte every 30 s is cut off); default 60 s. */
  requestTimeoutMs?: number;
  /** Milliseconds a stream may wait for a client that does not read it before the connection is closed; default 60 s. */
  writeTimeoutMs?: number;
  /** Open connections at most; more are closed on arrival (default 1024). */
  maxConnections?: number;
  /** Worker threads that tokenize prompts and render chat templates (default 2; 0: on the event loop, for tools only). */
  tokenizerWorkers?: number;
  /**
   * vLLM's --reasoning-parser: 'qwen3' returns <think>…</think> as reasoning_content and reasoning.
   * Default off (null), as vLLM without --reasoning-parser: the <think> block stays in content.
   */
  reasoningParser?: 'qwen3' | null;
  /**
   * vLLM's --tool-call-parser with --enable-auto-tool-choice: 'hermes' parses <tool_call> blocks into
   * tool_calls; null: off (tool_choice 'auto' with tools is then refused). Default: 'hermes' when
   * the tokenizer has <tool_call> and </tool_call> tokens.
   */
  toolCallParser?: 'hermes' | null;
  /** Guided decoding (response_format, tool_choice 'required' / named); absent: those requests get a 400. */
  guidedDecoding?: GuidedDecoding | null;
  /** vLLM's --trust-request-chat-template: chat requests may bring their own chat_template (default: refused). */
  trustRequestChatTemplate?: boolean;
  /**
   * Bytes of finished Responses API responses kept in memory for previous_response_id, item_reference and
   * GET /v1/responses/{id} (default 64 MiB, least recently used out first); 0: stateless.
   */
  responseStoreBytes?: number;
}

export const DEFAULT_MAX_CHOICES_PER_REQUEST = 1024;
/** nginx's client_body_timeout and send_timeout. */
export const DEFAULT_TIMEOUT_MS = 60_000;
/** nginx's worker_connections in its shipped nginx.conf. */
export const DEFAULT_MAX_CONNECTIONS = 1024;
/** Responses API responses kept for previous_response_id and item_reference: 64 MiB, least recently used out first. */
export const DEFAULT_RESPONSE_STORE_BYTES = 64 * 1024 * 1024;

/** See AppOptions.bodyLimit. */
export function defaultBodyLimit(maxModelLen: number): number {
  return Math.min(32 * 2 ** 20, Math.max(2 ** 20, maxModelLen * 64));
}

function positiveInt(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, got ${value}`);
  return value;
}

function hasTokens(tokenizer: TextTokenizer, ...tokens: string[]): boolean {
  return tokens.every((t) => tokenizer.addedTokens.has(t));
}

export function buildApp(options: AppOptions): FastifyInstance {
  const names = Array.isArray(options.servedModelName) ? options.servedModelName : [options.servedModelName];
  if (names.length === 0 || names.some((n) => typeof n !== 'string' || n === '')) throw new Error('servedModelName must be a non-empty name');
  const maxChoices = positiveInt('maxChoicesPerRequest', options.maxChoicesPerRequest ?? DEFAULT_MAX_CHOICES_PER_REQUEST);
  const maxModelLen = Math.min(options.maxModelLen ?? options.engine.maxModelLen, options.engine.maxModelLen);
  // /metrics reads the engine's state; the routes see the engine through the latency timers.
  const storeBytes = options.responseStoreBytes ?? DEFAULT_RESPONSE_STORE_BYTES;
  if (!Number.isSafeInteger(storeBytes) || storeBytes < 0) throw new Error(`responseStoreBytes must be an integer >= 0, got ${storeBytes}`);
  const metrics = createMetrics({ engine: options.engine, modelName: names[0] });
  const ctx: ServerContext = {
    engine: metrics.instrument(options.engine),
    tokenizer: options.tokenizer,
    template: options.template,
    text: createTextService(options.tokenizer, options.template, options.tokenizerWorkers ?? DEFAULT_TOKENIZER_WORKERS),
    servedModelNames: names,
    limits: {
      maxModelLen,
      vocabSize: options.vocabSize ?? options.tokenizer.size,
      eosTokenIds: [...new Set([...options.engine.eosTokenIds, ...options.tokenizer.eosTokenIds])],
      defaults: { ...OPENAI_DEFAULTS, ...options.samplingDefaults },
      maxChoicesPerRequest: maxChoices,
    },
    chatParsers: {
      reasoning: options.reasoningParser === 'qwen3',
      toolCalls: options.toolCallParser === undefined ? hasTokens(options.tokenizer, '<tool_call>', '</tool_call>') : options.toolCallParser !== null,
    },
    guided: options.guidedDecoding ?? null,
    trustRequestChatTemplate: options.trustRequestChatTemplate === true,
    responseStore: storeBytes > 0 ? new ResponseStore(storeBytes) : null,
    timeouts: { writeMs: positiveInt('writeTimeoutMs', options.writeTimeoutMs ?? DEFAULT_TIMEOUT_MS) },
  };
  const requestTimeout = positiveInt('requestTimeoutMs', options.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS);
  const created = Math.floor(Date.now() / 1000);
  const storedResponse = (id: string) => {
    const stored = ctx.responseStore?.get(id);
    if (stored === undefined) throw new ApiError(404, `Response with id '${id}' not found.`, 'response_id');
    return stored;
  };

  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: options.bodyLimit ?? defaultBodyLimit(maxModelLen),
    // Headers and body within requestTimeout (Node answers 408 and closes), checked at least every 30 s.
    requestTimeout,
    http: { headersTimeout: requestTimeout, connectionsCheckingInterval: Math.min(30_000, Math.max(50, Math.floor(requestTimeout / 4))) },
    frameworkErrors: frameworkErrorHandler,
    // Requests arriving while draining get our own, OpenAI-shaped 503 (drain.ts).
    return503OnClosing: false,
    // Strict types: "5" is not a number, and nothing is silently dropped or defaulted.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false } },
  });
  installErrorHandlers(app);
  refuseWhileDraining(app);
  installJsonParser(app);
  installBodyGuard(app);
  app.server.maxConnections = positiveInt('maxConnections', options.maxConnections ?? DEFAULT_MAX_CONNECTIONS);
  app.decorate('textService', ctx.text);
  app.addHook('onClose', () => ctx.text.close());

  // Open routes (as vLLM: health, metrics and the tokenizer routes are not behind --api-key).
  app.get('/health', async (_request, reply) => reply.code(200).send());
  app.get('/metrics', async (_request, reply) => reply.type(metrics.contentType).send(await metrics.render()));
  app.get('/version', async () => ({ version: options.version ?? 'unknown' }));
  registerTokenizeRoutes(app, ctx);
  refuseOtherMethods(app, { '/health': ['GET'], '/metrics': ['GET'], '/version': ['GET'], '/tokenize': ['POST'], '/detokenize': ['POST'] });

  // The /v1 routes, in a context of their own whose onRequest hook checks the key for every route the
  // router matched in it.
  void app.register(async (v1) => {
    if (options.apiKey !== undefined && options.apiKey !== '') requireApiKey(v1, options.apiKey);
    v1.get('/v1/models', async () => ({
      object: 'list',
      data: names.map((id) => ({
        id,
        object: 'model',
        created,
        owned_by: 'moeserve',
        root: options.modelRoot ?? names[0],
        parent: null,
        max_model_len: maxModelLen,
      })),
    }));
    v1.post<{ Body: CompletionBody }>('/v1/completions', { schema: { body: completionBodySchema } }, completionsHandler(ctx));
    v1.post<{ Body: ChatBody }>('/v1/chat/completions', { schema: { body: chatBodySchema } }, chatCompletionsHandler(ctx));
    v1.post<{ Body: ResponsesBody }>('/v1/responses', { schema: { body: responsesBodySchema } }, responsesHandler(ctx));
    v1.get<{ Params: { id: string } }>('/v1/responses/:id', async (request) => storedResponse(request.params.id).response);
    v1.delete<{ Params: { id: string } }>('/v1/responses/:id', async (request) => {
      storedResponse(request.params.id);
      ctx.responseStore!.delete(request.params.id);
      return { id: request.params.id, object: 'response', deleted: true };
    });
    refuseOtherMethods(v1, {
      '/v1/models': ['GET'], '/v1/completions': ['POST'], '/v1/chat/completions': ['POST'], '/v1/responses': ['POST'], '/v1/responses/:id': ['GET', 'DELETE'],
    });
  });
  return app;
}
