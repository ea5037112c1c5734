// JSON Schema → EBNF (no vocabulary): refusals name the parameter and the schema path; number
// ranges accept exactly the numbers in range (checked string by string with xgrammar's matcher).
import { describe, expect, it } from 'vitest';
import { RequestError } from '../../src/engine/types.ts';
import { compactJson, jsonSchemaGrammar, MAX_ENUM_VALUES } from '../../src/guided/json-schema-grammar.ts';
import { guideGrammar, MAX_GRAMMAR_CHARS } from '../../src/guided/guide-grammar.ts';
import type { GuideSpec } from '../../src/guided/guide-spec.ts';
import { toolCallGrammar } from '../../src/guided/tool-call-grammar.ts';
import { responseFormatSpec, toolCallSpec } from '../../src/guided/request-spec.ts';
import { xgrammar } from '../../src/guided/xgrammar-wasm.ts';
import { schemaAccepts } from './guided-helpers.ts';

const PARAM = 'response_format.json_schema.schema';

const nest = (depth: number): unknown => (depth === 0 ? { type: 'integer' } : { type: 'array', items: nest(depth - 1) });

function refusal(schema: unknown): RequestError {
  try {
    jsonSchemaGrammar(schema, PARAM);
  } catch (e) {
    expect(e).toBeInstanceOf(RequestError);
    expect((e as RequestError).param).toBe(PARAM);
    return e as RequestError;
  }
  throw new Error(`accepted ${JSON.stringify(schema)}`);
}

function acceptsAll(schema: unknown, inputs: string[]): Promise<boolean[]> {
  return schemaAccepts(schema, inputs, PARAM);
}

describe('JSON Schema → grammar', () => {
  it('refuses what it cannot guarantee, naming the keyword and where it is', () => {
    const cases: [unknown, string][] = [
      [{ type: 'string', pattern: '^(?=a)' }, "schema at '/pattern' uses a lookahead '(?='"],
      [{ type: 'object', properties: { a: { type: 'integer', multipleOf: 3 } } }, "schema at '/properties/a' uses 'multipleOf'"],
      [{ type: 'array', items: { type: 'integer' }, uniqueItems: true }, "schema at '/uniqueItems' is not supported unless"],
      [{ type: 'object', minProperties: 1 }, "uses 'minProperties'"],
      [{ not: { type: 'string' } }, "uses 'not'"],
      [{ allOf: [{ type: 'object' }, { type: 'object' }] }, 'exactly one subschema'],
      [{ oneOf: [{ type: 'integer' }, { type: 'number' }] }, 'can match the same value'],
      [{ oneOf: [{ minimum: 1 }, { type: 'string' }] }, "needs a 'type'"],
      [{ type: 'object', properties: { a: false } }, "schema at '/properties/a' is false"],
      [{ type: 'strng' }, 'unknown type "strng"'],
      [{ $ref: '#/$defs/missing' }, 'points nowhere'],
      [{ $ref: 'https://example.com/s.json' }, 'must be a local reference'],
      [{ type: 'object', properties: { a: { type: 'integer' } }, required: ['b'] }, "requires 'b', which is not in its 'properties'"],
      [{ type: 'string', maxLength: 500 }, 'is above 128'],
      [{ type: 'number', minimum: 1e-20 }, 'more than 15 fraction digits'],
      [{ type: 'string', minLength: 3, maxLength: 2 }, 'minLength above maxLength'],
      [{ type: 'integer', minimum: 5, maximum: 4 }, 'admits no integer'],
      [{ type: 'array', items: [{ type: 'integer' }] }, "use 'prefixItems'"],
      [{ type: 'array', prefixItems: [{ type: 'integer' }], items: false, minItems: 2 }, 'more items than its prefixItems allow'],
      [{ enum: [] }, 'non-empty array'],
      [{ type: 'string', enum: [1, 2] }, 'no enum value of the allowed type'],
      [{ $ref: '#/$defs/a', type: 'object', $defs: { a: {} } }, "combines '$ref' with 'type'"],
      [42, 'must be an object or a boolean'],
      [nest(40), 'nested too deeply'],
      [{ type: 'object', properties: Object.fromEntries(Array.from({ length: 600 }, (_, i) => [`p${i}`, { type: 'integer' }])) }, 'too large for guided decoding'],
      [false, 'is false'],
    ];
    for (const [schema, message] of cases) expect(refusal(schema).message).toContain(message);
  });

  it('accepts annotations, unknown formats and x- extensions without constraining by them', () => {
    const g = jsonSchemaGrammar({ title: 'T', description: 'd', $schema: 'https://json-schema.org/draft/2020-12/schema', type: 'string', format: 'password', 'x-order': 1, default: 'a', examples: ['b'] }, PARAM);
    expect(g).toContain('root ::= json_string_root');
  });

  it('integer ranges accept exactly the integers in range', async () => {
    const ranges: [number | undefined, number | undefined][] = [[-37, 1234], [0, 0], [7, 7], [-100, -3], [95, 1005], [undefined, 12], [-8, undefined]];
    const window = Array.from({ length: 2601 }, (_, i) => i - 1300);
    for (const [minimum, maximum] of ranges) {
      const ok = await acceptsAll({ type: 'integer', minimum, maximum }, window.map(String));
      window.forEach((v, i) => {
        const inRange = (minimum === undefined || v >= minimum) && (maximum === undefined || v <= maximum);
        if (ok[i] !== inRange) throw new Error(`[${minimum}, ${maximum}]: ${v} accepted=${ok[i]}`);
      });
    }
    expect(await acceptsAll({ type: 'integer' }, ['0', '-0', '007', '1.0', '123456789012345', '1234567890123456'])).toEqual([true, false, false, false, true, false]);
  });

  it('number ranges accept exactly the decimals in range', async () => {
    const schemas: { schema: Record<string, number | string>; test: (x: number) => boolean }[] = [
      { schema: { type: 'number', minimum: 0, maximum: 1 }, test: (x) => x >= 0 && x <= 1 },
      { schema: { type: 'number', exclusiveMinimum: -3, exclusiveMaximum: 2 }, test: (x) => x > -3 && x < 2 },
      { schema: { type: 'number', minimum: -10 }, test: (x) => x >= -10 },
      { schema: { type: 'number', exclusiveMaximum: 0 }, test: (x) => x < 0 },
    ];
    const inputs = ['0', '1', '1.0', '1.5', '0.25', '-0.5', '2', '-3', '-3.0', '-2.999', '1.999', '-10', '-10.0', '-10.01', '-9.5', '99.75', '-0.000001', '0.0', '3', '-11'];
    for (const { schema, test } of schemas) {
      const ok = await acceptsAll(schema, inputs);
      inputs.forEach((s, i) => {
        if (ok[i] !== test(Number(s))) throw new Error(`${JSON.stringify(schema)}: ${s} accepted=${ok[i]}`);
      });
    }
    expect(await acceptsAll({ type: 'number' }, ['1e5', '-2.5E-3', '0.1', '.5', '1.', '01', 'NaN'])).toEqual([true, true, true, false, false, false, false]);
  });

  it('strings: JSON escapes, no raw control characters, length bounds counted in characters', async () => {
    expect(await acceptsAll({ type: 'string' }, ['"a\\"b\\\\c\\u00e9\\n"', '"tab\there"', '"😀 ok"', '"\\ud83d\\ude00"', '"unterminated'])).toEqual([true, false, true, false, false]);
    expect(await acceptsAll({ type: 'string', minLength: 2, maxLength: 3 }, ['"a"', '"ab"', '"é😀"', '"a\\nb"', '"abcd"'])).toEqual([false, true, true, true, false]);
  });

  it('objects: properties in order, optional ones may be left out, nothing else', async () => {
    const schema = { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'boolean' }, c: { type: 'null' } }, required: ['b'] };
    const inputs = ['{"b": true}', '{"a": 1, "b": false}', '{"a": 1, "b": true, "c": null}', '{"b": true, "c": null}', '{"a": 1}', '{"b": true, "a": 1}', '{"b": true, "d": 1}', '{}'];
    expect(await acceptsAll(schema, inputs)).toEqual([true, true, true, true, false, false, false, false]);
  });

  it('bounds the constraint before compilation: enum values in all, and the grammar text', () => {
    const values = (n: number, prefix = 'v') => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
    expect(jsonSchemaGrammar({ enum: values(MAX_ENUM_VALUES) }, PARAM)).toContain('"\\"v4095\\""');
    expect(refusal({ enum: values(60_000) }).message).toContain(`schema at '/enum' makes the constraint too large for guided decoding (more than ${MAX_ENUM_VALUES} enum`);
    // Counted over the whole grammar: several properties, several tools.
    const split = { type: 'object', properties: { a: { enum: values(3000) }, b: { const: 'x' }, c: { enum: values(1500) } } };
    expect(refusal(split).message).toContain("schema at '/properties/c/enum' makes the constraint too large");
    const tool = (i: number, n: number) => ({ name: `f${i}`, parameters: { type: 'object', properties: { x: { enum: values(n) } } }, param: `tools[${i}].function.parameters` });
    expect(() => toolCallGrammar([tool(0, 3000), tool(1, 3000)], true)).toThrow(expect.objectContaining({ param: 'tools[1].function.parameters', message: expect.stringContaining('too large') }));

    const long = (n: number): GuideSpec => ({ kind: 'json', schema: { const: 'x'.repeat(n) }, param: PARAM });
    expect(guideGrammar(long(MAX_GRAMMAR_CHARS - 1000)).length).toBeLessThanOrEqual(MAX_GRAMMAR_CHARS);
    expect(() => guideGrammar(long(MAX_GRAMMAR_CHARS))).toThrow(
      expect.objectContaining({ param: PARAM, message: expect.stringContaining(`the constraint is too large for guided decoding (its grammar has ${MAX_GRAMMAR_CHARS + 16} characters, more than ${MAX_GRAMMAR_CHARS})`) }),
    );
    expect(() => guideGrammar({ kind: 'tool_calls', tools: [{ name: 'f'.repeat(MAX_GRAMMAR_CHARS), parameters: undefined, param: 'tools[0].function.parameters' }], multiple: false, param: 'tools' })).toThrow(
      expect.objectContaining({ param: 'tools' }),
    );
  });

  it('compact JSON literals for enum and const', () => {
    expect(compactJson({ a: [1, 'x', null], b: { c: true } })).toBe('{"a": [1, "x", null], "b": {"c": true}}');
  });

  it('tool call grammar: the named function and the Qwen3 framing', async () => {
    const text = toolCallGrammar([{ name: 'f', parameters: { type: 'object', properties: { x: { type: 'integer' } }, required: ['x'] }, param: 'tools[0].function.parameters' }], false);
    const xg = xgrammar();
    const grammar = await xg.Grammar.fromEBNF(text);
    const accepts = (s: string) => xg.Testings.isGrammarAcceptString(grammar, s);
    expect(await accepts('<tool_call>\n{"name": "f", "arguments": {"x": 3}}\n</tool_call>')).toBe(true);
    expect(await accepts('<tool_call>\n{"name": "g", "arguments": {"x": 3}}\n</tool_call>')).toBe(false);
    expect(await accepts('<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>')).toBe(false);
    expect(await accepts('<tool_call>\n{"name": "f", "arguments": {"x": 3}}\n</tool_call>\n<tool_call>\n{"name": "f", "arguments": {"x": 3}}\n</tool_call>')).toBe(false);
    grammar.dispose();
    expect(() => toolCallGrammar([{ name: 'f', parameters: { type: 'object', properties: { p: { type: 'string', pattern: '(?=x)' } } }, param: 'tools[3].function.parameters' }], true)).toThrow(
      expect.objectContaining({ param: 'tools[3].function.parameters' }),
    );
  });

  it('maps response_format and tool_choice to guide specs, with 400s naming the field', () => {
    expect(responseFormatSpec(undefined)).toBeNull();
    expect(responseFormatSpec({ type: 'text' })).toBeNull();
    expect(responseFormatSpec({ type: 'json_object' })).toEqual({ kind: 'json', schema: null, param: 'response_format' });
    expect(responseFormatSpec({ type: 'json_schema', json_schema: { name: 'x', schema: { type: 'integer' }, strict: true } })).toEqual({ kind: 'json', schema: { type: 'integer' }, param: PARAM });
    const bad: [unknown, string][] = [
      [{ type: 'grammar' }, 'response_format.type'],
      [{ type: 'json_schema' }, 'response_format.json_schema'],
      [{ type: 'json_schema', json_schema: { name: 'x' } }, PARAM],
      [{ type: 'json_schema', json_schema: { name: 3, schema: {} } }, 'response_format.json_schema.name'],
      [{ type: 'json_schema', json_schema: { schema: {}, strict: 'yes' } }, 'response_format.json_schema.strict'],
    ];
    for (const [rf, param] of bad) expect(() => responseFormatSpec(rf)).toThrow(expect.objectContaining({ param }));
    const tools = [{ type: 'function', function: { name: 'a', parameters: { type: 'object' } } }, { type: 'function', function: { name: 'b' } }];
    expect(toolCallSpec(tools, null, true)).toMatchObject({ kind: 'tool_calls', multiple: true, tools: [{ name: 'a', param: 'tools[0].function.parameters' }, { name: 'b' }] });
    expect(toolCallSpec(tools, 'b', true)).toMatchObject({ multiple: false, tools: [{ name: 'b', parameters: undefined, param: 'tools[1].function.parameters' }] });
    expect(() => toolCallSpec(tools, 'zzz', true)).toThrow(expect.objectContaining({ param: 'tool_choice' }));
  });
});
