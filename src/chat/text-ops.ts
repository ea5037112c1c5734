// What the server asks of the tokenizer and chat template per request, as plain functions over a
// tokenizer and template: run in worker threads (text-worker.ts) or inline (text-service.ts). Ids go
// back as Int32Arrays, which cross threads without copying.
import { RequestError } from '../engine/types.ts';
import { cannotFit } from './fit-bound.ts';
import type { ChatMessage, ChatTemplate, RenderOptions } from './template.ts';
import type { TextTokenizer } from './tokenizer.ts';

export interface EncodeOptions {
  addSpecialTokens: boolean;
  /** A text that certainly has more tokens than this is refused (400) before it is tokenized. */
  maxTokens: number;
  /** The request parameter a refusal names ('prompt', 'messages'). */
  param: string;
}

/**
 * Token ids of several texts in one buffer (text i is ids[ends[i-1] .. ends[i])): two buffers cross a
 * thread boundary in microseconds, where thousands of small ones take a long stall of the event loop.
 */
export interface EncodedTexts {
  ids: Int32Array;
  ends: Int32Array;
}

/** The id lists of an EncodedTexts. */
export function splitEncoded({ ids, ends }: EncodedTexts): number[][] {
  return Array.from(ends, (end, i) => Array.from(ids.subarray(i === 0 ? 0 : ends[i - 1], end)));
}

export interface RenderedChat {
  text: string;
  ids: Int32Array;
}

export class TextOps {
  constructor(
    readonly tokenizer: TextTokenizer,
    readonly template: ChatTemplate | null,
  ) {}

  encode(texts: string[], o: EncodeOptions): EncodedTexts {
    // All refused or none tokenized: the cheap checks first.
    texts.forEach((text, i) => this.checkFits(text, o, texts.length > 1 ? `${o.param}[${i}]` : o.param));
    const lists = texts.map((text) => this.tokenizer.encode(text, { addSpecialTokens: o.addSpecialTokens }));
    const ends = new Int32Array(lists.length);
    let total = 0;
    lists.forEach((ids, i) => (ends[i] = total += ids.length));
    const ids = new Int32Array(total);
    lists.forEach((list, i) => ids.set(list, i === 0 ? 0 : ends[i - 1]));
    return { ids, ends };
  }

  renderChat(messages: ChatMessage[], render: RenderOptions, o: EncodeOptions): RenderedChat {
    if (!this.template) throw new RequestError('This model has no chat template (tokenizer_config.json has no chat_template).', 'messages');
    const text = this.template.render(messages, render);
    this.checkFits(text, o, o.param, 'The rendered conversation');
    return { text, ids: Int32Array.from(this.tokenizer.encode(text, { addSpecialTokens: o.addSpecialTokens })) };
  }

  decode(lists: number[][]): string[] {
    return lists.map((ids) => this.tokenizer.decode(ids));
  }

  /** Each token's text on its own (as logprobs render it). */
  tokenTexts(ids: number[]): string[] {
    return ids.map((id) => this.tokenizer.tokenText(id));
  }

  private checkFits(text: string, o: EncodeOptions, param: string, what = `'${param}'`): void {
    const refusal = cannotFit(text, o.maxTokens, this.tokenizer.lengthBound, what);
    if (refusal !== null) throw new RequestError(refusal, param);
  }
}
