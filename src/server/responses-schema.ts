// The body of POST /v1/responses: the top-level types, checked by Fastify's ajv (errors.ts words the
// failures). Items, tools, tool_choice and text.format are checked in responses-request.ts, which
// names the exact place (`input[2].call_id`). Unknown fields are accepted and ignored, as vLLM does;
// known ones that would change the output and cannot be honoured are refused there by name.

const nullable = (type: string, extra: Record<string, unknown> = {}) => ({ type: [type, 'null'], ...extra });

export const responsesBodySchema = {
  type: 'object',
  required: ['input'],
  properties: {
    model: nullable('string'),
    input: { anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'object' } }] },
    instructions: nullable('string'),
    tools: { anyOf: [{ type: 'array', items: { type: 'object' } }, { type: 'null' }] },
    tool_choice: { anyOf: [{ type: 'string' }, { type: 'object' }, { type: 'null' }] },
    parallel_tool_calls: nullable('boolean'),
    max_tool_calls: nullable('integer', { minimum: 1 }),
    text: nullable('object'),
    max_output_tokens: nullable('integer', { minimum: 1 }),
    stream: nullable('boolean'),
    stream_options: nullable('object'),
    store: nullable('boolean'),
    background: nullable('boolean'),
    previous_response_id: nullable('string'),
    include: { anyOf: [{ type: 'array', items: { type: 'string' } }, { type: 'null' }] },
    top_logprobs: nullable('integer', { minimum: 0, maximum: 20 }),
    truncation: nullable('string'),
    reasoning: nullable('object'),
    metadata: nullable('object'),
    user: nullable('string'),
    // Sampling: OpenAI's, and the vLLM extras the chat route takes (same ranges).
    temperature: nullable('number', { minimum: 0 }),
    top_p: nullable('number', { exclusiveMinimum: 0, maximum: 1 }),
    top_k: nullable('integer', { minimum: -1 }),
    min_p: nullable('number', { minimum: 0, maximum: 1 }),
    seed: nullable('integer', { minimum: -9007199254740991, maximum: 9007199254740991 }),
    presence_penalty: nullable('number', { minimum: -2, maximum: 2 }),
    frequency_penalty: nullable('number', { minimum: -2, maximum: 2 }),
    repetition_penalty: nullable('number', { exclusiveMinimum: 0 }),
    stop: { anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }, { type: 'null' }] },
    stop_token_ids: { anyOf: [{ type: 'array', items: { type: 'integer' } }, { type: 'null' }] },
    ignore_eos: nullable('boolean'),
    min_tokens: nullable('integer', { minimum: 0 }),
    logit_bias: nullable('object'),
    skip_special_tokens: nullable('boolean'),
    include_stop_str_in_output: nullable('boolean'),
    chat_template_kwargs: nullable('object'),
  },
} as const;

export type ResponsesInputItem = Record<string, unknown>;

/** The body as the handler reads it (after validation). */
export interface ResponsesBody {
  model?: string | null;
  input: string | ResponsesInputItem[];
  instructions?: string | null;
  tools?: Record<string, unknown>[] | null;
  tool_choice?: string | Record<string, unknown> | null;
  parallel_tool_calls?: boolean | null;
  max_tool_calls?: number | null;
  text?: Record<string, unknown> | null;
  max_output_tokens?: number | null;
  stream?: boolean | null;
  stream_options?: Record<string, unknown> | null;
  store?: boolean | null;
  background?: boolean | null;
  previous_response_id?: string | null;
  include?: string[] | null;
  top_logprobs?: number | null;
  truncation?: string | null;
  reasoning?: Record<string, unknown> | null;
  metadata?: Record<string, unknown> | null;
  user?: string | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  min_p?: number | null;
  seed?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  repetition_penalty?: number | null;
  stop?: string | string[] | null;
  stop_token_ids?: number[] | null;
  ignore_eos?: boolean | null;
  min_tokens?: number | null;
  logit_bias?: Record<string, unknown> | null;
  skip_special_tokens?: boolean | null;
  include_stop_str_in_output?: boolean | null;
  chat_template_kwargs?: Record<string, unknown> | null;
  [key: string]: unknown;
}
