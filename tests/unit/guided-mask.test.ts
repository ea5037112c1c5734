// Guided decoding over the real 151,936-token Qwen3 vocabulary (xgrammar in WASM): masks allow
// exactly the tokens that keep the output a prefix of the language, and random walks over allowed
// tokens always end in schema-valid JSON / well-formed tool calls.
import { beforeAll, describe, expect, it } from 'vitest';
import { RequestError } from '../../src/engine/types.ts';
import type { GuideSpec } from '../../src/guided/guided-decoding.ts';
import { allowedIds, EOS, guidedDecoding, randomWalk, THINK_END, tokenBytes, tokenId, validator } from './guided-helpers.ts';

const json = (schema: unknown): GuideSpec => ({ kind: 'json', schema, param: 'response_format.json_schema.schema' });

beforeAll(async () => {
  await guidedDecoding().warmup();
}, 60_000);

/**
 * Brute force over the vocabulary: the tokens whose bytes extend `prefix` to a prefix of some word
 * of `language` (plus the stop tokens when `prefix` is a whole word).
 */
function expectedAllowed(prefix: Buffer, language: Buffer[]): number[] {
  const ids: number[] = [];
  tokenBytes.forEach((b, id) => {
    if (b === null || b.length === 0) return;
    const next = Buffer.concat([prefix, b]);
    if (language.some((w) => w.length >= next.length && w.subarray(0, next.length).equals(next))) ids.push(id);
  });
  if (language.some((w) => w.equals(prefix))) ids.push(...EOS);
  return ids.sort((a, b) => a - b);
}

describe('guided decoding masks (real vocabulary)', () => {
  const finite: [string, unknown, string[]][] = [
    ['an enum', { enum: ['yes', 'no', 'maybe so'] }, ['"yes"', '"no"', '"maybe so"']],
    ['an integer range', { type: 'integer', minimum: -3, maximum: 12 }, Array.from({ length: 16 }, (_, i) => String(i - 3))],
    [
      'an object with an optional property',
      { type: 'object', properties: { a: { type: 'boolean' }, b: { enum: [1, 'x'] } }, required: ['a'] },
      ['true', 'false'].flatMap((a) => [`{"a": ${a}}`, `{"a": ${a}, "b": 1}`, `{"a": ${a}, "b": "x"}`]),
    ],
  ];

  for (const [what, schema, words] of finite) {
    it(`allow exactly the valid continuations of ${what}`, async () => {
      const language = words.map((w) => Buffer.from(w));
      const compiled = await guidedDecoding().compile(json(schema));
      for (let walk = 0; walk < 4; walk++) {
        const guide = await compiled.createGuide();
        const row = new Uint32Array(guidedDecoding().maskWords);
        let prefix = Buffer.alloc(0);
        for (let step = 0; step < 40; step++) {
          const status = await guide.next(row);
          const allowed = allowedIds(row);
          expect(allowed).toEqual(expectedAllowed(prefix, language));
          if (status === 'complete') {
            expect(language.some((w) => w.equals(prefix))).toBe(true);
            break;
          }
          const textual = allowed.filter((t) => !EOS.includes(t));
          if (textual.length === 0) throw new Error('not complete, but only stop tokens allowed');
          const pick = textual[(walk * 7919 + step * 104729) % textual.length];
          expect(guide.accept(pick)).toBe(true);
          prefix = Buffer.concat([prefix, tokenBytes[pick]!]);
        }
        guide.dispose();
      }
    });
  }

  const schemas: [string, unknown][] = [
    ['nested objects, enums, bounded numbers and strings', {
      type: 'object',
      properties: {
        user: { type: 'object', properties: { id: { type: 'integer', minimum: 1, maximum: 99999 }, name: { type: 'string', minLength: 1, maxLength: 8 } }, required: ['id', 'name'] },
        role: { enum: ['admin', 'user', 'guest'] },
        score: { type: 'number', minimum: 0, maximum: 1 },
        active: { type: 'boolean' },
      },
      required: ['user', 'role', 'score'],
    }],
    ['arrays with bounds and tuples', {
      type: 'object',
      properties: {
        tags: { type: 'array', items: { type: 'string', maxLength: 4 }, minItems: 1, maxItems: 3 },
        point: { type: 'array', prefixItems: [{ type: 'number', minimum: -90, maximum: 90 }, { type: 'number', minimum: -180, maximum: 180 }], items: false, minItems: 2 },
      },
      required: ['tags', 'point'],
    }],
    ['anyOf, nullable types, $ref and recursion', {
      $defs: { node: { type: 'object', properties: { v: { type: ['integer', 'null'], minimum: 0, maximum: 9 }, kids: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 2 } }, required: ['v', 'kids'] } },
      type: 'object',
      properties: { root: { $ref: '#/$defs/node' }, note: { anyOf: [{ type: 'string', maxLength: 6 }, { type: 'null' }] } },
      required: ['root', 'note'],
    }],
    ['numbers with exclusive bounds and a dictionary', {
      type: 'object',
      properties: {
        ratio: { type: 'number', exclusiveMinimum: 0, exclusiveMaximum: 1 },
        t: { type: 'integer', exclusiveMinimum: -5, maximum: 5 },
        counts: { type: 'object', additionalProperties: { type: 'integer', minimum: 0, maximum: 100 } },
      },
      required: ['ratio', 't'],
    }],
  ];

  for (const [what, schema] of schemas) {
    it(`random walks over allowed tokens yield valid JSON: ${what}`, async () => {
      const validate = validator(schema);
      const compiled = await guidedDecoding().compile(json(schema));
      let complete = 0;
      for (let seed = 1; seed <= 12; seed++) {
        const guide = await compiled.createGuide();
        const walk = await randomWalk(guide, seed);
        guide.dispose();
        if (!walk.complete) continue;
        complete++;
        const value = JSON.parse(walk.text) as unknown;
        if (!validate(value)) throw new Error(`${walk.text} is invalid: ${JSON.stringify(validate.errors)}`);
      }
      expect(complete).toBeGreaterThanOrEqual(8);
    });
  }

  it('json_object: any JSON object', async () => {
    const guide = await (await guidedDecoding().compile({ kind: 'json', schema: null, param: 'response_format' })).createGuide();
    const row = new Uint32Array(guidedDecoding().maskWords);
    await guide.next(row);
    const first = allowedIds(row).map((id) => tokenBytes[id]!.toString());
    expect(first.length).toBeGreaterThan(0);
    expect(first.every((t) => t.startsWith('{'))).toBe(true);
    for (const id of [tokenId('{"'), tokenId('a'), tokenId('":'), tokenId(' ['), tokenId('1'), tokenId(']}')]) expect(guide.accept(id)).toBe(true);
    expect(await guide.next(row)).toBe('complete');
    guide.dispose();
  });

  it('tool calls: the Qwen3 <tool_call> format with schema-valid arguments, one or several', async () => {
    const weather = { type: 'object', properties: { city: { type: 'string', maxLength: 6 }, unit: { enum: ['C', 'F'] } }, required: ['city'] };
    const add = { type: 'object', properties: { a: { type: 'integer', minimum: 0, maximum: 9 }, b: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['a', 'b'] };
    const tools = [
      { name: 'get_weather', parameters: weather, param: 'tools[0].function.parameters' },
      { name: 'add', parameters: add, param: 'tools[1].function.parameters' },
      { name: 'noop', parameters: undefined, param: 'tools[2].function.parameters' },
    ];
    const validators: Record<string, (v: unknown) => boolean> = { get_weather: validator(weather), add: validator(add), noop: validator({ type: 'object', maxProperties: 0 }) };
    const block = /<tool_call>\n(.*?)\n<\/tool_call>/gs;
    for (const multiple of [true, false]) {
      const compiled = await guidedDecoding().compile({ kind: 'tool_calls', tools, multiple, param: 'tools' });
      let calls = 0;
      for (let seed = 1; seed <= 10; seed++) {
        const guide = await compiled.createGuide();
        const walk = await randomWalk(guide, seed * 31);
        guide.dispose();
        expect(walk.complete).toBe(true);
        const blocks = [...walk.text.matchAll(block)];
        expect(blocks.map((b) => b[0]).join('\n')).toBe(walk.text);
        if (!multiple) expect(blocks).toHaveLength(1);
        for (const b of blocks) {
          const call = JSON.parse(b[1]) as { name: string; arguments: unknown };
          expect(Object.keys(call)).toEqual(['name', 'arguments']);
          expect(validators[call.name]?.(call.arguments)).toBe(true);
          calls++;
        }
      }
      expect(calls).toBeGreaterThanOrEqual(10);
    }
    // The <tool_call> token itself is allowed where the grammar starts.
    const guide = await (await guidedDecoding().compile({ kind: 'tool_calls', tools, multiple: true, param: 'tools' })).createGuide();
    const row = new Uint32Array(guidedDecoding().maskWords);
    await guide.next(row);
    expect(allowedIds(row)).toContain(151657);
    guide.dispose();
  });

  it('a prompt left inside <think>: free until </think>, then newlines, then the grammar', async () => {
    const compiled = await guidedDecoding().compile(json({ enum: ['ok'] }));
    const guide = await compiled.createGuide({ startInReasoning: true });
    const row = new Uint32Array(guidedDecoding().maskWords);
    expect(await guide.next(row)).toBe('free');
    for (const t of [tokenId('Let'), tokenId(' me'), tokenId(' think'), THINK_END]) expect(guide.accept(t)).toBe(true);
    expect(await guide.next(row)).toBe('masked');
    const nl = tokenId('\n');
    const nlnl = tokenId('\n\n');
    expect(allowedIds(row)).toEqual(expect.arrayContaining([nl, nlnl, tokenId('"')]));
    // At most two separator tokens ("\n\n", or "\n" twice), then the grammar alone.
    expect(guide.accept(nlnl)).toBe(true);
    await guide.next(row);
    expect(allowedIds(row)).toContain(nl);
    expect(guide.accept(nl)).toBe(true);
    await guide.next(row);
    expect(allowedIds(row)).not.toContain(nl);
    for (const t of [tokenId('"'), tokenId('ok'), tokenId('"')]) expect(guide.accept(t)).toBe(true);
    expect(await guide.next(row)).toBe('complete');
    expect(allowedIds(row)).toEqual(EOS);
    guide.dispose();
  });

  it('special tokens never appear as text inside strings', async () => {
    const guide = await (await guidedDecoding().compile(json({ type: 'string' }))).createGuide();
    const row = new Uint32Array(guidedDecoding().maskWords);
    guide.accept(tokenId('"'));
    await guide.next(row);
    const allowed = new Set(allowedIds(row));
    for (const id of [151644, 151645, 151643, 151935]) expect(allowed.has(id)).toBe(false);
    expect(allowed.has(tokenId('hello'))).toBe(true);
    expect(allowed.has(tokenId('\n'))).toBe(false); // a raw control character is not JSON
    guide.dispose();
  });

  it('refuses unsupported schemas with a 400 naming the parameter and the place', async () => {
    const err = await guidedDecoding().compile(json({ type: 'object', properties: { a: { type: 'string', pattern: '^(?=x)' } } })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RequestError);
    expect((err as RequestError).param).toBe('response_format.json_schema.schema');
    expect((err as RequestError).message).toContain("schema at '/properties/a/pattern' uses a lookahead '(?='");
  });
});
