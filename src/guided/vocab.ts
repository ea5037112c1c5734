// The vocabulary as a grammar engine needs it: every token's string by id, as tokenizer.json spells
// it, and how those strings map to bytes.

export type VocabType = 'byte_level' | 'byte_fallback' | 'raw';

export interface EncodedVocab {
  /** By token id; '' for ids the grammar must never produce as text (special tokens, holes). */
  tokens: string[];
  type: VocabType;
  /** Ids of added tokens marked special (<|im_start|>, ...): never text, only stop tokens may end a grammar. */
  specialIds: number[];
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);

/** True when `node` or one of its Sequence children (pre_tokenizers / decoders) has this type. */
function hasComponent(node: unknown, type: string): boolean {
  if (!isObject(node)) return false;
  if (node.type === type) return true;
  for (const key of ['pretokenizers', 'decoders', 'normalizers']) {
    const list = node[key];
    if (Array.isArray(list) && list.some((child) => hasComponent(child, type))) return true;
  }
  return false;
}

/** Reads a Hugging Face tokenizer.json (BPE). Throws, naming what is missing, on anything else. */
export function encodedVocab(tokenizerJson: Json): EncodedVocab {
  const model = tokenizerJson.model;
  if (!isObject(model) || !isObject(model.vocab)) throw new Error('tokenizer.json has no model.vocab');
  let type: VocabType;
  if (hasComponent(tokenizerJson.decoder, 'ByteLevel') || hasComponent(tokenizerJson.pre_tokenizer, 'ByteLevel')) type = 'byte_level';
  else if (model.byte_fallback === true || hasComponent(tokenizerJson.decoder, 'ByteFallback')) type = 'byte_fallback';
  else type = 'raw';

  const tokens: string[] = [];
  for (const [token, id] of Object.entries(model.vocab)) {
    if (Number.isInteger(id) && (id as number) >= 0) tokens[id as number] = token;
  }
  const specialIds: number[] = [];
  const added = Array.isArray(tokenizerJson.added_tokens) ? tokenizerJson.added_tokens : [];
  for (const a of added) {
    if (!isObject(a) || typeof a.content !== 'string' || !Number.isInteger(a.id) || (a.id as number) < 0) continue;
    const id = a.id as number;
    // Special tokens are control symbols, not text: a JSON string must not contain "<|im_start|>".
    // Non-special added tokens (<tool_call>, <think>) stay text, so grammars can name them.
    if (a.special === true) {
      tokens[id] = '';
      specialIds.push(id);
    } else {
      tokens[id] = a.content;
    }
  }
  for (let i = 0; i < tokens.length; i++) tokens[i] ??= '';
  return { tokens, type, specialIds };
}
