import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTokenizer } from '../../src/chat/tokenizer.ts';
import { qwen3TokenizerFile } from '../../src/model/tokenizer-files.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moeserve-tok-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('loadTokenizer', () => {
  it('loads a model directory: encode/decode round trip, added tokens, eos ids merged from every config', () => {
    fs.copyFileSync(qwen3TokenizerFile('tokenizer.json'), path.join(dir, 'tokenizer.json'));
    fs.copyFileSync(qwen3TokenizerFile('tokenizer_config.json'), path.join(dir, 'tokenizer_config.json'));
    fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [151645, 151643] }));
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ eos_token_id: 151645 }));
    const tok = loadTokenizer(dir);
    expect(tok.encode('Hello world')).toEqual([9707, 1879]);
    expect(tok.decode(tok.encode('héllo 世界 🎉'))).toBe('héllo 世界 🎉');
    expect(tok.size).toBe(151669);
    expect(tok.addedTokens.get('<think>')).toBe(151667);
    expect(tok.addedTokens.get('</tool_call>')).toBe(151658);
    expect(tok.eosTokenIds).toEqual([151643, 151645]);
    expect(tok.tokenText(151644)).toBe('<|im_start|>');
    expect(tok.decode([151644, 9707], { skipSpecialTokens: true })).toBe('Hello');
    // ids outside the vocabulary decode to nothing rather than throwing
    expect(tok.decode([])).toBe('');
    expect(tok.decode([9707, 151900, -1])).toBe('Hello');
  });

  it('names the file when something is missing or broken', () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'moeserve-tok-'));
    try {
      expect(() => loadTokenizer(empty)).toThrow(/tokenizer\.json: cannot read/);
      fs.writeFileSync(path.join(empty, 'tokenizer.json'), '{ not json');
      expect(() => loadTokenizer(empty)).toThrow(/tokenizer\.json: invalid JSON/);
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });
});
