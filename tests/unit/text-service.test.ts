// The tokenizer workers (src/chat/text-service.ts) give exactly what the event loop's own tokenizer and
// template give, errors included (a 400 names its parameter), for inputs on both sides of the inline
// threshold; the length bound refuses only text that cannot fit.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTokenizer, type TextTokenizer } from '../../src/chat/tokenizer.ts';
import { createChatTemplate, TemplateError, type ChatTemplate } from '../../src/chat/template.ts';
import { createTextService, INLINE_CHARS, MAX_QUEUED_LONG, type TextService } from '../../src/chat/text-service.ts';
import { ApiError } from '../../src/server/errors.ts';
import { cannotFit, cannotFitCheap, countWords } from '../../src/chat/fit-bound.ts';
import { RequestError } from '../../src/engine/types.ts';
import { qwen3TokenizerFile } from '../../src/model/tokenizer-files.ts';

let tokenizer: TextTokenizer;
let template: ChatTemplate;
let workers: TextService;
let inline: TextService;

beforeAll(async () => {
  const text = fs.readFileSync(qwen3TokenizerFile('tokenizer.json'), 'utf8');
  const config = JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer_config.json'), 'utf8'));
  tokenizer = createTokenizer(JSON.parse(text), config, [], text);
  template = createChatTemplate(config)!;
  workers = createTextService(tokenizer, template, 2);
  inline = createTextService(tokenizer, template, 0);
  await workers.warmup();
});

afterAll(async () => {
  await workers?.close();
});

const opts = { addSpecialTokens: true, maxTokens: 1 << 20, param: 'prompt' };
const long = 'Ünïcode, <|im_start|> and spaces:   \n'.repeat(Math.ceil((INLINE_CHARS * 3) / 37));

describe('tokenizer workers', () => {
  it('encode, decode and token texts equal the inline ones, short and long, one text and many', async () => {
    const texts = ['hello', long, '', '世界 🎉', long.slice(7)];
    const fromWorkers = await workers.encode(texts, opts);
    expect(fromWorkers).toEqual(texts.map((t) => tokenizer.encode(t, { addSpecialTokens: true })));
    expect(await inline.encode(texts, opts)).toEqual(fromWorkers);
    expect(await workers.decode(fromWorkers)).toEqual(fromWorkers.map((ids) => tokenizer.decode(ids)));
    const many = Array.from({ length: 2000 }, (_, i) => `p${i}`);
    expect(await workers.encode(many, opts)).toEqual(many.map((t) => tokenizer.encode(t, { addSpecialTokens: true })));
    const ids = fromWorkers[1].slice(0, 3000);
    expect(await workers.tokenTexts(ids)).toEqual(ids.map((id) => tokenizer.tokenText(id)));
  });

  it('render chat exactly as the template does, and refuse as it refuses', async () => {
    const messages = [
      { role: 'system', content: long },
      { role: 'user', content: 'Hi' },
    ];
    const render = { addGenerationPrompt: true };
    const text = template.render(messages, render);
    const chat = await workers.renderChat(messages, render, { ...opts, addSpecialTokens: false, param: 'messages' });
    expect(chat).toEqual({ text, ids: tokenizer.encode(text) });
    // A template error crosses the thread as itself (the server answers 400 naming messages).
    const bad = [{ role: 'user', content: long }, { role: 'assistant', content: long, tool_calls: 5 }];
    const inlineError = await inline.renderChat(bad, render, opts).catch((e: unknown) => e);
    const workerError = await workers.renderChat(bad, render, opts).catch((e: unknown) => e);
    expect(inlineError).toBeInstanceOf(TemplateError);
    expect(workerError).toBeInstanceOf(TemplateError);
    expect((workerError as Error).message).toBe((inlineError as Error).message);
  });

  it('refuse text that cannot fit before tokenizing, as a RequestError naming the parameter', async () => {
    const err = await workers.encode(['short', 'x'.repeat(129 * 100 + 1)], { ...opts, maxTokens: 100 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RequestError);
    expect((err as RequestError).param).toBe('prompt[1]');
    expect((err as Error).message).toMatch(/'prompt\[1\]' is 12901 bytes of text, more than 100 tokens can hold/);
    // Words are checked after bytes: 300 words of 'ab ' are under 128 × 100 bytes but over 100 tokens.
    const words = await workers.encode(['ab '.repeat(1500)], { ...opts, maxTokens: 100 }).catch((e: unknown) => e);
    expect((words as Error).message).toMatch(/'prompt' holds 1500 words/);
  });
});

describe('the length bounds', () => {
  it('are lower bounds on the token count: they never refuse text that fits', () => {
    const { lengthBound } = tokenizer;
    expect(lengthBound).toMatchObject({ tokenBytes: 128, shrink: 3, form: 'NFC', wordsBoundTokens: true });
    // The longest tokens (runs of spaces), Hangul jamo that NFC composes, words, one-character words, a long word.
    const samples = [' '.repeat(128 * 50), '\u1100\u1161\u11a8'.repeat(200), 'the quick brown fox '.repeat(100), 'a b c d e f '.repeat(100), '한'.repeat(300), 'x7'.repeat(500)];
    for (const text of samples) {
      const tokens = tokenizer.encode(text).length;
      expect(cannotFitCheap(text, tokens, lengthBound), text.slice(0, 20)).toBe(false);
      expect(cannotFit(text, tokens, lengthBound, 'it'), text.slice(0, 20)).toBeNull();
      expect(countWords(text)).toBeLessThanOrEqual(tokens);
    }
    // And refuse what certainly cannot fit: too many bytes, or too many words.
    expect(cannotFitCheap('x'.repeat(128 * 10 + 1), 10, lengthBound)).toBe(true);
    expect(cannotFit('한'.repeat(1000), 10, lengthBound, 'it')).toMatch(/^it is 3000 bytes of text, more than 10 tokens/);
    expect(cannotFitCheap('한'.repeat(1000), 10, lengthBound)).toBe(false);
    expect(cannotFit('a b c d e f g h i j k', 10, lengthBound, 'it')).toMatch(/^it holds 11 words .* more than the 10 tokens/);
    expect(countWords(' a\u00a0b\u3000c\td\n\ne ')).toBe(5);
  });

  it('refuse a long natural text at once on a worker, where tokenizing it would take seconds', async () => {
    const text = 'the quick brown fox jumps over the lazy dog. '.repeat(40_000); // 1.8 MB, 360,000 words
    const t0 = performance.now();
    const err = await workers.encode([text], { ...opts, maxTokens: 131072 }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/holds 360000 words/);
    expect(performance.now() - t0).toBeLessThan(1000);
  });
});

describe('worker lanes', () => {
  it('a conversation of ordinary length does not wait behind long prompts, and long prompts queue only so deep', async () => {
    // Long inputs that fit the bounds but take a while: one word of 300,000 characters (300,000 tokens, about a second each).
    const heavy = 'x7'.repeat(150_000);
    const longOnes = Array.from({ length: MAX_QUEUED_LONG }, () => workers.encode([heavy], { ...opts, maxTokens: 1 << 20 }));
    // One more than the long lane holds: a 503, at once.
    const refused = await workers.encode([heavy], { ...opts, maxTokens: 1 << 20 }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ApiError);
    expect((refused as ApiError).status).toBe(503);
    // A 20,000-character prompt goes to the medium lane meanwhile.
    const t0 = performance.now();
    const [medium] = await workers.encode([long.slice(0, 20_000)], opts);
    const mediumMs = performance.now() - t0;
    expect(medium).toEqual(tokenizer.encode(long.slice(0, 20_000), { addSpecialTokens: true }));
    const results = await Promise.all(longOnes);
    expect(results[0][0]).toHaveLength(300_000);
    // The long ones took seconds in all; the medium one did not wait for them.
    expect(mediumMs).toBeLessThan(1000);
  }, 60_000);
});
