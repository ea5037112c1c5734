// OpenAI/vLLM request fields → the engine's SamplingParams, with the checks both endpoints share.
import type { SamplingParams } from '../engine/types.ts';
import { badRequest } from './errors.ts';
import type { CommonBody } from './schemas.ts';

/** Defaults for fields a request leaves out; the model's generation_config.json may set them (as vLLM does). */
export interface SamplingDefaults {
  temperature: number;
  topP: number;
  topK: number;
}

export const OPENAI_DEFAULTS: SamplingDefaults = { temperature: 1, topP: 1, topK: 0 };

export interface Limits {
  maxModelLen: number;
  /** Token ids accepted in prompts: [0, vocabSize). */
  vocabSize: number;
  eosTokenIds: readonly number[];
  defaults: SamplingDefaults;
}

/** Refuses, by name, fields that would change the output but are not implemented. */
export function refuseUnsupported(body: CommonBody): void {
  const nonZero = (v: number | null | undefined) => v !== undefined && v !== null && v !== 0;
  if (nonZero(body.presence_penalty)) throw badRequest("'presence_penalty' is not supported", 'presence_penalty');
  if (nonZero(body.frequency_penalty)) throw badRequest("'frequency_penalty' is not supported", 'frequency_penalty');
  if (body.repetition_penalty !== undefined && body.repetition_penalty !== null && body.repetition_penalty !== 1) {
    throw badRequest("'repetition_penalty' is not supported", 'repetition_penalty');
  }
  if (body.logit_bias && Object.keys(body.logit_bias).length > 0) throw badRequest("'logit_bias' is not supported", 'logit_bias');
}

export function stopStrings(body: CommonBody): string[] {
  const stop = body.stop;
  if (stop === undefined || stop === null) return [];
  return (typeof stop === 'string' ? [stop] : stop).filter((s) => s.length > 0);
}

export function checkPromptTokens(ids: readonly number[], limits: Limits, param = 'prompt'): void {
  if (ids.length === 0) throw badRequest('The prompt is empty: it must contain at least one token.', param);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (id < 0 || id >= limits.vocabSize) {
      throw badRequest(`Token id ${id} (at position ${i} of the prompt) is out of vocabulary [0, ${limits.vocabSize}).`, param);
    }
  }
}

/**
 * The number of tokens to generate: `requested` when it fits, else a 400 naming both numbers;
 * when not requested, `fallback` clamped to what the context leaves.
 */
export function resolveMaxTokens(
  promptLen: number,
  requested: number | null | undefined,
  fallback: number,
  limits: Limits,
  param: string,
): number {
  const room = limits.maxModelLen - promptLen;
  if (room <= 0) {
    throw badRequest(
      `This model's maximum context length is ${limits.maxModelLen} tokens. However, your request has ` +
        `${promptLen} input tokens. Please reduce the length of the input.`,
      'prompt',
    );
  }
  if (requested === undefined || requested === null) return Math.min(fallback, room);
  if (requested > room) {
    throw badRequest(
      `This model's maximum context length is ${limits.maxModelLen} tokens. However, you requested ` +
        `${promptLen + requested} tokens (${promptLen} in the input, ${requested} in the completion). ` +
        `Please reduce the length of the input or '${param}'.`,
      param,
    );
  }
  return requested;
}

export interface ParamsOverrides {
  maxTokens: number;
  logprobs: number | null;
  promptLogprobs: number | null;
  /** Added to the request's seed so that n > 1 choices differ (vLLM does the same per child). */
  seedOffset: number;
}

export function samplingParams(body: CommonBody, limits: Limits, o: ParamsOverrides): SamplingParams {
  const ignoreEos = body.ignore_eos === true;
  const stopIds = new Set<number>(body.stop_token_ids ?? []);
  for (const id of stopIds) {
    if (id < 0 || id >= limits.vocabSize) throw badRequest(`stop_token_ids: ${id} is not a token id`, 'stop_token_ids');
  }
  if (!ignoreEos) for (const id of limits.eosTokenIds) stopIds.add(id);
  const topK = body.top_k ?? limits.defaults.topK;
  return {
    maxTokens: o.maxTokens,
    temperature: body.temperature ?? limits.defaults.temperature,
    topP: body.top_p ?? limits.defaults.topP,
    topK: topK < 0 ? 0 : topK,
    seed: body.seed === undefined || body.seed === null ? undefined : body.seed + o.seedOffset,
    stopTokenIds: [...stopIds],
    ignoreEos,
    logprobs: o.logprobs,
    promptLogprobs: o.promptLogprobs,
  };
}
