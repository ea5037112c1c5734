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
  /** How much text a token can stand for: a text too long for N tokens is refused without tokenizing it (fit-bound.ts). */
  readonly lengthBound: LengthBound;
  /** What the tokenizer was built from, so that worker threads can build the same one. */
  readonly source: TokenizerSource;
}

export interface TokenizerSource {
  /** tokenizer.json: its text as read from disk (cheap to send to a thread) or the parsed object. */
  tokenizerJson: string | Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  extraEosIds: readonly number[];
}

export type NormalForm = 'NFC' | 'NFD' | 'NFKC' | 'NFKD';

export interface LengthBound {
  /** The longest token, in bytes of normalized text. */
  tokenBytes: number;
  /** How many bytes of non-ASCII input the normalizer can turn into one byte (1: none or NFD; Infinity: unknown). */
  shrink: number;
  /** The normalizer, when it is exactly one Unicode normalization (String.prototype.normalize does the same). */
  form: NormalForm | null;
  /**
   * No token's text holds two runs of non-whitespace characters (as JS's \s tells whitespace): a text
   * then has at least as many tokens as it has such runs ("words"). Checked over the vocabulary.
   */
  wordsBoundTokens: boolean;
}

const FORMS: readonly string[] = ['NFC', 'NFD', 'NFKC', 'NFKD'];

/**
 * How many bytes of text a normalizer can turn into one byte: canonical singletons shrink by 2 under
 * all four forms (U+037E, 2 bytes, becomes ';'), NFC/NFKC compose by up to 3 (Hangul L+V+T jamo, 9
 * bytes, become one 3-byte syllable), NFKC/NFKD fold by up to 4 (U+1D400, 4 bytes, becomes 'A'); pure
 * ASCII is left alone by all four. Others (Replace, Strip, ...) can shrink text without a bound the
 * server can know.
 */
function normalizerShrink(normalizer: unknown): number {
  if (normalizer === null || normalizer === undefined) return 1;
  const type = (normalizer as { type?: unknown }).type;
  if (type === 'NFD') return 2;
  if (type === 'NFC') return 3;
  if (type === 'NFKC' || type === 'NFKD') return 4;
  if (type === 'Sequence') {
    const parts = (normalizer as { normalizers?: unknown }).normalizers;
    return Array.isArray(parts) ? parts.reduce((f: number, n) => f * normalizerShrink(n), 1) : Number.POSITIVE_INFINITY;
  }
  return Number.POSITIVE_INFINITY;
}

/** The normalizer's form when it is exactly one Unicode normalization, else null. */
function normalForm(normalizer: unknown): NormalForm | null {
  const type = (normalizer as { type?: unknown } | null | undefined)?.type;
  return typeof type === 'string' && FORMS.includes(type) ? (type as NormalForm) : null;
}

/** GPT-2's byte-level alphabet: the character that spells each byte in a byte-level vocabulary, inverted. */
function byteLevelAlphabet(): Map<string, number> {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const map = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) map.set(String.fromCharCode(printable(b) ? b : 256 + extra++), b);
  return map;
}

/**
 * The longest token in bytes of text (byte-level vocabularies spell each byte as one character), and
 * whether some token's text holds two runs of non-whitespace (then word counts bound nothing).
 */
function vocabularyShape(tokenizerJson: Record<string, unknown>, vocab: Map<string, number>, added: ReadonlyMap<string, number>) {
  const decoder = tokenizerJson.decoder as { type?: unknown } | null | undefined;
  const byteLevel = decoder?.type === 'ByteLevel';
  const alphabet = byteLevel ? byteLevelAlphabet() : null;
  let longest = 1;
  let spansWords = !byteLevel;
  for (const token of vocab.keys()) {
    const plain = added.has(token) || !alphabet;
    const bytes = plain ? Buffer.byteLength(token) : token.length;
    if (bytes > longest) longest = bytes;
    if (!spansWords) {
      const text = plain ? token : Buffer.from(Array.from(token, (c) => alphabet!.get(c) ?? 0x3f)).toString('utf8');
      if (/\S\s+\S/.test(text)) spansWords = true;
    }
  }
  return { longest, spansWords };
}

function readJsonText(file: string, required: boolean): { value: Record<string, unknown>; text: string } | undefined {
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
    return { value: value as Record<string, unknown>, text };
  } catch (err) {
    throw new Error(`${file}: invalid JSON (${(err as Error).message})`);
  }
}

const readJson = (file: string, required: boolean) => readJsonText(file, required)?.value;

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

/** `jsonText`: tokenizer.json's text when it was read from a file (kept as the source for workers). */
export function createTokenizer(
  tokenizerJson: Record<string, unknown>,
  tokenizerConfig: Record<string, unknown>,
  extraEosIds: readonly number[] = [],
  jsonText?: string,
): TextTokenizer {
  const tok = new Tokenizer(tokenizerJson, tokenizerConfig);
  const addedTokens = new Map<string, number>();
  for (const [id, added] of tok.get_added_tokens_decoder()) addedTokens.set(added.content, id);
  let size = 0;
  const vocab = tok.get_vocab(true);
  for (const id of vocab.values()) size = Math.max(size, id + 1);
  const { longest, spansWords } = vocabularyShape(tokenizerJson, vocab, addedTokens);

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
    lengthBound: {
      tokenBytes: longest,
      shrink: normalizerShrink(tokenizerJson.normalizer),
      form: normalForm(tokenizerJson.normalizer),
      wordsBoundTokens: !spansWords,
    },
    source: { tokenizerJson: jsonText ?? tokenizerJson, tokenizerConfig, extraEosIds: [...extraEosIds] },
  };
}

/** Loads MODEL_DIR/tokenizer.json and tokenizer_config.json; eos ids also from generation_config.json / config.json. */
export function loadTokenizer(modelDir: string): TextTokenizer {
  const tokenizerFile = path.join(modelDir, 'tokenizer.json');
  const tokenizerJson = readJsonText(tokenizerFile, true)!;
  const tokenizerConfig = readJson(path.join(modelDir, 'tokenizer_config.json'), false) ?? {};
  const generationConfig = readJson(path.join(modelDir, 'generation_config.json'), false);
  const modelConfig = readJson(path.join(modelDir, 'config.json'), false);
  const eos = [...idList(generationConfig?.eos_token_id), ...idList(modelConfig?.eos_token_id)];
  try {
    return createTokenizer(tokenizerJson.value, tokenizerConfig, eos, tokenizerJson.text);
  } catch (err) {
    throw new Error(`${tokenizerFile}: cannot build the tokenizer (${(err as Error).message})`);
  }
}
