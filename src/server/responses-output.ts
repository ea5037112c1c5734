// A reply as Responses API output items, built from the chat reply parsers' pieces (reasoning,
// content, tool calls) as they stream: a reasoning item, message items and function_call items, in
// the order the model wrote them. The same pieces give the stream's events and the final items, so
// a streamed response always ends as the non-streamed one.
import { randomUUID } from 'node:crypto';
import { ChatOutputParser, type OutputParserOptions, type OutputPiece } from '../chat/output-parser.ts';
import type { ChoiceDelta, ChoiceFinish } from './choice-stream.ts';
import type { ChatLogprob, LogprobRenderer } from './logprobs.ts';

/** OpenAI's id shapes: resp_…, msg_…, rs_…, fc_…, call_…. */
export const responsesId = (prefix: 'resp' | 'msg' | 'rs' | 'fc' | 'call') => `${prefix}_${randomUUID().replace(/-/g, '')}`;

export type ItemStatus = 'in_progress' | 'completed' | 'incomplete';

export interface OutputText {
  type: 'output_text';
  text: string;
  annotations: never[];
  logprobs: ChatLogprob[];
}

export interface MessageItem {
  type: 'message';
  id: string;
  status: ItemStatus;
  role: 'assistant';
  content: OutputText[];
}

export interface ReasoningItem {
  type: 'reasoning';
  id: string;
  summary: never[];
  content: { type: 'reasoning_text'; text: string }[];
  status: ItemStatus;
}

export interface FunctionCallItem {
  type: 'function_call';
  id: string;
  call_id: string;
  name: string;
  arguments: string;
  status: ItemStatus;
}

export type OutputItem = MessageItem | ReasoningItem | FunctionCallItem;

/** A stream event before the writer numbers it. */
export interface ResponseEvent {
  type: string;
  [key: string]: unknown;
}

export interface ResponseOutputOptions {
  parsing: OutputParserOptions;
  /** parallel_tool_calls false: 1; max_tool_calls; calls past it are dropped, as chat drops them. */
  maxToolCalls: number;
  /** include: ['message.output_text.logprobs']: the renderer and the alternatives per token. */
  logprobs: { render: LogprobRenderer; topN: number } | null;
  /** The token that ends reasoning (</think>), for usage's reasoning_tokens; null: none. */
  reasoningEndToken: number | null;
}

const clone = <T>(v: T): T => structuredClone(v);

export class ResponseOutput {
  readonly items: OutputItem[] = [];
  finish?: ChoiceFinish;
  private readonly parser: ChatOutputParser;
  /** The message or reasoning item text is being added to; null between items. */
  private open: MessageItem | ReasoningItem | null = null;
  /** Logprobs of tokens not yet attributed to a piece of output. */
  private pending: ChatLogprob[] = [];
  private calls = 0;
  private tokens = 0;
  private reasoningEnd: number | null = null;

  constructor(private readonly options: ResponseOutputOptions) {
    this.parser = new ChatOutputParser(options.parsing);
  }

  get incomplete(): boolean {
    return this.finish?.reason === 'length';
  }

  /** Tokens spent reasoning: through the </think> that ended it, or all of them when it never ended. */
  get reasoningTokens(): number {
    if (!this.items.some((item) => item.type === 'reasoning')) return 0;
    return this.reasoningEnd ?? this.finish?.completionTokens ?? this.tokens;
  }

  /** Takes one delta of the reply; returns the stream events it makes. */
  push(delta: ChoiceDelta): ResponseEvent[] {
    const events: ResponseEvent[] = [];
    for (const token of delta.tokens) {
      this.tokens++;
      if (this.reasoningEnd === null && token.id === this.options.reasoningEndToken) this.reasoningEnd = this.tokens;
    }
    const lp = this.options.logprobs;
    if (lp && delta.tokens.length > 0) {
      this.pending.push(...lp.render.chat(delta.tokens.map((t) => t.id), delta.tokens.map((t) => t.logprob), lp.topN));
    }
    const pieces = this.parser.push(delta.text);
    if (delta.finish) pieces.push(...this.parser.flush());
    for (const piece of pieces) this.piece(piece, events);
    if (delta.finish) {
      this.finish = delta.finish;
      // A reply with nothing to show still answers with an (empty) message, so output_text is ''.
      if (this.items.length === 0) this.openMessage(events);
      if (this.open?.type === 'message' && this.pending.length > 0) this.open.content[0].logprobs.push(...this.pending);
      this.pending = [];
      this.close(events, this.incomplete ? 'incomplete' : 'completed');
    }
    return events;
  }

  private piece(piece: OutputPiece, events: ResponseEvent[]): void {
    if (piece.kind === 'tool_call') {
      this.pending = [];
      if (this.calls >= this.options.maxToolCalls) return;
      this.calls++;
      this.close(events, 'completed');
      const item: FunctionCallItem = {
        type: 'function_call',
        id: responsesId('fc'),
        call_id: responsesId('call'),
        name: piece.call.name,
        arguments: piece.call.arguments,
        status: 'completed',
      };
      const outputIndex = this.items.length;
      this.items.push(item);
      // Calls are emitted complete (see tool-parser.ts): the arguments come as one delta.
      events.push({ type: 'response.output_item.added', output_index: outputIndex, item: { ...item, arguments: '', status: 'in_progress' } });
      events.push({ type: 'response.function_call_arguments.delta', item_id: item.id, output_index: outputIndex, delta: item.arguments });
      events.push({ type: 'response.function_call_arguments.done', item_id: item.id, output_index: outputIndex, name: item.name, arguments: item.arguments });
      events.push({ type: 'response.output_item.done', output_index: outputIndex, item: clone(item) });
      return;
    }
    if (piece.kind === 'reasoning') {
      this.pending = [];
      if (this.open?.type !== 'reasoning') this.openReasoning(events);
      const item = this.open as ReasoningItem;
      item.content[0].text += piece.text;
      events.push({ type: 'response.reasoning_text.delta', item_id: item.id, output_index: this.items.length - 1, content_index: 0, delta: piece.text });
      return;
    }
    if (this.open?.type !== 'message') this.openMessage(events);
    const item = this.open as MessageItem;
    const part = item.content[0];
    part.text += piece.text;
    const logprobs = this.pending;
    this.pending = [];
    if (this.options.logprobs) part.logprobs.push(...logprobs);
    events.push({ type: 'response.output_text.delta', item_id: item.id, output_index: this.items.length - 1, content_index: 0, delta: piece.text, logprobs });
  }

  private openMessage(events: ResponseEvent[]): void {
    this.close(events, 'completed');
    const item: MessageItem = { type: 'message', id: responsesId('msg'), status: 'in_progress', role: 'assistant', content: [] };
    const part: OutputText = { type: 'output_text', text: '', annotations: [], logprobs: [] };
    this.add(item, events);
    events.push({ type: 'response.content_part.added', item_id: item.id, output_index: this.items.length - 1, content_index: 0, part: clone(part) });
    item.content.push(part);
  }

  private openReasoning(events: ResponseEvent[]): void {
    this.close(events, 'completed');
    const item: ReasoningItem = { type: 'reasoning', id: responsesId('rs'), summary: [], content: [], status: 'in_progress' };
    const part = { type: 'reasoning_text' as const, text: '' };
    this.add(item, events);
    events.push({ type: 'response.content_part.added', item_id: item.id, output_index: this.items.length - 1, content_index: 0, part: clone(part) });
    item.content.push(part);
  }

  private add(item: MessageItem | ReasoningItem, events: ResponseEvent[]): void {
    this.items.push(item);
    this.open = item;
    events.push({ type: 'response.output_item.added', output_index: this.items.length - 1, item: clone(item) });
  }

  /** Ends the open message or reasoning item: its done events, the item with its final status. */
  private close(events: ResponseEvent[], status: ItemStatus): void {
    const item = this.open;
    if (item === null) return;
    this.open = null;
    item.status = status;
    const at = { item_id: item.id, output_index: this.items.length - 1, content_index: 0 };
    if (item.type === 'message') {
      const part = item.content[0];
      events.push({ type: 'response.output_text.done', ...at, text: part.text, logprobs: clone(part.logprobs) });
      events.push({ type: 'response.content_part.done', ...at, part: clone(part) });
    } else {
      const part = item.content[0];
      events.push({ type: 'response.reasoning_text.done', ...at, text: part.text });
      events.push({ type: 'response.content_part.done', ...at, part: clone(part) });
    }
    events.push({ type: 'response.output_item.done', output_index: this.items.length - 1, item: clone(item) });
  }
}
