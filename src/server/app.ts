// The Fastify application: OpenAI-compatible routes over an Engine. No socket here: tests drive it
// with app.inject(), the CLI calls listen().
import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { Engine } from '../engine/types.ts';
import type { TextTokenizer } from '../chat/tokenizer.ts';
import type { ChatTemplate } from '../chat/template.ts';
import { ApiError, frameworkErrorHandler, installErrorHandlers, toErrorReply } from './errors.ts';
import { OPENAI_DEFAULTS, type SamplingDefaults } from './sampling.ts';
import { chatBodySchema, completionBodySchema, type ChatBody, type CompletionBody } from './schemas.ts';
import { completionsHandler } from './completions.ts';
import { chatCompletionsHandler } from './chat-completions.ts';
import type { ServerContext } from './context.ts';
import { createMetrics } from './metrics.ts';
import { registerTokenizeRoutes } from './tokenize.ts';
import { installBodyGuard } from './body-guard.ts';
import type { GuidedDecoding } from '../guided/guided-decoding.ts';

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
  /** Largest request body in bytes (a 128K-token prompt as JSON ids is about 1 MB). */
  bodyLimit?: number;
  /**
   * vLLM's --reasoning-parser: 'qwen3' returns <think>…</think> as reasoning_content; null: off.
   * Default: 'qwen3' when the tokenizer has <think> and </think> tokens.
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
}

function hasTokens(tokenizer: TextTokenizer, ...tokens: string[]): boolean {
  return tokens.every((t) => tokenizer.addedTokens.has(t));
}

function checkBearer(header: string | undefined, apiKey: string): boolean {
  const expected = Buffer.from(`Bearer ${apiKey}`);
  const given = Buffer.from(header ?? '');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

export function buildApp(options: AppOptions): FastifyInstance {
  const names = Array.isArray(options.servedModelName) ? options.servedModelName : [options.servedModelName];
  if (names.length === 0 || names.some((n) => typeof n !== 'string' || n === '')) throw new Error('servedModelName must be a non-empty name');
  const maxModelLen = Math.min(options.maxModelLen ?? options.engine.maxModelLen, options.engine.maxModelLen);
  // /metrics reads the engine's state; the routes see the engine through the latency timers.
  const metrics = createMetrics({ engine: options.engine, modelName: names[0] });
  const ctx: ServerContext = {
    engine: metrics.instrument(options.engine),
    tokenizer: options.tokenizer,
    template: options.template,
    servedModelNames: names,
    limits: {
      maxModelLen,
      vocabSize: options.vocabSize ?? options.tokenizer.size,
      eosTokenIds: [...new Set([...options.engine.eosTokenIds, ...options.tokenizer.eosTokenIds])],
      defaults: { ...OPENAI_DEFAULTS, ...options.samplingDefaults },
    },
    chatParsers: {
      reasoning: options.reasoningParser === undefined ? hasTokens(options.tokenizer, '<think>', '</think>') : options.reasoningParser !== null,
      toolCalls: options.toolCallParser === undefined ? hasTokens(options.tokenizer, '<tool_call>', '</tool_call>') : options.toolCallParser !== null,
    },
    guided: options.guidedDecoding ?? null,
  };
  const created = Math.floor(Date.now() / 1000);

  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: options.bodyLimit ?? 32 * 1024 * 1024,
    frameworkErrors: frameworkErrorHandler,
    // Strict types: "5" is not a number, and nothing is silently dropped or defaulted.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false } },
  });
  installErrorHandlers(app);
  installBodyGuard(app);

  if (options.apiKey !== undefined && options.apiKey !== '') {
    const apiKey = options.apiKey;
    app.addHook('onRequest', async (request, reply) => {
      if (!request.url.startsWith('/v1')) return;
      if (!checkBearer(request.headers.authorization, apiKey)) {
        const { status, body } = toErrorReply(new ApiError(401, 'Unauthorized: a valid API key is required (Authorization: Bearer <key>).'));
        return reply.code(status).send(body);
      }
    });
  }

  app.get('/health', async (_request, reply) => reply.code(200).send());
  // Outside /v1, so not behind the API key (as vLLM).
  app.get('/metrics', async (_request, reply) => reply.type(metrics.contentType).send(await metrics.render()));
  app.get('/version', async () => ({ version: options.version ?? 'unknown' }));
  app.get('/v1/models', async () => ({
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
  app.post<{ Body: CompletionBody }>('/v1/completions', { schema: { body: completionBodySchema } }, completionsHandler(ctx));
  app.post<{ Body: ChatBody }>('/v1/chat/completions', { schema: { body: chatBodySchema } }, chatCompletionsHandler(ctx));
  // vLLM's /tokenize and /detokenize (outside /v1: not behind the API key, as in vLLM).
  registerTokenizeRoutes(app, ctx);
  return app;
}
