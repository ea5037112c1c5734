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
}
