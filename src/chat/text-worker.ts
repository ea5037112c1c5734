// A worker thread's side of text-service.ts: builds the same tokenizer and chat template as the
// main thread, from their sources, and serves TextOps.
import { serveCalls, Transfer, workerInput } from '../worker/rpc.ts';
import { createTokenizer, type TokenizerSource } from './tokenizer.ts';
import { createChatTemplate, type ChatMessage, type RenderOptions } from './template.ts';
import { TextOps, type EncodeOptions } from './text-ops.ts';

export interface TextWorkerInput {
  tokenizer: TokenizerSource;
  /** tokenizer_config.json of the chat template; null: no template. */
  templateConfig: Record<string, unknown> | null;
}

const input = workerInput<TextWorkerInput>();
const { tokenizerJson, tokenizerConfig, extraEosIds } = input.tokenizer;
const json = typeof tokenizerJson === 'string' ? (JSON.parse(tokenizerJson) as Record<string, unknown>) : tokenizerJson;
const ops = new TextOps(
  createTokenizer(json, tokenizerConfig, extraEosIds),
  input.templateConfig === null ? null : createChatTemplate(input.templateConfig),
);

serveCalls({
  ready: () => true,
  // The ids' buffers move to the main thread instead of being copied.
  encode: (texts: string[], o: EncodeOptions) => {
    const encoded = ops.encode(texts, o);
    return new Transfer(encoded, [encoded.ids.buffer as ArrayBuffer, encoded.ends.buffer as ArrayBuffer]);
  },
  renderChat: (messages: ChatMessage[], render: RenderOptions, o: EncodeOptions) => {
    const chat = ops.renderChat(messages, render, o);
    return new Transfer(chat, [chat.ids.buffer as ArrayBuffer]);
  },
  decode: (lists: number[][]) => ops.decode(lists),
  tokenTexts: (ids: number[]) => ops.tokenTexts(ids),
});
