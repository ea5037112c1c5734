// A Responses API request (POST /v1/responses) translated into the chat request the chat pipeline
// serves: `instructions` and `input` items → messages (function_call items become the assistant's
// tool_calls, function_call_output items tool messages, reasoning items reasoning_content), function
// tools → chat tools, `text.format` → response_format, `max_output_tokens` → max_completion_tokens.
// What the translation cannot carry is refused here with a 400 naming the Responses parameter; errors
// the chat pipeline raises later name chat parameters, which responsesError() renames.
import { ApiError, badRequest, toErrorReply } from './errors.ts';
import type { ChatBody, ChatMessageBody, ResponseFormatBody } from './schemas.ts';
import type { ResponsesBody, ResponsesInputItem } from './responses-schema.ts';

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const given = (v: unknown) => v !== undefined && v !== null;
const json = (v: unknown) => JSON.stringify(v ?? null)?.slice(0, 60);

/** The `include` values: only output logprobs change what comes back; the others name items this server never produces. */
export const INCLUDE_LOGPROBS = 'message.output_text.logprobs';

export interface ResponsesPlan {
  /** The request as the chat pipeline takes it. */
  chat: ChatBody;
  /** Logprobs for the output text: the number of alternatives per token; null: none. */
  topLogprobs: number | null;
  /** Most function calls the reply may make (parallel_tool_calls false: 1; max_tool_calls). */
  maxToolCalls: number;
}

/** Text of content parts: input_text / output_text (and plain text) joined by newlines, as vLLM joins chat parts. */
function partsText(content: unknown, at: string, allowed: readonly string[]): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw badRequest(`'${at}' must be a string or a list of content parts`, at);
  return content
    .map((part, j) => {
      const where = `${at}[${j}]`;
      if (!isObject(part)) throw badRequest(`'${where}' must be a content part object`, where);
      if (typeof part.type !== 'string' || !allowed.includes(part.type)) {
        throw badRequest(`'${where}.type': only text parts (${allowed.join(', ')}) are supported here (got ${json(part.type)})`, `${where}.type`);
      }
      if (typeof part.text !== 'string') throw badRequest(`'${where}.text' must be a string`, `${where}.text`);
      return part.text;
    })
    .join('\n');
}

const MESSAGE_ROLES = ['user', 'system', 'developer', 'assistant'];

/** The text of a reasoning item: its reasoning_text content, else its summary. */
function reasoningText(item: ResponsesInputItem, at: string): string {
  const pick = (list: unknown, key: string, type: string): string | null => {
    if (!given(list)) return null;
    if (!Array.isArray(list)) throw badRequest(`'${at}.${key}' must be a list`, `${at}.${key}`);
    const texts = list.map((part, j) => {
      if (!isObject(part) || typeof part.text !== 'string') throw badRequest(`'${at}.${key}[${j}]' must be {type: '${type}', text}`, `${at}.${key}[${j}]`);
      return part.text;
    });
    return texts.length > 0 ? texts.join('\n') : null;
  };
  return pick(item.content, 'content', 'reasoning_text') ?? pick(item.summary, 'summary', 'summary_text') ?? '';
}

/** Messages from `instructions` and `input`, in order. */
export function inputMessages(body: ResponsesBody): ChatMessageBody[] {
  const messages: ChatMessageBody[] = [];
  if (given(body.instructions) && body.instructions !== '') messages.push({ role: 'system', content: body.instructions });
  if (typeof body.input === 'string') {
    messages.push({ role: 'user', content: body.input });
    return messages;
  }
  // A reasoning item belongs to the assistant turn that follows it.
  let pendingReasoning: string | null = null;
  // The assistant message function_call items join: the last message, while nothing else came after it.
  let openAssistant: ChatMessageBody | null = null;
  const assistant = (content: string): ChatMessageBody => {
    const message: ChatMessageBody = { role: 'assistant', content };
    if (pendingReasoning !== null) message.reasoning_content = pendingReasoning;
    pendingReasoning = null;
    messages.push(message);
    return message;
  };
  body.input.forEach((item, i) => {
    const at = `input[${i}]`;
    if (!isObject(item)) throw badRequest(`'${at}' must be an object`, at);
    const type = item.type ?? 'message';
    if (type === 'message') {
      const role = item.role;
      if (typeof role !== 'string' || !MESSAGE_ROLES.includes(role)) {
        throw badRequest(`'${at}.role' must be one of ${MESSAGE_ROLES.map((r) => `'${r}'`).join(', ')} (got ${json(role)})`, `${at}.role`);
      }
      if (role === 'assistant') {
        openAssistant = assistant(partsText(item.content, `${at}.content`, ['output_text', 'input_text', 'text']));
        return;
      }
      // developer is OpenAI's newer name for system.
      messages.push({ role: role === 'developer' ? 'system' : role, content: partsText(item.content, `${at}.content`, ['input_text', 'text']) });
    } else if (type === 'function_call') {
      for (const key of ['call_id', 'name'] as const) {
        if (typeof item[key] !== 'string' || item[key] === '') throw badRequest(`'${at}.${key}' must be a non-empty string`, `${at}.${key}`);
      }
      const args = item.arguments ?? '';
      if (typeof args !== 'string') throw badRequest(`'${at}.arguments' must be a JSON string`, `${at}.arguments`);
      let parsed: unknown = {};
      try {
        if (args.trim() !== '') parsed = JSON.parse(args);
      } catch (err) {
        throw badRequest(`'${at}.arguments' is not valid JSON: ${(err as Error).message}`, `${at}.arguments`);
      }
      if (!isObject(parsed)) throw badRequest(`'${at}.arguments' must be a JSON object`, `${at}.arguments`);
      const target: ChatMessageBody = openAssistant ?? assistant('');
      openAssistant = target;
      const calls = (target.tool_calls as unknown[] | undefined) ?? [];
      calls.push({ id: item.call_id, type: 'function', function: { name: item.name, arguments: args } });
      target.tool_calls = calls;
      return;
    } else if (type === 'function_call_output') {
      if (typeof item.call_id !== 'string' || item.call_id === '') throw badRequest(`'${at}.call_id' must be a non-empty string`, `${at}.call_id`);
      messages.push({ role: 'tool', tool_call_id: item.call_id, content: partsText(item.output, `${at}.output`, ['input_text', 'output_text', 'text']) });
    } else if (type === 'reasoning') {
      const text = reasoningText(item, at);
      pendingReasoning = pendingReasoning === null ? text : `${pendingReasoning}\n${text}`;
    } else if (type === 'item_reference') {
      throw badRequest(
        `'${at}': item_reference needs stored responses, and this server's response store is off (--response-store-size 0); send the items ` +
          'themselves (the AI SDK does with providerOptions: { openai: { store: false } })',
        `${at}.type`,
      );
    } else {
      throw badRequest(`'${at}.type' ${json(type)} is not supported; use 'message', 'function_call', 'function_call_output' or 'reasoning'`, `${at}.type`);
    }
    openAssistant = null;
  });
  if (messages.length === 0) throw badRequest("'input' has no messages", 'input');
  return messages;
}

/** Function tools in chat form; any other tool type is a 400 naming it. */
function chatTools(tools: ResponsesBody['tools']): Record<string, unknown>[] | undefined {
  if (!given(tools) || tools!.length === 0) return undefined;
  return tools!.map((tool, i) => {
    const at = `tools[${i}]`;
    if (tool.type !== 'function') {
      throw badRequest(`'${at}.type' ${json(tool.type)} is not supported: this server runs function tools only (type 'function')`, `${at}.type`);
    }
    if (typeof tool.name !== 'string' || tool.name === '') throw badRequest(`'${at}.name' is required: a non-empty string`, `${at}.name`);
    const fn: Record<string, unknown> = { name: tool.name };
    for (const key of ['description', 'parameters', 'strict'] as const) if (given(tool[key])) fn[key] = tool[key];
    return { type: 'function', function: fn };
  });
}

const TOOL_CHOICE = `'tool_choice' must be 'none', 'auto', 'required' or {"type": "function", "name": ...}`;

function chatToolChoice(choice: ResponsesBody['tool_choice']): ChatBody['tool_choice'] {
  if (!given(choice)) return choice;
  if (typeof choice === 'string') {
    if (['none', 'auto', 'required'].includes(choice)) return choice;
    throw badRequest(`${TOOL_CHOICE} (got ${json(choice)})`, 'tool_choice');
  }
  const c = choice as Record<string, unknown>;
  if (c.type === 'function' && typeof c.name === 'string') return { type: 'function', function: { name: c.name } };
  throw badRequest(`${TOOL_CHOICE} (got type ${json(c.type)}: only function tools are served)`, 'tool_choice');
}

function responseFormat(text: ResponsesBody['text']): ResponseFormatBody | null {
  if (!given(text)) return null;
  const format = text!.format;
  if (!given(format)) return null;
  if (!isObject(format)) throw badRequest("'text.format' must be an object", 'text.format');
  if (format.type === 'json_schema') {
    const { type: _type, ...jsonSchema } = format;
    return { type: 'json_schema', json_schema: jsonSchema };
  }
  if (format.type === 'text' || format.type === 'json_object') return { type: format.type };
  throw badRequest(`'text.format.type' must be 'text', 'json_schema' or 'json_object' (got ${json(format.type)})`, 'text.format.type');
}

/** Fields that would need stored state or features this server does not have: a 400 each, by name. */
function refuseUnsupported(body: ResponsesBody): void {
  if (given(body.previous_response_id)) {
    throw badRequest(
      "'previous_response_id' needs stored responses, and this server's response store is off (--response-store-size 0); send the whole conversation in 'input'",
      'previous_response_id',
    );
  }
  if (given(body.conversation)) {
    throw badRequest("'conversation' is not supported: this server is stateless and keeps no conversations; send the whole conversation in 'input'", 'conversation');
  }
  if (body.background === true) throw badRequest("'background' is not supported: it needs stored responses, and this server stores none", 'background');
  if (given(body.prompt)) throw badRequest("'prompt' (a stored prompt template) is not supported; send 'instructions' and 'input'", 'prompt');
  if (given(body.truncation) && body.truncation !== 'disabled') {
    throw badRequest(`'truncation' ${json(body.truncation)} is not supported; only 'disabled' (an input that does not fit is a 400)`, 'truncation');
  }
}

export function toChatRequest(body: ResponsesBody): ResponsesPlan {
  refuseUnsupported(body);
  const include = body.include ?? [];
  const topLogprobs = include.includes(INCLUDE_LOGPROBS) ? (body.top_logprobs ?? 0) : null;
  const chat: ChatBody = {
    messages: inputMessages(body),
    tools: chatTools(body.tools),
    tool_choice: chatToolChoice(body.tool_choice),
    parallel_tool_calls: body.parallel_tool_calls,
    response_format: responseFormat(body.text),
    max_completion_tokens: body.max_output_tokens,
    logprobs: topLogprobs !== null,
    top_logprobs: topLogprobs,
    chat_template_kwargs: body.chat_template_kwargs,
    temperature: body.temperature,
    top_p: body.top_p,
    top_k: body.top_k,
    min_p: body.min_p,
    seed: body.seed,
    presence_penalty: body.presence_penalty,
    frequency_penalty: body.frequency_penalty,
    repetition_penalty: body.repetition_penalty,
    stop: body.stop,
    stop_token_ids: body.stop_token_ids,
    ignore_eos: body.ignore_eos,
    min_tokens: body.min_tokens,
    logit_bias: body.logit_bias,
    skip_special_tokens: body.skip_special_tokens,
    include_stop_str_in_output: body.include_stop_str_in_output,
  };
  const maxToolCalls = Math.min(body.parallel_tool_calls === false ? 1 : Number.POSITIVE_INFINITY, body.max_tool_calls ?? Number.POSITIVE_INFINITY);
  return { chat, topLogprobs, maxToolCalls };
}

/** Chat parameter names as the Responses API calls them. */
const RENAMES: [RegExp, string][] = [
  [/\bresponse_format\.json_schema\./g, 'text.format.'],
  [/\bresponse_format\b/g, 'text.format'],
  [/\btools\[(\d+)\]\.function\./g, 'tools[$1].'],
  [/\btool_choice\.function\./g, 'tool_choice.'],
  [/\bmax_completion_tokens\b/g, 'max_output_tokens'],
  [/^messages\b.*$/, 'input'],
  [/^prompt$/, 'input'],
];

const rename = (text: string) => RENAMES.reduce((s, [from, to]) => s.replace(from, to), text);

/**
 * An error from the chat pipeline with the Responses API's parameter names (`text.format.schema`
 * rather than `response_format.json_schema.schema`); 5xx and anything that is not a client error as is.
 */
export function responsesError(err: unknown): unknown {
  const { status, body } = toErrorReply(err);
  if (status >= 500) return err;
  const { message, param } = body.error;
  const renamedParam = param === null ? null : rename(param);
  // Messages name chat parameters too; the whole-message renames (messages…, prompt) apply to params only.
  const renamedMessage = RENAMES.slice(0, 5).reduce((s, [from, to]) => s.replace(from, to), message);
  if (renamedParam === param && renamedMessage === message) return err;
  return new ApiError(status, renamedMessage, renamedParam);
}
