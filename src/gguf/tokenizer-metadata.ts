// The tokenizer.* GGUF metadata for a byte-level BPE (GPT-2 style) tokenizer.json, as llama.cpp's
// convert_hf_to_gguf.py writes it (TextModel._set_vocab_gpt2 + get_vocab_base + gguf-py SpecialVocab):
// tokens padded to vocab_size with "[PAD{i}]" (type UNUSED), added tokens CONTROL when special (or
// shaped like <|...|>) else USER_DEFINED, merges as "a b" strings, special ids from tokenizer_config.json
// (looked up among the added tokens) and then config.json's *_token_id.
import fs from 'node:fs';
import path from 'node:path';
import { GGUFValueType, type GgufWriter } from './gguf-writer.ts';

/** gguf-py TokenType. */
export const TokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

interface AddedToken {
  id: number;
  content: string;
  special?: boolean;
}

interface TokenizerJson {
  model?: { type?: string; vocab?: Record<string, number>; merges?: Array<string | [string, string]> };
  added_tokens?: AddedToken[];
}

export interface GgufVocab {
  tokens: string[];
  tokenTypes: number[];
  merges: string[];
  specialIds: Partial<Record<SpecialType, number>>;
  addBos?: boolean;
  addEos?: boolean;
  chatTemplate?: string;
}

const SPECIAL_TYPES = ['bos', 'eos', 'unk', 'sep', 'pad', 'mask'] as const;
type SpecialType = (typeof SPECIAL_TYPES)[number];
const SPECIAL_KEYS: Record<SpecialType, string> = {
  bos: 'tokenizer.ggml.bos_token_id',
  eos: 'tokenizer.ggml.eos_token_id',
  unk: 'tokenizer.ggml.unknown_token_id',
  sep: 'tokenizer.ggml.seperator_token_id', // sic: llama.cpp's spelling
  pad: 'tokenizer.ggml.padding_token_id',
  mask: 'tokenizer.ggml.mask_token_id',
};

function readJsonFile<T>(file: string): T {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch (e) {
    throw new Error(`cannot read ${file}: ${(e as Error).message}`);
  }
}

function looksSpecial(t: string): boolean {
  return (t.startsWith('<|') && t.endsWith('|>')) || (t.startsWith('<｜') && t.endsWith('｜>'));
}

export function readGgufVocab(modelDir: string, vocabSize: number): GgufVocab {
  const tokFile = path.join(modelDir, 'tokenizer.json');
  const tok = readJsonFile<TokenizerJson>(tokFile);
  if (tok.model?.type !== 'BPE' || !tok.model.vocab) throw new Error(`${tokFile}: only byte-level BPE tokenizers are supported`);
  const cfgFile = path.join(modelDir, 'tokenizer_config.json');
  const tcfg = fs.existsSync(cfgFile) ? readJsonFile<Record<string, unknown>>(cfgFile) : {};
  const modelCfg = readJsonFile<Record<string, unknown>>(path.join(modelDir, 'config.json'));

  const byId = new Map<number, string>();
  for (const [t, id] of Object.entries(tok.model.vocab)) byId.set(id, t);
  const added = new Map<number, AddedToken>();
  for (const a of tok.added_tokens ?? []) {
    added.set(a.id, a);
    byId.set(a.id, a.content);
  }
  let maxId = -1;
  for (const id of byId.keys()) maxId = Math.max(maxId, id);
  if (maxId >= vocabSize) throw new Error(`${tokFile}: token id ${maxId} does not fit vocab_size ${vocabSize}`);

  const tokens: string[] = new Array(vocabSize);
  const tokenTypes: number[] = new Array(vocabSize);
  for (let i = 0; i < vocabSize; i++) {
    const t = byId.get(i);
    if (t === undefined) {
      tokens[i] = `[PAD${i}]`;
      tokenTypes[i] = TokenType.UNUSED;
    } else {
      tokens[i] = t;
      const a = added.get(i);
      tokenTypes[i] = !a ? TokenType.NORMAL : a.special || looksSpecial(t) ? TokenType.CONTROL : TokenType.USER_DEFINED;
    }
  }

  const merges = (tok.model.merges ?? []).map((m) => {
    if (typeof m === 'string') return m;
    // transformers >= 4.45 pair form; a space inside a part is encoded as U+0120 as gguf-py does.
    return m.map((part) => part.replaceAll(' ', String.fromCharCode(' '.charCodeAt(0) + 256))).join(' ');
  });

  const specialIds: Partial<Record<SpecialType, number>> = {};
  const addedByContent = new Map((tok.added_tokens ?? []).map((a) => [a.content, a.id]));
  for (const typ of SPECIAL_TYPES) {
    const entry = tcfg[`${typ}_token`];
    const content = typeof entry === 'string' ? entry : (entry as { content?: unknown } | null)?.content;
    if (typeof content !== 'string') continue;
    const id = addedByContent.get(content);
    if (id !== undefined && id < vocabSize) specialIds[typ] = id;
  }
  for (const typ of SPECIAL_TYPES) {
    const id = modelCfg[`${typ}_token_id`];
    if (specialIds[typ] === undefined && typeof id === 'number' && Number.isInteger(id) && id >= 0 && id < vocabSize) specialIds[typ] = id;
  }
  return {
    tokens,
    tokenTypes,
    merges,
    specialIds,
    addBos: typeof tcfg.add_bos_token === 'boolean' ? tcfg.add_bos_token : undefined,
    addEos: typeof tcfg.add_eos_token === 'boolean' ? tcfg.add_eos_token : undefined,
    chatTemplate: typeof tcfg.chat_template === 'string' ? tcfg.chat_template : undefined,
  };
}

export function addVocabMetadata(w: GgufWriter, v: GgufVocab, pre: string): void {
  w.addString('tokenizer.ggml.model', 'gpt2');
  w.addString('tokenizer.ggml.pre', pre);
  w.addArray('tokenizer.ggml.tokens', GGUFValueType.STRING, v.tokens);
  w.addArray('tokenizer.ggml.token_type', GGUFValueType.INT32, v.tokenTypes);
  if (v.merges.length > 0) w.addArray('tokenizer.ggml.merges', GGUFValueType.STRING, v.merges);
  for (const typ of SPECIAL_TYPES) {
    const id = v.specialIds[typ];
    if (id !== undefined) w.addUint32(SPECIAL_KEYS[typ], id);
  }
  if (v.addBos !== undefined) w.addBool('tokenizer.ggml.add_bos_token', v.addBos);
  if (v.addEos !== undefined) w.addBool('tokenizer.ggml.add_eos_token', v.addEos);
  if (v.chatTemplate !== undefined) w.addString('tokenizer.chat_template', v.chatTemplate);
}
