// Request validation: every way a GenerateRequest can be unservable becomes a RequestError
// naming the OpenAI parameter, before the request touches the scheduler.
import { RequestError, type GenerateRequest } from './types.ts';

export interface ValidationLimits {
  maxModelLen: number;
  vocabSize: number;
}

export const MAX_LOGPROBS = 20;

function isInt(x: unknown): x is number {
  return typeof x === 'number' && Number.isInteger(x);
}

function checkTokenIds(ids: unknown, vocabSize: number, param: string, what: string): void {
  if (!Array.isArray(ids)) throw new RequestError(`${what} must be an array of token ids`, param);
  for (let i = 0; i < ids.length; i++) {
    const t = ids[i];
    if (!isInt(t) || t < 0 || t >= vocabSize) {
      throw new RequestError(`${what}[${i}] = ${String(t)} is not a token id in [0, ${vocabSize})`, param);
    }
  }
}

function checkLogprobs(n: unknown, param: string): void {
  if (n === null) return;
  if (!isInt(n) || n < 0 || n > MAX_LOGPROBS) {
    throw new RequestError(`${param} must be an integer between 0 and ${MAX_LOGPROBS}, got ${String(n)}`, param);
  }
}

export function validateRequest(req: GenerateRequest, limits: ValidationLimits): void {
  const { promptTokens, params } = req;
  if (!Array.isArray(promptTokens) || promptTokens.length === 0) {
    throw new RequestError('The prompt must contain at least one token.', 'prompt');
  }
  checkTokenIds(promptTokens, limits.vocabSize, 'prompt', 'prompt token');
  if (!isInt(params.maxTokens) || params.maxTokens < 1) {
    throw new RequestError(`max_tokens must be an integer of at least 1, got ${String(params.maxTokens)}`, 'max_tokens');
  }
  const total = promptTokens.length + params.maxTokens;
  if (total > limits.maxModelLen) {
    throw new RequestError(
      `This model's maximum context length is ${limits.maxModelLen} tokens. However, you requested ` +
        `${total} tokens (${promptTokens.length} in the prompt, ${params.maxTokens} in the completion). ` +
        'Please reduce the length of the prompt or completion.',
      promptTokens.length >= limits.maxModelLen ? 'prompt' : 'max_tokens',
    );
  }
  if (typeof params.temperature !== 'number' || !Number.isFinite(params.temperature) || params.temperature < 0) {
    throw new RequestError(`temperature must be a finite number >= 0, got ${String(params.temperature)}`, 'temperature');
  }
  if (typeof params.topP !== 'number' || !(params.topP > 0 && params.topP <= 1)) {
    throw new RequestError(`top_p must be in (0, 1], got ${String(params.topP)}`, 'top_p');
  }
  if (!isInt(params.topK) || params.topK < 0) {
    throw new RequestError(`top_k must be an integer >= 0 (0 = off), got ${String(params.topK)}`, 'top_k');
  }
  if (params.seed !== undefined && !Number.isSafeInteger(params.seed)) {
    throw new RequestError(`seed must be an integer, got ${String(params.seed)}`, 'seed');
  }
  checkTokenIds(params.stopTokenIds, limits.vocabSize, 'stop_token_ids', 'stop token');
  checkLogprobs(params.logprobs, 'logprobs');
  checkLogprobs(params.promptLogprobs, 'prompt_logprobs');
  validateLogitsProcessing(req, limits);
}

const isF32 = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x) && Number.isFinite(Math.fround(x));

/** The optional fields of SamplingParams that shape the logits (vLLM's ranges). */
function validateLogitsProcessing({ params }: GenerateRequest, limits: ValidationLimits): void {
  const { minP, presencePenalty, frequencyPenalty, repetitionPenalty, logitBias, minTokens } = params;
  // The native batch holds these as float32 / int32: refuse what would overflow there.
  if (!isF32(params.temperature)) throw new RequestError(`temperature ${params.temperature} is too large`, 'temperature');
  if (params.topK > 0x7fffffff) throw new RequestError(`top_k ${params.topK} is too large (use 0 or -1 for no limit)`, 'top_k');
  if (minP !== undefined && !(isF32(minP) && minP >= 0 && minP <= 1)) {
    throw new RequestError(`min_p must be in [0, 1], got ${String(minP)}`, 'min_p');
  }
  for (const [value, name] of [[presencePenalty, 'presence_penalty'], [frequencyPenalty, 'frequency_penalty']] as const) {
    if (value !== undefined && !(isF32(value) && value >= -2 && value <= 2)) {
      throw new RequestError(`${name} must be in [-2, 2], got ${String(value)}`, name);
    }
  }
  if (repetitionPenalty !== undefined && !(isF32(repetitionPenalty) && repetitionPenalty > 0)) {
    throw new RequestError(`repetition_penalty must be a finite number > 0, got ${String(repetitionPenalty)}`, 'repetition_penalty');
  }
  if (logitBias !== undefined) {
    if (logitBias === null || typeof logitBias !== 'object') throw new RequestError('logit_bias must map token ids to numbers', 'logit_bias');
    for (const [key, value] of Object.entries(logitBias)) {
      const id = Number(key);
      if (!/^\d+$/.test(key) || id >= limits.vocabSize) {
        throw new RequestError(`logit_bias: '${key}' is not a token id in [0, ${limits.vocabSize})`, 'logit_bias');
      }
      if (!isF32(value)) throw new RequestError(`logit_bias['${key}'] must be a finite number, got ${String(value)}`, 'logit_bias');
    }
  }
  if (minTokens !== undefined && !(isInt(minTokens) && minTokens >= 0 && minTokens <= params.maxTokens)) {
    throw new RequestError(`min_tokens must be an integer in [0, max_tokens = ${params.maxTokens}], got ${String(minTokens)}`, 'min_tokens');
  }
}
