// The tool-related parts of a chat request: `tools` and `tool_choice` checked with OpenAI-shaped 400s
// naming the parameter, and OpenAI messages turned into what chat templates expect.
import type { ChatMessage } from '../chat/template.ts';
import { badRequest } from './errors.ts';
import type { ChatBody, ChatMessageBody } from './schemas.ts';

/**
 * What the request asks of tool calling:
 * - none: the tools are rendered (the model keeps seeing them, as with OpenAI and vLLM) but the
 *   reply is not parsed for calls: any <tool_call> text stays content.
 * - auto: calls are parsed out of the reply (vLLM's --enable-auto-tool-choice).
 * - required / named: the reply must call a tool (the named one); constrained by guided decoding.
 */
export type ToolChoice = { mode: 'none' } | { mode: 'auto' } | { mode: 'required' } | { mode: 'named'; name: string };

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** The request's tools, checked; undefined when none are given (an empty list counts as none). */
export function checkTools(body: ChatBody): Record<string, unknown>[] | undefined {
  const tools = body.tools;
  if (tools === undefined || tools === null || tools.length === 0) return undefined;
  tools.forEach((tool, i) => {
    const at = `tools[${i}]`;
    if (tool.type !== 'function') throw badRequest(`'${at}.type' must be 'function' (got ${JSON.stringify(tool.type ?? null)})`, `${at}.type`);
    const fn = tool.function;
    if (!isObject(fn)) throw badRequest(`'${at}.function' is a required object`, `${at}.function`);
    // Names are not held to OpenAI's [a-zA-Z0-9_-]{1,64}: vLLM accepts any, and clients rely on it.
    if (typeof fn.name !== 'string' || fn.name === '') {
      throw badRequest(`'${at}.function.name' is required: a non-empty string (got ${JSON.stringify(fn.name ?? null)})`, `${at}.function.name`);
    }
    if (fn.description !== undefined && fn.description !== null && typeof fn.description !== 'string') {
      throw badRequest(`'${at}.function.description' must be a string`, `${at}.function.description`);
    }
    if (fn.parameters !== undefined && fn.parameters !== null && !isObject(fn.parameters)) {
      throw badRequest(`'${at}.function.parameters' must be a JSON Schema object`, `${at}.function.parameters`);
    }
    if (fn.strict !== undefined && fn.strict !== null && typeof fn.strict !== 'boolean') {
      throw badRequest(`'${at}.function.strict' must be a boolean`, `${at}.function.strict`);
    }
  });
  return tools;
}

/** tool_choice as OpenAI defines it: 'auto' by default when tools are given, else 'none'. */
export function resolveToolChoice(body: ChatBody, tools: Record<string, unknown>[] | undefined): ToolChoice {
  const choice = body.tool_choice;
  if (choice === undefined || choice === null) return tools ? { mode: 'auto' } : { mode: 'none' };
  if (choice === 'none') return { mode: 'none' };
  if (choice === 'auto') return tools ? { mode: 'auto' } : { mode: 'none' };
  if (choice === 'required') {
    if (!tools) throw badRequest("tool_choice 'required' needs 'tools' (without tools, use 'none' or 'auto')", 'tool_choice');
    return { mode: 'required' };
  }
  if (typeof choice === 'string') {
    throw badRequest(`'tool_choice' must be 'none', 'auto', 'required' or {"type": "function", "function": {"name": ...}} (got '${choice}')`, 'tool_choice');
  }
  const fn = choice.function;
  if (choice.type !== 'function' || !isObject(fn) || typeof fn.name !== 'string') {
    throw badRequest(`'tool_choice' must be 'none', 'auto', 'required' or {"type": "function", "function": {"name": ...}}`, 'tool_choice');
  }
  if (!tools?.some((t) => (t.function as Record<string, unknown>).name === fn.name)) {
    throw badRequest(`tool_choice names function '${fn.name}', which is not in 'tools'`, 'tool_choice.function.name');
  }
  return { mode: 'named', name: fn.name };
}

/**
 * OpenAI's legacy `functions` and `function_call`, as the tools they describe: functions → tools,
 * function_call ('none', 'auto' or {name}) → tool_choice, and one call at most (the legacy reply holds
 * one message.function_call). The fields to use instead of the body's; null when the request has none.
 */
export function legacyFunctions(body: ChatBody): Pick<ChatBody, 'tools' | 'tool_choice' | 'parallel_tool_calls'> | null {
  const functions = body.functions;
  const call = body.function_call;
  if (functions === undefined || functions === null || functions.length === 0) {
    if (call !== undefined && call !== null && call !== 'none') throw badRequest("'function_call' needs 'functions'", 'function_call');
    return null;
  }
  if (body.tools !== undefined && body.tools !== null && body.tools.length > 0) {
    throw badRequest("'functions' (the legacy form of 'tools') cannot be used together with 'tools'", 'functions');
  }
  if (body.tool_choice !== undefined && body.tool_choice !== null) {
    throw badRequest("'tool_choice' cannot be used with the legacy 'functions'; use 'function_call'", 'tool_choice');
  }
  let toolChoice: ChatBody['tool_choice'];
  if (call === undefined || call === null || call === 'auto' || call === 'none') toolChoice = call ?? 'auto';
  else if (isObject(call) && typeof call.name === 'string') toolChoice = { type: 'function', function: { name: call.name } };
  else throw badRequest(`'function_call' must be 'none', 'auto' or {"name": ...}`, 'function_call');
  return {
    tools: functions.map((fn) => ({ type: 'function', function: fn })),
    tool_choice: toolChoice,
    parallel_tool_calls: false,
  };
}

/** OpenAI content parts → the plain string chat templates expect (text parts joined by newlines, as vLLM does). */
function contentText(message: ChatMessageBody, i: number): string {
  const content = message.content;
  if (content === undefined || content === null) return '';
  if (typeof content === 'string') return content;
  return content
    .map((part, j) => {
      if (part.type !== 'text' || typeof part.text !== 'string') {
        throw badRequest(`messages[${i}].content[${j}]: only text content parts are supported (got type '${part.type}')`, `messages[${i}].content`);
      }
      return part.text;
    })
    .join('\n');
}

/**
 * An assistant message's tool_calls for the template: `function.arguments` (a JSON string in the
 * OpenAI API) parsed to an object, as vLLM does, since templates iterate or re-serialise it.
 */
function templateToolCalls(calls: unknown[], i: number): Record<string, unknown>[] {
  return calls.map((call, j) => {
    const at = `messages[${i}].tool_calls[${j}]`;
    if (!isObject(call) || !isObject(call.function)) throw badRequest(`'${at}.function' is a required object`, `${at}.function`);
    const fn = call.function;
    if (typeof fn.name !== 'string' || fn.name === '') throw badRequest(`'${at}.function.name' must be a non-empty string`, `${at}.function.name`);
    let args: unknown = fn.arguments ?? {};
    if (typeof args === 'string') {
      try {
        args = args.trim() === '' ? {} : JSON.parse(args);
      } catch (err) {
        throw badRequest(`'${at}.function.arguments' is not valid JSON: ${(err as Error).message}`, `${at}.function.arguments`);
      }
    }
    if (!isObject(args)) throw badRequest(`'${at}.function.arguments' must be a JSON object`, `${at}.function.arguments`);
    return { ...call, type: call.type ?? 'function', function: { ...fn, arguments: args } };
  });
}

/** An OpenAI message as the chat template sees it. */
export function toTemplateMessage(message: ChatMessageBody, i: number): ChatMessage {
  const { content: _content, tool_calls: toolCalls, reasoning, reasoning_content: reasoningContent, function_call: functionCall, ...rest } = message;
  const out: ChatMessage = { ...rest, content: contentText(message, i) };
  // OpenAI's legacy function calling: a `function` result is a tool result, an assistant's function_call its one tool call.
  if (out.role === 'function') out.role = 'tool';
  // vLLM's newer name for reasoning_content is accepted on input too.
  const thought = reasoningContent ?? reasoning;
  if (thought !== undefined && thought !== null) {
    if (typeof thought !== 'string') throw badRequest(`'messages[${i}].reasoning_content' must be a string`, `messages[${i}].reasoning_content`);
    out.reasoning_content = thought;
  }
  if (Array.isArray(toolCalls) && toolCalls.length > 0) out.tool_calls = templateToolCalls(toolCalls, i);
  else if (isObject(functionCall)) out.tool_calls = templateToolCalls([{ type: 'function', function: functionCall }], i);
  return out;
}
