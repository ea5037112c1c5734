// What every route handler needs, and the checks common to both generation endpoints.
import { randomUUID } from 'node:crypto';
import type { Engine } from '../engine/types.ts';
import type { TextTokenizer } from '../chat/tokenizer.ts';
import type { ChatTemplate } from '../chat/template.ts';
import type { ResponseStore } from './response-store.ts';
import { ApiError } from './errors.ts';
import type { Limits } from './sampling.ts';
import type { GuidedDecoding } from '../guided/guided-decoding.ts';
import type { TextService } from '../chat/text-service.ts';
import { cannotFitCheap, tooLongMessage } from '../chat/fit-bound.ts';

export interface ServerContext {
  engine: Engine;
  /** On the event loop: per-token detokenizing and logprob texts only. */
  tokenizer: TextTokenizer;
  template: ChatTemplate | null;
  /** Tokenizing prompts and rendering chat templates, off the event loop. */
  text: TextService;
  timeouts: { writeMs: number };
  /** Names requests may use in `model`; the first is the one responses report. */
  servedModelNames: string[];
  limits: Limits;
  /** Chat reply parsing: reasoning (vLLM's --reasoning-parser qwen3), tool calls (--tool-call-parser hermes). */
  chatParsers: ChatParsers;
  /** response_format and forced tool calls; absent: such requests get a 400. */
  guided?: GuidedDecoding | null;
  /** vLLM's --trust-request-chat-template: a request may bring its own chat_template (else a 400). */
  trustRequestChatTemplate?: boolean;
  /** Stored Responses API responses (--response-store-size); null: stateless. */
  responseStore?: ResponseStore | null;
}

export interface ChatParsers {
  reasoning: boolean;
  toolCalls: boolean;
}

/** The model name to report; 404 as vLLM when the request names another model. A missing name means the served one. */
export function checkModel(ctx: ServerContext, model: string | null | undefined): string {
  if (model === undefined || model === null || model === '') return ctx.servedModelNames[0];
  if (!ctx.servedModelNames.includes(model)) throw new ApiError(404, `The model \`${model}\` does not exist.`, 'model');
  return model;
}

/**
 * Refuses (400) a request for more choices (prompts × n) than --max-choices-per-request, before any of
 * them is tokenized: each choice is an engine sequence and a stream.
 */
export function checkChoiceCount(prompts: number, n: number, max: number): void {
  if (prompts * n <= max) return;
  const asked = prompts > 1 ? `${prompts * n} choices (${prompts} prompts × n ${n})` : `${n} choices (n ${n})`;
  throw new ApiError(400, `This request asks for ${asked}; this server serves at most ${max} per request (--max-choices-per-request).`, prompts > 1 ? 'prompt' : 'n');
}

/** The event loop's cheap length bound (one byteLength): a 400 for text that cannot fit the context. */
export function checkTextFits(ctx: ServerContext, text: string, param: string): void {
  const { maxModelLen } = ctx.limits;
  if (cannotFitCheap(text, maxModelLen, ctx.tokenizer.lengthBound)) {
    throw new ApiError(400, tooLongMessage(`'${param}'`, text, maxModelLen, ctx.tokenizer.lengthBound), param);
  }
}

/** A response id; vLLM's request_id, when the request gives one, in place of the random part. */
export function responseId(prefix: 'cmpl' | 'chatcmpl', requestId?: string | null): string {
  return `${prefix}-${requestId ?? randomUUID().replace(/-/g, '')}`;
}

export const nowSeconds = () => Math.floor(Date.now() / 1000);

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export function usage(promptTokens: number, completionTokens: number): Usage {
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}
