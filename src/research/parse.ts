// Reading the model's replies as the reference agent does: everything comes out of message.content — the
// <think> block, a <tool_call>{json}</tool_call>, an <answer>…</answer> (and, in IterResearch, a <report>).
// Servers that split the reply (a reasoning parser: reasoning_content/reasoning; a tool-call parser:
// message.tool_calls) are put back into that one text first, so both kinds of server work the same.
import { parseToolCallBody } from '../chat/tool-parser.ts';

/** The part of an OpenAI chat completion message the agents read (extra fields as vLLM and moeserve send them). */
export interface ReplyMessage {
  content?: string | null;
  reasoning_content?: string | null;
  reasoning?: string | null;
  tool_calls?: Array<{ type?: string; function?: { name?: string; arguments?: string } }> | null;
}

/**
 * The reply as one text, as a server without parsers returns it: reasoning (when the server split it off)
 * back inside <think>…</think>, structured tool calls back as <tool_call> blocks, and anything from a
 * <tool_response> on dropped (the model may not write the tool's answer itself; the stop strings normally
 * end the reply there already).
 */
export function replyText(message: ReplyMessage): string {
  let content = message.content ?? '';
  const reasoning = message.reasoning_content ?? message.reasoning ?? null;
  if (typeof reasoning === 'string' && reasoning.trim() !== '' && !content.includes('</think>')) {
    content = `<think>\n${reasoning.trim()}\n</think>\n${content.trimStart()}`;
  }
  const calls = (message.tool_calls ?? []).filter((c) => c.function?.name);
  if (calls.length > 0 && !content.includes('<tool_call>')) {
    const blocks = calls.map((c) => {
      let args: unknown = {};
      try {
        args = JSON.parse(c.function!.arguments ?? '{}');
      } catch {
        args = c.function!.arguments ?? '';
      }
      return `<tool_call>\n${JSON.stringify({ name: c.function!.name, arguments: args })}\n</tool_call>`;
    });
    content = `${content.trimEnd()}${content.trim() === '' ? '' : '\n'}${blocks.join('\n')}`;
  }
  const cut = content.indexOf('<tool_response>');
  if (cut >= 0) content = content.slice(0, cut);
  return content.trim();
}

/** The text after the thinking: after the last </think> (a template may have opened <think> in the prompt). */
export function afterThink(text: string): string {
  const end = text.lastIndexOf('</think>');
  return end >= 0 ? text.slice(end + '</think>'.length) : text;
}

/** The thinking: the text before the last </think>, without its <think> marker; '' when there is none. */
export function thinkText(text: string): string {
  const end = text.lastIndexOf('</think>');
  if (end < 0) return '';
  const start = text.indexOf('<think>');
  return text.slice(start >= 0 && start < end ? start + '<think>'.length : 0, end).trim();
}

/** The reply without its thinking (for a reply that is the answer but lacks <answer> tags). */
export function stripThink(text: string): string {
  return afterThink(text).trim();
}

function between(text: string, open: string, close: string, last = false): string | null {
  const start = last ? text.lastIndexOf(open) : text.indexOf(open);
  if (start < 0) return null;
  const end = text.indexOf(close, start + open.length);
  if (end < 0) return null;
  return text.slice(start + open.length, end);
}

/** The first closed <tag>…</tag> after the thinking, else anywhere in the reply (the reference looks anywhere). */
function tagged(text: string, tag: string, last = false): string | null {
  const open = `<${tag}>`;
  const close = `</${tag}>`;
  return between(afterThink(text), open, close, last) ?? between(text, open, close, last);
}

/** The text of <answer>…</answer>, trimmed; null when the reply has none. */
export function extractAnswer(text: string): string | null {
  const answer = tagged(text, 'answer');
  return answer === null ? null : answer.trim();
}

/** IterResearch: the updated report (the last <report> block), or null when the reply has none. */
export function extractReport(text: string): string | null {
  const report = tagged(text, 'report', true);
  return report === null ? null : report.trim();
}

export type ToolCallRead =
  | { ok: true; name: string; arguments: Record<string, unknown>; block: string }
  | { ok: false; error: string; block: string };

/** react_agent.py's reply to a block that does not parse. */
export const INVALID_TOOL_CALL =
  'Error: Tool call is not a valid JSON. Tool call must contain a valid "name" and "arguments" field.';

/**
 * The reply's first tool call (after the thinking if there is one there), or null when it has no complete
 * <tool_call>…</tool_call> block. The reference agent also runs only the first call of a reply.
 */
export function extractToolCall(text: string): ToolCallRead | null {
  const body = tagged(text, 'tool_call');
  if (body === null) return null;
  const block = `<tool_call>${body}</tool_call>`;
  const call = parseToolCallBody(body);
  if (call === null) return { ok: false, error: INVALID_TOOL_CALL, block };
  return { ok: true, name: call.name, arguments: JSON.parse(call.arguments) as Record<string, unknown>, block };
}
