// What every route handler needs, and the checks common to both generation endpoints.
import { randomUUID } from 'node:crypto';
import type { Engine } from '../engine/types.ts';
import type { TextTokenizer } from '../chat/tokenizer.ts';
import type { ChatTemplate } from '../chat/template.ts';
import { ApiError } from './errors.ts';
import type { Limits } from './sampling.ts';
import type { GuidedDecoding } from '../guided/guided-decoding.ts';

export interface ServerContext {
  engine: Engine;
  tokenizer: TextTokenizer;
  template: ChatTemplate | null;
  /** Names requests may use in `model`; the first is the one responses report. */
  servedModelNames: string[];
  limits: Limits;
  /** Chat reply parsing: reasoning (vLLM's --reasoning-parser qwen3), tool calls (--tool-call-parser hermes). */
  chatParsers: ChatParsers;
  /** response_format and forced tool calls; absent: such requests get a 400. */
  guided?: GuidedDecoding | null;
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

export function responseId(prefix: 'cmpl' | 'chatcmpl'): string {
  return `${prefix}-${randomUUID().replace(/-/g, '')}`;
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
