// One chat choice's parsed output (reasoning, content, tool calls) as OpenAI shapes: the final
// `message` and the stream's `delta`s. Both come from the same pieces, so the concatenated stream
// equals the non-streamed message.
import { randomUUID } from 'node:crypto';
import type { FinishReason } from '../engine/types.ts';
import type { OutputPiece } from '../chat/output-parser.ts';

export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

/** vLLM's tool call id format. */
export const toolCallId = () => `chatcmpl-tool-${randomUUID().replace(/-/g, '')}`;

export type ChatDelta = Record<string, unknown>;

export interface ChoiceMessageOptions {
  /** Report the reasoning, as reasoning_content and as vLLM's newer name, reasoning (the reasoning parser is on). */
  reasoning: boolean;
  /** parallel_tool_calls: false keeps the first call only. */
  maxToolCalls: number;
}

export class ChoiceMessage {
  private reasoning = '';
  private content = '';
  private readonly toolCalls: ToolCall[] = [];

  constructor(private readonly options: ChoiceMessageOptions) {}

  /**
   * Records pieces; returns the stream deltas they make, in order. A call takes two: the first with
   * index, id, type and name (arguments ""), the second with the whole arguments (calls are only
   * emitted complete, see tool-parser.ts).
   */
  add(pieces: readonly OutputPiece[]): ChatDelta[] {
    const deltas: ChatDelta[] = [];
    for (const piece of pieces) {
      if (piece.kind === 'reasoning') {
        this.reasoning += piece.text;
        deltas.push({ reasoning_content: piece.text, reasoning: piece.text });
      } else if (piece.kind === 'content') {
        this.content += piece.text;
        deltas.push({ content: piece.text });
      } else if (this.toolCalls.length < this.options.maxToolCalls) {
        const index = this.toolCalls.length;
        const call: ToolCall = { id: toolCallId(), type: 'function', function: { name: piece.call.name, arguments: piece.call.arguments } };
        this.toolCalls.push(call);
        deltas.push({ tool_calls: [{ index, id: call.id, type: 'function', function: { name: call.function.name, arguments: '' } }] });
        deltas.push({ tool_calls: [{ index, function: { arguments: call.function.arguments } }] });
      }
    }
    return deltas;
  }

  /** 'tool_calls' when the reply ended on its own after at least one call; a cut-off reply stays 'length'. */
  finishReason(reason: FinishReason | undefined): string | null {
    if (reason === undefined) return null;
    return reason === 'stop' && this.toolCalls.length > 0 ? 'tool_calls' : reason;
  }

  /** The whole message; content is null when empty beside reasoning or tool calls (as OpenAI and vLLM). */
  message(): Record<string, unknown> {
    const empty = this.content === '' && (this.toolCalls.length > 0 || this.reasoning !== '');
    const message: Record<string, unknown> = { role: 'assistant', content: empty ? null : this.content };
    if (this.options.reasoning) message.reasoning_content = message.reasoning = this.reasoning === '' ? null : this.reasoning;
    if (this.toolCalls.length > 0) message.tool_calls = this.toolCalls;
    return message;
  }
}
