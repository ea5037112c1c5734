// A chat reply's text deltas → ordered pieces: reasoning, content and tool calls. Reasoning is split
// off first, so a <tool_call> written while thinking is reasoning text, never a call.
import { ReasoningParser } from './reasoning-parser.ts';
import { ToolCallParser, type ParsedToolCall } from './tool-parser.ts';

export type OutputPiece =
  | { kind: 'reasoning'; text: string }
  | { kind: 'content'; text: string }
  | { kind: 'tool_call'; call: ParsedToolCall };

export interface OutputParserOptions {
  /** Split <think>…</think> off as reasoning (vLLM's --reasoning-parser qwen3). */
  reasoning: boolean;
  /** The prompt left the reply inside an open <think> (see promptOpensReasoning). */
  startInReasoning: boolean;
  /** Parse <tool_call> blocks into calls (vLLM's --tool-call-parser hermes, with tool_choice auto). */
  toolCalls: boolean;
}

export class ChatOutputParser {
  private readonly reasoning: ReasoningParser | null;
  private readonly tools: ToolCallParser | null;

  constructor(options: OutputParserOptions) {
    this.reasoning = options.reasoning ? new ReasoningParser(options.startInReasoning) : null;
    this.tools = options.toolCalls ? new ToolCallParser() : null;
  }

  push(text: string): OutputPiece[] {
    return this.step(text, false);
  }

  /** At the end of the reply: everything still held back. */
  flush(): OutputPiece[] {
    return this.step('', true);
  }

  private step(text: string, final: boolean): OutputPiece[] {
    const pieces: OutputPiece[] = [];
    const add = (piece: OutputPiece) => {
      const last = pieces.at(-1);
      if (piece.kind !== 'tool_call' && last?.kind === piece.kind) last.text += piece.text;
      else if (piece.kind === 'tool_call' || piece.text !== '') pieces.push(piece);
    };
    let content = text;
    if (this.reasoning) {
      const split = final ? this.reasoning.flush() : this.reasoning.push(text);
      add({ kind: 'reasoning', text: split.reasoning });
      content = split.content;
    }
    if (this.tools) {
      const events = final ? [...this.tools.push(content), ...this.tools.flush()] : this.tools.push(content);
      for (const e of events) add(e.type === 'content' ? { kind: 'content', text: e.text } : { kind: 'tool_call', call: e.call });
    } else {
      add({ kind: 'content', text: content });
    }
    return pieces;
  }
}

/** A whole reply, parsed at once (the same result as streaming it in any pieces). */
export function parseChatOutput(text: string, options: OutputParserOptions): { reasoning: string | null; content: string; calls: ParsedToolCall[] } {
  const parser = new ChatOutputParser(options);
  const pieces = [...parser.push(text), ...parser.flush()];
  let reasoning = '';
  let content = '';
  const calls: ParsedToolCall[] = [];
  for (const p of pieces) {
    if (p.kind === 'reasoning') reasoning += p.text;
    else if (p.kind === 'content') content += p.text;
    else calls.push(p.call);
  }
  return { reasoning: reasoning === '' ? null : reasoning, content, calls };
}
