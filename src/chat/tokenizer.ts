// The model directory's tokenizer (tokenizer.json + tokenizer_config.json) through @huggingface/tokenizers,
// plus the end-of-sequence ids the server passes to the engine as stop tokens.
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';

export interface DecodeOptions {
  /** Drop tokens marked special (<|im_end|>, <|endoftext|>, ...); <think> and <tool_call> are not special. */
  skipSpecialTokens?: boolean;
}

export interface TextTokenizer {
  /** Token ids of `text`; special-token strings in the text (e.g. "<|im_start|>") map to their ids. */
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  /** Text of `ids`; unknown ids decode to nothing, an empty list to "". */
  decode(ids: readonly number[], options?: DecodeOptions): string;
  /** One token on its own, as logprobs render it (a partial UTF-8 character becomes U+FFFD). */
  tokenText(id: number): string;
  /** One past the largest id the tokenizer knows (base vocabulary and added tokens). */
  readonly size: number;
  /** Added tokens by content ("<|im_end|>" → 151645), special or not. */
  readonly addedTokens: ReadonlyMap<string, number>;
  /** Ids that end generation: generation_config.json, config.json and the tokenizer's eos_token, merged. */
  readonly eosTokenIds: readonly number[];
  /** Raw tokenizer_config.json (chat_template, bos/eos tokens, ...). */
  readonly config: Readonly<Record<string, unknown>>;
}

function readJson(file: string, required: boolean): Record<string, unknown> | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`${file}: cannot read (${(err as Error).message})`);
  }
  try {
    const value: unknown = JSON.parse(text);
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('not a JSON object');
    return value as Record<string, unknown>;
  } catch (err) {
    throw new Error(`${file}: invalid JSON (${(err as Error).message})`);
  }
}

function idList(value: unknown): number[] {
  if (Number.isInteger(value)) return [value as number];
  if (Array.isArray(value)) return value.filter((v): v is number => Number.isInteger(v));
  return [];
}

/** A token string as tokenizer_config.json spells it: a plain string or an AddedToken object. */
function tokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

export function createTokenizer(
  tokenizerJson: Record<string, unknown>,
  tokenizerConfig: Record<string, unknown>,
  extraEosIds: readonly number[] = [],
): TextTokenizer {
  const tok = new Tokenizer(tokenizerJson, tokenizerConfig);
  const addedTokens = new Map<string, number>();
  for (const [id, added] of tok.get_added_tokens_decoder()) addedTokens.set(added.content, id);
  let size = 0;
  for (const id of tok.get_vocab(true).values()) size = Math.max(size, id + 1);

  const eos = new Set<number>(extraEosIds);
  const eosContent = tokenContent(tokenizerConfig.eos_token);
  const eosId = eosContent === undefined ? undefined : tok.token_to_id(eosContent);
  if (eosId !== undefined) eos.add(eosId);

  const textCache = new Map<number, string>();
  const decode = (ids: readonly number[], options: DecodeOptions = {}): string => {
    const known = ids.filter((id) => Number.isInteger(id) && id >= 0 && id < size);
    if (known.length === 0) return '';
    return tok.decode(known, { skip_special_tokens: options.skipSpecialTokens ?? false });
  };

  return {
    encode: (text, options = {}) =>
      tok.encode(text, { add_special_tokens: options.addSpecialTokens ?? false }).ids,
    decode,
    tokenText(id) {
      let text = textCache.get(id);
      if (text === undefined) {
        text = decode([id]);
        if (textCache.size < 1 << 16) textCache.set(id, text);
      }
      return text;
    },
    size,
    addedTokens,
    eosTokenIds: [...eos].sort((a, b) => a - b),
    config: tokenizerConfig,
  };
}

/** Loads MODEL_DIR/tokenizer.json and tokenizer_config.json; eos ids also from generation_config.json / config.json. */
export function loadTokenizer(modelDir: string): TextTokenizer {
  const tokenizerJson = readJson(path.join(modelDir, 'tokenizer.json'), true)!;
  const tokenizerConfig = readJson(path.join(modelDir, 'tokenizer_config.json'), false) ?? {};
  const generationConfig = readJson(path.join(modelDir, 'generation_config.json'), false);
  const modelConfig = readJson(path.join(modelDir, 'config.json'), false);
  const eos = [...idList(generationConfig?.eos_token_id), ...idList(modelConfig?.eos_token_id)];
  try {
    return createTokenizer(tokenizerJson, tokenizerConfig, eos);
  } catch (err) {
    throw new Error(`${path.join(modelDir, 'tokenizer.json')}: cannot build the tokenizer (${(err as Error).message})`);
  }
}
