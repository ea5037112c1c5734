// JSON schemas of the request bodies (validated by Fastify's ajv; errors.ts words the failures).
// Unknown fields are accepted and ignored, as vLLM does; fields we cannot honour are refused in
// the handlers, by name, rather than silently ignored.

const nullable = (type: string, extra: Record<string, unknown> = {}) => ({ type: [type, 'null'], ...extra });
const tokenIds = { type: 'array', items: { type: 'integer' } };
const stop = {
  anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }, { type: 'null' }],
};

/** Sampling and output fields shared by both endpoints. */
const common = {
  model: nullable('string'),
  temperature: nullable('number', { minimum: 0 }),
  top_p: nullable('number', { exclusiveMinimum: 0, maximum: 1 }),
  top_k: nullable('integer', { minimum: -1 }),
  seed: nullable('integer', { minimum: -9007199254740991, maximum: 9007199254740991 }),
  stop,
  stop_token_ids: { anyOf: [tokenIds, { type: 'null' }] },
  n: nullable('integer', { minimum: 1, maximum: 128 }),
  stream: nullable('boolean'),
  stream_options: {
    anyOf: [
      { type: 'object', properties: { include_usage: nullable('boolean'), continuous_usage_stats: nullable('boolean') } },
      { type: 'null' },
    ],
  },
  ignore_eos: nullable('boolean'),
  skip_special_tokens: nullable('boolean'),
  include_stop_str_in_output: nullable('boolean'),
  return_tokens_as_token_ids: nullable('boolean'),
  // Ranges as vLLM checks them; logit_bias keys and values are checked in sampling.ts (clearer messages).
  presence_penalty: nullable('number', { minimum: -2, maximum: 2 }),
  frequency_penalty: nullable('number', { minimum: -2, maximum: 2 }),
  repetition_penalty: nullable('number', { exclusiveMinimum: 0 }),
  min_p: nullable('number', { minimum: 0, maximum: 1 }),
  min_tokens: nullable('integer', { minimum: 0 }),
  logit_bias: nullable('object'),
  user: nullable('string'),
  // vLLM's extensions and the rest of request-fields.ts, typed here; what each does is in that table.
  best_of: nullable('integer', { minimum: 1 }),
  use_beam_search: nullable('boolean'),
  length_penalty: nullable('number'),
  spaces_between_special_tokens: nullable('boolean'),
  truncate_prompt_tokens: nullable('integer', { minimum: -1 }),
  truncation_side: { anyOf: [{ enum: ['left', 'right'] }, { type: 'null' }] },
  allowed_token_ids: { anyOf: [tokenIds, { type: 'null' }] },
  bad_words: { anyOf: [{ type: 'array', items: { type: 'string' } }, { type: 'null' }] },
  prompt_logprobs: nullable('integer', { minimum: 0, maximum: 20 }),
  add_special_tokens: nullable('boolean'),
  structured_outputs: nullable('object'),
  guided_json: { anyOf: [{ type: 'object' }, { type: 'boolean' }, { type: 'string' }, { type: 'null' }] },
  guided_regex: nullable('string'),
  guided_choice: { anyOf: [{ type: 'array', items: { type: 'string' } }, { type: 'null' }] },
  guided_grammar: nullable('string'),
  guided_decoding_backend: nullable('string'),
  guided_whitespace_pattern: nullable('string'),
  priority: nullable('integer'),
  request_id: nullable('string', { minLength: 1, maxLength: 256 }),
  logits_processors: nullable('array'),
  logprob_token_ids: { anyOf: [tokenIds, { type: 'null' }] },
  repetition_detection: nullable('object'),
  thinking_token_budget: nullable('integer'),
  cache_salt: nullable('string', { minLength: 1 }),
  kv_transfer_params: nullable('object'),
  ec_transfer_params: nullable('object'),
  vllm_xargs: nullable('object'),
  return_token_ids: nullable('boolean'),
  return_token_offsets: nullable('boolean'),
};

/** Checked in detail by src/guided/request-spec.ts (json_schema's schema is checked when compiled). */
const responseFormat = {
  anyOf: [{ type: 'object', required: ['type'], properties: { type: { type: 'string' }, json_schema: { type: 'object' } } }, { type: 'null' }],
};

export const completionBodySchema = {
  type: 'object',
  required: ['prompt'],
  properties: {
    ...common,
    prompt: {
      anyOf: [
        { type: 'string' },
        { type: 'array', items: { type: 'string' }, minItems: 1 },
        { ...tokenIds, minItems: 1 },
        { type: 'array', items: { ...tokenIds, minItems: 1 }, minItems: 1 },
      ],
    },
    max_tokens: nullable('integer', { minimum: 0 }),
    logprobs: nullable('integer', { minimum: 0, maximum: 20 }),
    echo: nullable('boolean'),
    suffix: nullable('string'),
    response_format: responseFormat,
    prompt_embeds: {},
  },
} as const;

const contentPart = {
  type: 'object',
  required: ['type'],
  properties: { type: { type: 'string' }, text: { type: 'string' } },
};

export const chatBodySchema = {
  type: 'object',
  required: ['messages'],
  properties: {
    ...common,
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['role'],
        properties: {
          role: { type: 'string' },
          content: { anyOf: [{ type: 'string' }, { type: 'array', items: contentPart }, { type: 'null' }] },
          name: nullable('string'),
          tool_calls: { anyOf: [{ type: 'array', items: { type: 'object' } }, { type: 'null' }] },
          tool_call_id: nullable('string'),
          reasoning_content: nullable('string'),
        },
      },
    },
    max_tokens: nullable('integer', { minimum: 1 }),
    max_completion_tokens: nullable('integer', { minimum: 1 }),
    logprobs: nullable('boolean'),
    top_logprobs: nullable('integer', { minimum: 0, maximum: 20 }),
    tools: { anyOf: [{ type: 'array', items: { type: 'object' } }, { type: 'null' }] },
    tool_choice: { anyOf: [{ type: 'string' }, { type: 'object' }, { type: 'null' }] },
    parallel_tool_calls: nullable('boolean'),
    response_format: responseFormat,
    chat_template_kwargs: nullable('object'),
    add_generation_prompt: nullable('boolean'),
    continue_final_message: nullable('boolean'),
    echo: nullable('boolean'),
    documents: { anyOf: [{ type: 'array', items: { type: 'object' } }, { type: 'null' }] },
    chat_template: nullable('string'),
    reasoning_effort: { anyOf: [{ enum: ['none', 'minimal', 'low', 'medium', 'high', 'xhigh'] }, { type: 'null' }] },
    include_reasoning: nullable('boolean'),
    mm_processor_kwargs: nullable('object'),
    structural_tag: nullable('string'),
    functions: { anyOf: [{ type: 'array', items: { type: 'object' } }, { type: 'null' }] },
    function_call: { anyOf: [{ type: 'string' }, { type: 'object' }, { type: 'null' }] },
    max_repetition_pattern_size: nullable('integer'),
    min_repetition_pattern_size: nullable('integer'),
    repetition_min_count: nullable('integer'),
    metadata: nullable('object'),
    store: nullable('boolean'),
    service_tier: nullable('string'),
    prompt_cache_key: nullable('string'),
    safety_identifier: nullable('string'),
    prediction: nullable('object'),
    modalities: { anyOf: [{ type: 'array', items: { type: 'string' } }, { type: 'null' }] },
    audio: nullable('object'),
    web_search_options: nullable('object'),
    verbosity: nullable('string'),
  },
} as const;

// Request body types as the handlers read them (after validation).
export interface ResponseFormatBody {
  type: string;
  json_schema?: { name?: string; schema?: unknown; strict?: boolean | null; [key: string]: unknown };
}

export interface CommonBody {
  model?: string | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  stop_token_ids?: number[] | null;
  n?: number | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean | null; continuous_usage_stats?: boolean | null } | null;
  ignore_eos?: boolean | null;
  skip_special_tokens?: boolean | null;
  include_stop_str_in_output?: boolean | null;
  return_tokens_as_token_ids?: boolean | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  repetition_penalty?: number | null;
  logit_bias?: Record<string, unknown> | null;
  min_p?: number | null;
  min_tokens?: number | null;
  user?: string | null;
  best_of?: number | null;
  truncate_prompt_tokens?: number | null;
  truncation_side?: 'left' | 'right' | null;
  allowed_token_ids?: number[] | null;
  bad_words?: string[] | null;
  prompt_logprobs?: number | null;
  add_special_tokens?: boolean | null;
  request_id?: string | null;
  return_token_ids?: boolean | null;
  cache_salt?: string | null;
  /** The rest of request-fields.ts (guided_*, structured_outputs, the refused and ignored ones), read by name. */
  [field: string]: unknown;
}

export interface CompletionBody extends CommonBody {
  prompt: string | string[] | number[] | number[][];
  max_tokens?: number | null;
  logprobs?: number | null;
  echo?: boolean | null;
  suffix?: string | null;
  response_format?: ResponseFormatBody | null;
}

export interface ChatMessageBody {
  role: string;
  content?: string | { type: string; text?: string }[] | null;
  [key: string]: unknown;
}

export interface ChatBody extends CommonBody {
  messages: ChatMessageBody[];
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  logprobs?: boolean | null;
  top_logprobs?: number | null;
  tools?: Record<string, unknown>[] | null;
  tool_choice?: string | Record<string, unknown> | null;
  parallel_tool_calls?: boolean | null;
  response_format?: ResponseFormatBody | null;
  chat_template_kwargs?: Record<string, unknown> | null;
  add_generation_prompt?: boolean | null;
  continue_final_message?: boolean | null;
  echo?: boolean | null;
  documents?: Record<string, unknown>[] | null;
  chat_template?: string | null;
  reasoning_effort?: string | null;
  include_reasoning?: boolean | null;
  functions?: Record<string, unknown>[] | null;
  function_call?: string | Record<string, unknown> | null;
}
