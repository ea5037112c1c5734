// OpenAI/vLLM request fields → the engine's SamplingParams, with the checks both endpoints share.
import type { SamplingParams } from '../engine/types.ts';
import { badRequest } from './errors.ts';
import type { CommonBody } from './schemas.ts';

/** Defaults for fields a request leaves out; the model's generation_config.json may set them (as vLLM does). */
export interface SamplingDefaults {
  temperature: number;
  topP: number;
  topK: number;
  /** generation_config.json's min_p and repetition_penalty (vLLM reads these too). */
  minP: number;
  repetitionPenalty: number;
}

export const OPENAI_DEFAULTS: SamplingDefaults = { temperature: 1, topP: 1, topK: 0, minP: 0, repetitionPenalty: 1 };

/** vLLM: temperatures below this are greedy. */
const GREEDY_EPS = 1e-5;
/** vLLM: other temperatures are raised to at least this (smaller ones overflow the softmax). */
const MIN_TEMPERATURE = 0.01;
/** OpenAI's range for logit_bias values. */
const MAX_LOGIT_BIAS = 100;

export interface Limits {
  maxModelLen: number;
  /** Token ids accepted in prompts: [0, vocabSize). */
  vocabSize: number;
  eosTokenIds: readonly number[];
  defaults: SamplingDefaults;
  /** Most choices (prompts × n) one request may ask for. */
  maxChoicesPerRequest: number;
}

/**
 * OpenAI's logit_bias (token id strings → -100..100) as the engine takes it; a 400 naming
 * logit_bias for a key that is not a token id or a value that is not a number in range.
 */
export function parseLogitBias(bias: Record<string, unknown> | null | undefined, vocabSize: number): Record<number, number> | undefined {
  if (bias === undefined || bias === null) return undefined;
  const out: Record<number, number> = {};
  let any = false;
  for (const [key, value] of Object.entries(bias)) {
    const trimmed = key.trim();
    const id = Number(trimmed);
    if (!/^\d+$/.test(trimmed) || id >= vocabSize) {
      throw badRequest(`logit_bias: '${key.slice(0, 40)}' is not a token id in [0, ${vocabSize})`, 'logit_bias');
    }
    if (typeof value !== 'number' || !(value >= -MAX_LOGIT_BIAS && value <= MAX_LOGIT_BIAS)) {
      throw badRequest(
        `logit_bias['${trimmed}'] must be a number between -${MAX_LOGIT_BIAS} and ${MAX_LOGIT_BIAS}, got ${JSON.stringify(value)?.slice(0, 40)}`,
        'logit_bias',
      );
    }
    out[id] = value;
    any = true;
  }
  return any ? out : undefined;
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
  const { defaults } = limits;
  let temperature = body.temperature ?? defaults.temperature;
  if (temperature < GREEDY_EPS) temperature = 0;
  else if (temperature < MIN_TEMPERATURE) temperature = MIN_TEMPERATURE;
  // -1 and 0 both mean no limit (vLLM); so does a limit of the whole vocabulary or more.
  const topK = body.top_k ?? defaults.topK;
  const minTokens = body.min_tokens ?? 0;
  if (minTokens > o.maxTokens) {
    throw badRequest(`min_tokens (${minTokens}) must be at most the number of tokens to generate (${o.maxTokens})`, 'min_tokens');
  }
  const params: SamplingParams = {
    maxTokens: o.maxTokens,
    temperature,
    // A top_p that float32 rounds to 0 would read as "off" natively; the smallest one keeps just the best token.
    topP: Math.max(body.top_p ?? defaults.topP, 1e-9),
    topK: topK <= 0 || topK >= limits.vocabSize ? 0 : topK,
    seed: seedFor(body.seed, o.seedOffset),
    stopTokenIds: [...stopIds],
    ignoreEos,
    logprobs: o.logprobs,
    promptLogprobs: o.promptLogprobs,
  };
  // Neutral values stay out of the params: the engine's batches then carry no processing for them.
  const minP = body.min_p ?? defaults.minP;
  if (minP > 0) params.minP = minP;
  if (body.presence_penalty) params.presencePenalty = body.presence_penalty;
  if (body.frequency_penalty) params.frequencyPenalty = body.frequency_penalty;
  const repetition = body.repetition_penalty ?? defaults.repetitionPenalty;
  if (repetition !== 1) params.repetitionPenalty = repetition;
  const bias = parseLogitBias(body.logit_bias, limits.vocabSize);
  if (bias) params.logitBias = bias;
  if (minTokens > 0) params.minTokens = minTokens;
  if (body.cache_salt !== undefined && body.cache_salt !== null) params.cacheSalt = body.cache_salt;
  return params;
}

/** Choice i of a seeded request uses seed + i (as vLLM's n > 1 children), kept within the safe integers. */
function seedFor(seed: number | null | undefined, offset: number): number | undefined {
  if (seed === undefined || seed === null) return undefined;
  return Number.isSafeInteger(seed + offset) ? seed + offset : seed - offset;
}

/**
 * vLLM's truncate_prompt_tokens: the prompt cut to its last k tokens (truncation_side 'right': its
 * first k); -1 keeps max_model_len. Shorter prompts stay as they are.
 */
export function truncatePrompt(ids: number[], body: CommonBody, maxModelLen: number): number[] {
  const k = body.truncate_prompt_tokens;
  if (k === undefined || k === null) return ids;
  if (k === 0 || k < -1) throw badRequest(`truncate_prompt_tokens must be at least 1, or -1 for max_model_len (got ${k})`, 'truncate_prompt_tokens');
  const keep = k === -1 ? maxModelLen : k;
  if (keep > maxModelLen) {
    throw badRequest(`truncate_prompt_tokens (${k}) must be at most this model's maximum context length (${maxModelLen})`, 'truncate_prompt_tokens');
  }
  if (ids.length <= keep) return ids;
  return body.truncation_side === 'right' ? ids.slice(0, keep) : ids.slice(ids.length - keep);
}

/** The length bound for tokenizing a prompt: none beyond the body size when it is truncated afterwards. */
export const promptTokenBound = (body: CommonBody, maxModelLen: number): number =>
  body.truncate_prompt_tokens === undefined || body.truncate_prompt_tokens === null ? maxModelLen : Number.MAX_SAFE_INTEGER;

/**
 * Alternatives the engine is asked for per prompt token when prompt_logprobs is set: all 20, so that the
 * rank of the prompt's own token is known whenever it is among them.
 */
export const PROMPT_LOGPROBS_WIDTH = 20;

/** Checks both endpoints share for vLLM's extras whose limits depend on other fields. */
export function checkSamplingExtras(body: CommonBody, n: number): void {
  if (body.best_of !== undefined && body.best_of !== null && body.best_of !== n) {
    throw badRequest(`'best_of' other than n is not supported (best_of ${body.best_of}, n ${n}): candidates are not ranked`, 'best_of');
  }
  if (body.prompt_logprobs !== undefined && body.prompt_logprobs !== null && body.stream === true) {
    throw badRequest('`prompt_logprobs` are not available when `stream=True`.', 'prompt_logprobs');
  }
}
