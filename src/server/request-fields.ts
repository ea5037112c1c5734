// Every request field the two generation endpoints know (OpenAI's and vLLM's ChatCompletionRequest and
// CompletionRequest), and what each does here. Nothing that changes the output is silently ignored: a
// field is implemented, refused with a 400 naming it (unless its value asks for nothing), or ignored
// because it cannot change the output. schemas.ts types every field listed here, the handlers call
// checkRequestFields, and tests/e2e/request-extras.test.ts walks the whole table.
import { badRequest } from './errors.ts';

export type Endpoint = 'chat' | 'completions';

export type FieldStatus =
  /** Honoured with vLLM's (or OpenAI's) semantics; `note` says how. */
  | 'implemented'
  /** A 400 naming the field, unless `accepts` says the value asks for nothing (false, 0, the default). */
  | 'refused'
  /** Accepted and unused, because it cannot change the output; `note` says why. */
  | 'ignored';

export interface FieldRule {
  status: FieldStatus;
  endpoints: readonly Endpoint[];
  /** Who defines it: OpenAI's API, vLLM's extensions, or both. */
  origin: 'openai' | 'vllm';
  note: string;
  /**
   * Values that are served although the field as a whole is refused (they ask for nothing), or, for an
   * implemented field, the values it can serve (others: a 400 naming it). Absent or null values are
   * always accepted.
   */
  accepts?: (value: unknown) => boolean;
}

const BOTH: readonly Endpoint[] = ['chat', 'completions'];
const CHAT: readonly Endpoint[] = ['chat'];
const COMPLETIONS: readonly Endpoint[] = ['completions'];

const emptyList = (v: unknown) => Array.isArray(v) && v.length === 0;
const emptyObject = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 0;

const impl = (endpoints: readonly Endpoint[], origin: FieldRule['origin'], note: string, accepts?: FieldRule['accepts']): FieldRule => ({
  status: 'implemented',
  endpoints,
  origin,
  note,
  ...(accepts ? { accepts } : {}),
});
const refused = (endpoints: readonly Endpoint[], origin: FieldRule['origin'], note: string, accepts?: FieldRule['accepts']): FieldRule => ({
  status: 'refused',
  endpoints,
  origin,
  note,
  ...(accepts ? { accepts } : {}),
});
const ignored = (endpoints: readonly Endpoint[], origin: FieldRule['origin'], note: string): FieldRule => ({ status: 'ignored', endpoints, origin, note });

/** The table. Keep it in step with schemas.ts (a unit of request-extras.test.ts checks both ways). */
export const REQUEST_FIELDS = {
  // ---- the request itself ----
  model: impl(BOTH, 'openai', 'a served model name (404 otherwise); absent: the first'),
  messages: impl(CHAT, 'openai', "rendered by the model's chat template"),
  prompt: impl(COMPLETIONS, 'openai', 'a string, strings, token ids or lists of token ids'),
  // ---- length ----
  max_tokens: impl(BOTH, 'openai', 'tokens to generate (completions: default 16; chat: the rest of the context)'),
  max_completion_tokens: impl(CHAT, 'openai', "OpenAI's newer name of max_tokens (wins over it)"),
  min_tokens: impl(BOTH, 'vllm', 'EOS, stop ids and stop strings wait for this many tokens'),
  // ---- sampling ----
  temperature: impl(BOTH, 'openai', "vLLM's: below 1e-5 greedy"),
  top_p: impl(BOTH, 'openai', 'nucleus sampling'),
  top_k: impl(BOTH, 'vllm', '-1 or 0: off'),
  min_p: impl(BOTH, 'vllm', 'relative probability floor'),
  seed: impl(BOTH, 'openai', 'reproducible draws (choice i: seed + i)'),
  n: impl(BOTH, 'openai', 'choices per prompt'),
  presence_penalty: impl(BOTH, 'openai', 'over the generated tokens'),
  frequency_penalty: impl(BOTH, 'openai', 'over the generated tokens'),
  repetition_penalty: impl(BOTH, 'vllm', 'over prompt and generated tokens'),
  logit_bias: impl(BOTH, 'openai', 'token id → -100..100, added first'),
  allowed_token_ids: impl(BOTH, 'vllm', 'only these ids can be sampled (the allowed-token mask guided decoding uses)'),
  bad_words: impl(BOTH, 'vllm', "vLLM's: a word's last token is banned where the tokens before it would complete the word"),
  best_of: impl(BOTH, 'openai', 'equal to n (or absent): a no-op; anything else would rank candidates, refused'),
  use_beam_search: refused(BOTH, 'vllm', 'beam search is not implemented', (v) => v === false),
  length_penalty: refused(BOTH, 'vllm', 'it only weighs beams, and beam search is not implemented', (v) => v === 1),
  // ---- stopping ----
  stop: impl(BOTH, 'openai', 'stop strings, found across token boundaries'),
  stop_token_ids: impl(BOTH, 'vllm', 'stop on these ids'),
  ignore_eos: impl(BOTH, 'vllm', 'EOS does not stop'),
  include_stop_str_in_output: impl(BOTH, 'vllm', 'the stop string stays in the text'),
  // ---- output form ----
  stream: impl(BOTH, 'openai', 'server-sent events'),
  stream_options: impl(BOTH, 'openai', 'include_usage (continuous_usage_stats: accepted, not sent); only with stream: true, as vLLM'),
  logprobs: impl(BOTH, 'openai', 'chat: a boolean; completions: top-N 0..20'),
  top_logprobs: impl(CHAT, 'openai', 'alternatives per token with logprobs: true'),
  prompt_logprobs: impl(BOTH, 'vllm', "the prompt tokens' logprobs (0..20 alternatives), vLLM's shape; not with stream"),
  echo: impl(BOTH, 'openai', 'completions: the prompt before the text; chat (vLLM): the last message, when it has the reply\'s role, before the content'),
  return_tokens_as_token_ids: impl(BOTH, 'vllm', 'logprob tokens as token_id:N'),
  return_token_ids: impl(BOTH, 'vllm', 'prompt_token_ids and each choice\'s token_ids in the response'),
  skip_special_tokens: impl(BOTH, 'vllm', 'special tokens in the text or not'),
  spaces_between_special_tokens: ignored(BOTH, 'vllm', "only slow tokenizers use it; vLLM's fast-tokenizer detokenizer (Qwen3's) ignores it too"),
  request_id: impl(BOTH, 'vllm', 'the response id is chatcmpl-<request_id> / cmpl-<request_id>'),
  // ---- prompt handling ----
  truncate_prompt_tokens: impl(BOTH, 'vllm', 'keep the last k prompt tokens (-1: max_model_len)'),
  truncation_side: impl(BOTH, 'vllm', "with truncate_prompt_tokens: 'left' (default) keeps the last k, 'right' the first k"),
  add_special_tokens: impl(BOTH, 'vllm', "the tokenizer's special tokens (BOS) added to the prompt (completions: default true; chat: false)"),
  suffix: refused(COMPLETIONS, 'openai', 'insertion (fill in the middle) is not implemented', (v) => v === ''),
  prompt_embeds: refused(COMPLETIONS, 'vllm', 'prompts are token ids or text'),
  // ---- chat template ----
  add_generation_prompt: impl(CHAT, 'vllm', "the template's generation prompt (default true)"),
  continue_final_message: impl(CHAT, 'vllm', 'the last message is left open and continued (not with add_generation_prompt: true)'),
  chat_template: impl(CHAT, 'vllm', 'a Jinja template for this request: refused unless the server runs with --trust-request-chat-template (newer vLLM\'s default)'),
  chat_template_kwargs: impl(CHAT, 'vllm', 'template variables'),
  documents: impl(CHAT, 'vllm', 'the template variable `documents` (templates without RAG ignore it, as in vLLM)'),
  reasoning_effort: impl(CHAT, 'openai', "the template variable `reasoning_effort`, as vLLM passes it (Qwen3's template does not use it)"),
  include_reasoning: impl(CHAT, 'vllm', 'false: the reasoning is left out of the reply'),
  mm_processor_kwargs: ignored(CHAT, 'vllm', 'only for images and audio, which are refused'),
  // ---- tools ----
  tools: impl(CHAT, 'openai', 'rendered by the template; calls parsed or forced'),
  tool_choice: impl(CHAT, 'openai', 'none, auto, required or a named function'),
  parallel_tool_calls: impl(CHAT, 'openai', 'false: one call at most'),
  functions: impl(CHAT, 'openai', "OpenAI's legacy form of tools: served as the tools they describe, the call returned as message.function_call"),
  function_call: impl(CHAT, 'openai', "OpenAI's legacy tool_choice ('none', 'auto', {name}) for functions"),
  // ---- guided decoding ----
  response_format: impl(BOTH, 'openai', 'json_object, json_schema (xgrammar)'),
  structured_outputs: impl(BOTH, 'vllm', 'one of json, regex, choice, grammar, json_object (structural_tag refused)'),
  guided_json: impl(BOTH, 'vllm', 'a JSON schema (object or its text), as response_format json_schema'),
  guided_regex: impl(BOTH, 'vllm', 'a regular expression the whole output matches'),
  guided_choice: impl(BOTH, 'vllm', 'the output is exactly one of these strings'),
  guided_grammar: impl(BOTH, 'vllm', "a grammar in xgrammar's EBNF (root rule `root`)"),
  guided_decoding_backend: ignored(BOTH, 'vllm', 'xgrammar is the only backend, and every constraint it serves means the same on any'),
  guided_whitespace_pattern: refused(BOTH, 'vllm', 'JSON is generated compact, with fixed separators'),
  structural_tag: refused(CHAT, 'vllm', 'structural tags are not implemented'),
  // ---- engine and scheduling ----
  priority: refused(BOTH, 'vllm', 'no priority scheduling (vLLM refuses it too without --scheduling-policy priority)', (v) => v === 0),
  logits_processors: refused(BOTH, 'vllm', 'custom logits processors are not loadable', emptyList),
  logprob_token_ids: refused(BOTH, 'vllm', 'logprobs of chosen ids are not implemented', emptyList),
  repetition_detection: refused(BOTH, 'vllm', 'repetition detection is not implemented', (v) => emptyObject(v) || (typeof v === 'object' && v !== null && !(Number((v as Record<string, unknown>).max_pattern_size) > 0))),
  max_repetition_pattern_size: refused(CHAT, 'vllm', 'repetition detection is not implemented', (v) => v === 0),
  min_repetition_pattern_size: refused(CHAT, 'vllm', 'repetition detection is not implemented', (v) => v === 0),
  repetition_min_count: refused(CHAT, 'vllm', 'repetition detection is not implemented', (v) => v === 0),
  thinking_token_budget: refused(BOTH, 'vllm', 'a thinking budget is not implemented', (v) => v === -1),
  cache_salt: impl(BOTH, 'vllm', 'salts the prefix cache: only requests with the same salt share cached blocks'),
  kv_transfer_params: ignored(BOTH, 'vllm', 'disaggregated serving is not implemented, and a KV transfer never changes the output'),
  ec_transfer_params: ignored(BOTH, 'vllm', 'encoder-cache transfer: no encoders here'),
  vllm_xargs: ignored(BOTH, 'vllm', "arguments for vLLM plugins; vLLM's own sampling does not read them either"),
  return_token_offsets: ignored(BOTH, 'vllm', 'vLLM honours it only on its /render endpoints and ignores it on these'),
  // ---- OpenAI fields about the account, storage or other models ----
  user: ignored(BOTH, 'openai', 'an end-user id for abuse tracking'),
  metadata: ignored(CHAT, 'openai', 'stored-completion tags; nothing is stored'),
  store: ignored(CHAT, 'openai', 'nothing is stored'),
  service_tier: ignored(CHAT, 'openai', 'one tier here'),
  prompt_cache_key: ignored(CHAT, 'openai', 'a cache routing hint; prefix caching is automatic'),
  safety_identifier: ignored(CHAT, 'openai', 'an end-user id for abuse tracking'),
  prediction: ignored(CHAT, 'openai', 'predicted outputs only speed generation up; the output is the same'),
  modalities: refused(CHAT, 'openai', 'text is the only output', (v) => Array.isArray(v) && v.every((m) => m === 'text')),
  audio: refused(CHAT, 'openai', 'no audio output'),
  web_search_options: refused(CHAT, 'openai', 'no web search'),
  verbosity: refused(CHAT, 'openai', 'no verbosity control'),
} as const satisfies Record<string, FieldRule>;

export type KnownField = keyof typeof REQUEST_FIELDS;

/** The fields an endpoint knows. */
export function fieldsOf(endpoint: Endpoint): KnownField[] {
  return (Object.keys(REQUEST_FIELDS) as KnownField[]).filter((f) => (REQUEST_FIELDS[f].endpoints as readonly Endpoint[]).includes(endpoint));
}

/**
 * The refusals of the table: a 400 naming the first refused field whose value asks for something.
 * Implemented fields' own limits (best_of, prompt_logprobs with stream, ...) are checked by the handlers.
 */
export function checkRequestFields(body: Readonly<Record<string, unknown>>, endpoint: Endpoint): void {
  for (const field of fieldsOf(endpoint)) {
    const rule: FieldRule = REQUEST_FIELDS[field];
    if (rule.status !== 'refused') continue;
    const value = body[field];
    if (value === undefined || value === null || rule.accepts?.(value)) continue;
    throw badRequest(`'${field}' is not supported: ${rule.note}`, field);
  }
  // vLLM: "Stream options can only be defined when `stream=True`." (an empty object asks for nothing).
  const options = body.stream_options;
  if (options !== undefined && options !== null && !emptyObject(options) && body.stream !== true) {
    throw badRequest('Stream options can only be defined when `stream=True`.', 'stream_options');
  }
}
