// The JSON schemas client libraries send, as they write them: zod 4's z.toJSONSchema (LangChain's
// withStructuredOutput, the AI SDK's generateObject) and pydantic v2's model_json_schema()
// (hand-written, as pydantic 2.x emits them). Each compiles in xgrammar and accepts exactly what
// it should: patterns, enforced formats, discriminated unions, propertyNames, uniqueItems, long
// strings, decimal bounds; what stays unsupported is a 400 naming the keyword and where it is.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { RequestError } from '../../src/engine/types.ts';
import { jsonSchemaGrammar } from '../../src/guided/json-schema-grammar.ts';
import { FORMAT_PATTERNS } from '../../src/guided/json-schema-formats.ts';
import { xgrammar } from '../../src/guided/xgrammar-wasm.ts';
import { guidedDecoding, randomWalk, schemaAccepts, tokenId } from './guided-helpers.ts';

const PARAM = 'response_format.json_schema.schema';

type Validate = ((data: unknown) => boolean) & { errors?: unknown };
const require = createRequire(import.meta.url);
const Ajv2020 = require('ajv/dist/2020').default as new (o: object) => { compile(schema: unknown): Validate };
const addFormats = require('ajv-formats').default as (ajv: unknown) => void;
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);

function accepts(schema: unknown, inputs: string[]): Promise<boolean[]> {
  return schemaAccepts(schema, inputs, PARAM);
}

/** Checks that each `good` string is accepted and each `bad` one rejected. */
async function expectLanguage(schema: unknown, good: string[], bad: string[]): Promise<void> {
  const ok = await accepts(schema, [...good, ...bad]);
  const wrong = [...good, ...bad].filter((s, i) => ok[i] !== i < good.length);
  expect(wrong, `${JSON.stringify(schema).slice(0, 120)}: misjudged`).toEqual([]);
}

function refusal(schema: unknown): string {
  try {
    jsonSchemaGrammar(schema, PARAM);
  } catch (e) {
    expect(e).toBeInstanceOf(RequestError);
    expect((e as RequestError).param).toBe(PARAM);
    return (e as RequestError).message;
  }
  throw new Error(`accepted ${JSON.stringify(schema)}`);
}

const Pet = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('cat'), lives: z.int().min(0).max(9) }),
  z.object({ kind: z.literal('dog'), breed: z.string().max(12) }),
]);

/**
 * A zod 4 model using what LangChain / AI SDK users commonly write. Random walks pick uniformly
 * among allowed tokens, so unbounded strings (z.email(), z.url()) would never end: those formats
 * are checked string by string below instead.
 */
const ZodModel = z.object({
  id: z.uuid(),
  day: z.iso.date(),
  ip: z.ipv4(),
  ip6: z.ipv6(),
  code: z.string().regex(/^[A-Z]{3}-\d{4}$/),
  sku: z.string().regex(/^[A-Z0-9-]+$/).min(3).max(12),
  tags: z.array(z.enum(['a', 'b', 'c'])).max(3),
  ratio: z.number().min(0.5).max(10.25),
  n: z.int(),
  small: z.int32(),
  pet: Pet,
  maybe: z.string().max(8).nullable(),
  opt: z.boolean().optional(),
  scores: z.record(z.enum(['x', 'y']), z.number()).optional(),
  pair: z.tuple([z.string().max(4), z.number()]),
  summary: z.string().min(1).max(100),
  kind: z.literal(3),
});

/**
 * pydantic v2 model_json_schema() of a model with UUID, date, IPv4Address, Decimal, constr, confloat,
 * set[Enum], a discriminated union, Optional, Literal (EmailStr, datetime, timedelta: checked as formats below).
 */
const pydanticModel = {
  $defs: {
    Cat: { properties: { pet_type: { const: 'cat', title: 'Pet Type', type: 'string' }, meows: { title: 'Meows', type: 'integer' } }, required: ['pet_type', 'meows'], title: 'Cat', type: 'object' },
    Dog: { properties: { pet_type: { const: 'dog', title: 'Pet Type', type: 'string' }, barks: { title: 'Barks', type: 'number' } }, required: ['pet_type', 'barks'], title: 'Dog', type: 'object' },
    Color: { enum: ['red', 'green', 'blue'], title: 'Color', type: 'string' },
  },
  properties: {
    uid: { format: 'uuid', title: 'Uid', type: 'string' },
    on: { format: 'date', title: 'On', type: 'string' },
    host: { format: 'ipv4', title: 'Host', type: 'string' },
    price: { anyOf: [{ type: 'number' }, { pattern: '^(?!^[-+.]*$)[+-]?0*\\d*\\.?\\d*$', type: 'string' }], title: 'Price' },
    sku: { maxLength: 40, minLength: 3, pattern: '^[A-Z0-9-]+$', title: 'Sku', type: 'string' },
    weight: { exclusiveMinimum: 0, maximum: 99.5, title: 'Weight', type: 'number' },
    colors: { items: { $ref: '#/$defs/Color' }, title: 'Colors', type: 'array', uniqueItems: true },
    pet: { discriminator: { mapping: { cat: '#/$defs/Cat', dog: '#/$defs/Dog' }, propertyName: 'pet_type' }, oneOf: [{ $ref: '#/$defs/Cat' }, { $ref: '#/$defs/Dog' }], title: 'Pet' },
    note: { anyOf: [{ maxLength: 10, type: 'string' }, { type: 'null' }], default: null, title: 'Note' },
    mode: { enum: ['fast', 'slow'], title: 'Mode', type: 'string', default: 'fast' },
  },
  required: ['uid', 'on', 'host', 'price', 'sku', 'weight', 'colors', 'pet'],
  title: 'Order',
  type: 'object',
};

describe('schemas from client libraries', () => {
  /** Six seeded random walks of the schema's grammar; each complete one must pass ajv (with formats) and `check`; at least 3 complete. */
  async function walksValidate(schema: Record<string, unknown>, check: (value: Record<string, unknown>, text: string) => void) {
    const validate = ajv.compile(schema);
    const compiled = await guidedDecoding().compile({ kind: 'json', schema, param: PARAM });
    let complete = 0;
    for (let seed = 1; seed <= 6; seed++) {
      const guide = await compiled.createGuide();
      const walk = await randomWalk(guide, seed, 1500, 0.9);
      guide.dispose();
      if (!walk.complete) continue;
      complete++;
      const value = JSON.parse(walk.text) as Record<string, unknown>;
      if (!validate(value)) throw new Error(`${walk.text}: ajv ${JSON.stringify(validate.errors)}`);
      check(value, walk.text);
    }
    expect(complete).toBeGreaterThanOrEqual(3);
  }

  it('zod 4 (z.toJSONSchema) compiles, and random walks over the real vocabulary satisfy zod and ajv-formats', async () => {
    await walksValidate(z.toJSONSchema(ZodModel) as Record<string, unknown>, (value, text) => {
      const parsed = ZodModel.safeParse(value);
      if (!parsed.success) throw new Error(`${text}: zod ${parsed.error.message}`);
    });
  }, 120_000);

  it('pydantic v2 (model_json_schema) compiles, and random walks satisfy it with formats checked', async () => {
    await walksValidate(pydanticModel, (value) => {
      // The Decimal branch's regex (with its lookahead) holds too.
      if (typeof value.price === 'string') expect(value.price).toMatch(/^(?!^[-+.]*$)[+-]?0*\d*\.?\d*$/);
    });
  }, 120_000);

  it('patterns: unanchored unless anchored, classes, escapes, quantifiers, groups, alternation, JSON escaping', async () => {
    await expectLanguage({ type: 'string', pattern: 'abc' }, ['"abc"', '"xxabcyy"', '"a\\nabc"'], ['"ab"', '"acb"']);
    await expectLanguage({ type: 'string', pattern: '^ab' }, ['"ab"', '"abzz"'], ['"zab"']);
    await expectLanguage({ type: 'string', pattern: 'ab$' }, ['"ab"', '"zzab"'], ['"abz"']);
    await expectLanguage({ type: 'string', pattern: '^[a-z]+\\d{2,3}$' }, ['"abc12"', '"x123"'], ['"abc1"', '"ABC12"', '"abc1234"']);
    await expectLanguage({ type: 'string', pattern: '^(?<y>\\d{4})-(?:0[1-9]|1[0-2])$|^x$' }, ['"2024-01"', '"x"'], ['"2024-13"', '"xx"']);
    await expectLanguage({ type: 'string', pattern: '^\\w\\s\\W\\S?$' }, ['"a !"', '"_\\t-x"'], ['"a!!"', '"aa!"']);
    await expectLanguage({ type: 'string', pattern: '^a"b\\\\c$' }, ['"a\\"b\\\\c"'], ['"a"b\\c"', '"a\\u0022b\\\\c"']);
    await expectLanguage({ type: 'string', pattern: '^[^a]$' }, ['"b"', '"\\""', '"\\n"'], ['"a"', '"bb"']);
    await expectLanguage({ type: 'string', pattern: '^.$' }, ['"b"', '"\\t"'], ['"\\n"', '"\\r"']);
    await expectLanguage({ type: 'string', pattern: '^\\x41\\u0042[\\-.]?$' }, ['"AB"', '"AB-"', '"AB."'], ['"AB,"']);
    await expectLanguage({ type: 'string', pattern: '^(ab)*?c{2}$' }, ['"cc"', '"ababcc"'], ['"abc"', '"abacc"']);
  });

  it('non-ASCII classes, over the real vocabulary (the string checker above takes ASCII only)', async () => {
    const allowedAfterQuote = async (pattern: string, text: string): Promise<boolean> => {
      const guide = await (await guidedDecoding().compile({ kind: 'json', schema: { type: 'string', pattern }, param: PARAM })).createGuide();
      const row = new Uint32Array(guidedDecoding().maskWords);
      expect(guide.accept(tokenId('"'))).toBe(true);
      await guide.next(row);
      const id = tokenId(text);
      const ok = ((row[id >>> 5] >>> (id & 31)) & 1) === 1;
      guide.dispose();
      return ok;
    };
    expect(await allowedAfterQuote('^[à-ÿ]$', 'é')).toBe(true);
    expect(await allowedAfterQuote('^[à-ÿ]$', 'a')).toBe(false);
    expect(await allowedAfterQuote('^\\S$', 'é')).toBe(true);
    expect(await allowedAfterQuote('^\\S$', ' ')).toBe(false);
    expect(await allowedAfterQuote('^[^\\u00a0]$', 'é')).toBe(true);
    expect(await allowedAfterQuote('^.$', 'é')).toBe(true);
    expect(await allowedAfterQuote('^\\w$', 'é')).toBe(false);
    expect(await allowedAfterQuote('^[ā-ž]$', 'ž')).toBe(true);
    expect(await allowedAfterQuote('^[^a]$', '😀')).toBe(true);
    expect(await allowedAfterQuote('^\\S$', '😀')).toBe(false); // positive classes stop at U+FFFF: a subset
  }, 60_000);

  it('formats: enforced, each generating what ajv-formats and zod accept', async () => {
    const cases: [string, string[], string[]][] = [
      ['email', ['a.b+c@ex-ample.com', 'x_1@a.io'], ['a..b@x.com', '.a@x.com', 'a@x', 'a@-x.com']],
      ['uuid', ['123e4567-e89b-42d3-a456-426614174000'], ['123e4567-e89b-42d3-a456-42661417400', '123e4567e89b42d3a456426614174000']],
      ['date-time', ['2024-02-28T12:30:00Z', '2024-12-31T23:59:59.123+05:30'], ['2024-02-30T12:30:00Z', '2024-01-01T24:00:00Z', '2024-01-01 12:00:00Z']],
      ['date', ['2024-01-31', '1999-11-30'], ['2024-04-31', '2024-13-01', '24-01-01']],
      ['time', ['12:00:00Z', '23:59:59.5-08:00'], ['12:00:00', '12:60:00Z']],
      ['ipv4', ['192.168.0.1', '0.0.0.0'], ['256.1.1.1', '01.1.1.1', '1.2.3']],
      ['ipv6', ['::1', 'fe80::1:2', '1:2:3:4:5:6:7:8', '::'], [':::', '1:2:3:4:5:6:7:8:9', '12345::']],
      ['uri', ['https://example.com/a/b?x=1#f', 'http://a.b:8080', 'https://x.org/%20'], ['ftp://x', 'https://', 'https://a b']],
      ['hostname', ['a.example-1.com'], ['-a.com', 'a..b']],
      ['duration', ['P1D', 'PT1H30M', 'P1Y2M3DT4S', 'P2W'], ['P', 'PT', 'P1H']],
    ];
    for (const [format, good, bad] of cases) {
      await expectLanguage({ type: 'string', format }, good.map((s) => JSON.stringify(s)), bad.map((s) => JSON.stringify(s)));
      const check = ajv.compile({ type: 'string', format });
      for (const s of good) expect(check(s), `${format} ${s}`).toBe(true);
    }
    // What each format generates is a subset of zod 4's own regex for it.
    const zodOf: Record<string, z.ZodType> = { email: z.email(), uuid: z.uuid(), ipv4: z.ipv4(), ipv6: z.ipv6(), date: z.iso.date(), 'date-time': z.iso.datetime({ offset: true }), duration: z.iso.duration(), uri: z.url() };
    for (const [format, good] of cases) if (zodOf[format]) for (const s of good) expect(zodOf[format].safeParse(s).success, `${format} ${s}`).toBe(true);
    expect(Object.keys(FORMAT_PATTERNS).sort()).toEqual(['date', 'date-time', 'duration', 'email', 'hostname', 'ipv4', 'ipv6', 'time', 'uri', 'uuid']);
    // Formats we do not know stay annotations, as before.
    await expectLanguage({ type: 'string', format: 'password' }, ['"anything"'], []);
  });

  it('format beside pattern: the pattern wins, and a lookaround pattern naming a known format gives the format', async () => {
    // zod < 4.2 wrote this email regex (with lookaheads) beside format 'email'.
    const oldZodEmail = "^(?!\\.)(?!.*\\.\\.)([A-Za-z0-9_'+\\-\\.]*)[A-Za-z0-9_+-]@([A-Za-z0-9][A-Za-z0-9\\-]*\\.)+[A-Za-z]{2,}$";
    await expectLanguage({ type: 'string', format: 'email', pattern: oldZodEmail }, ['"a.b@x.io"'], ['"a..b@x.io"']);
    await expectLanguage({ type: 'string', format: 'date-time', pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}Z$' }, ['"2024-99-99T99:99:99Z"'], ['"2024-01-01T00:00:00+01:00"']);
  });

  it('oneOf of objects told apart by a const property (z.discriminatedUnion, pydantic discriminators)', async () => {
    const schema = z.toJSONSchema(Pet);
    await expectLanguage(schema, ['{"kind": "cat", "lives": 9}', '{"kind": "dog", "breed": "lab"}'], ['{"kind": "cat", "breed": "lab"}', '{"kind": "fox", "lives": 1}']);
    expect(refusal({ oneOf: [{ type: 'object', properties: { a: { type: 'integer' } } }, { type: 'object', properties: { b: { type: 'integer' } } }] })).toContain("schema at '/oneOf' has branches that can match the same value (0, 1)");
    // An optional discriminator does not tell branches apart.
    expect(refusal({ oneOf: [{ type: 'object', properties: { k: { const: 'a' } }, required: [] }, { type: 'object', properties: { k: { const: 'b' } }, required: ['k'] }] })).toContain('can match the same value');
  });

  it('propertyNames: keys constrained (pattern, enum, maxLength, format), declared properties checked', async () => {
    await expectLanguage({ type: 'object', propertyNames: { pattern: '^[a-z]+$' }, additionalProperties: { type: 'integer' } }, ['{"ab": 1}', '{}'], ['{"A": 1}', '{"ab": "x"}']);
    await expectLanguage({ type: 'object', propertyNames: { enum: ['x', 'y'] }, additionalProperties: { type: 'boolean' } }, ['{"x": true, "y": false}'], ['{"z": true}']);
    await expectLanguage({ type: 'object', propertyNames: { maxLength: 2 } }, ['{"ab": [1]}'], ['{"abc": 1}']);
    await expectLanguage({ type: 'object', propertyNames: { format: 'uuid' }, additionalProperties: { type: 'null' } }, ['{"123e4567-e89b-42d3-a456-426614174000": null}'], ['{"x": null}']);
    expect(refusal({ type: 'object', properties: { Big: { type: 'integer' } }, propertyNames: { pattern: '^[a-z]+$' } })).toContain("schema at '/propertyNames' does not allow the property 'Big'");
    expect(refusal({ type: 'object', propertyNames: { type: 'integer' } })).toContain("schema at '/propertyNames' allows no property name");
  });

  it('uniqueItems: enforced over enums, consts and booleans (values in schema order); refused elsewhere', async () => {
    await expectLanguage({ type: 'array', items: { enum: ['a', 'b', 'c'] }, uniqueItems: true }, ['[]', '["a"]', '["a", "c"]', '["a", "b", "c"]'], ['["a", "a"]', '["c", "a"]', '["d"]']);
    await expectLanguage({ type: 'array', items: { enum: ['a', 'b', 'c'] }, uniqueItems: true, minItems: 2, maxItems: 2 }, ['["a", "c"]', '["b", "c"]'], ['["a"]', '["a", "b", "c"]']);
    await expectLanguage({ type: 'array', items: { type: 'boolean' }, uniqueItems: true, minItems: 1 }, ['[true]', '[true, false]', '[false]'], ['[]', '[true, true]']);
    await expectLanguage({ type: 'array', items: { type: 'string' }, uniqueItems: true, maxItems: 1 }, ['[]', '["x"]'], ['["x", "y"]']);
    expect(refusal({ type: 'array', items: { type: 'string' }, uniqueItems: true })).toContain("schema at '/uniqueItems' is not supported unless the items are a finite set");
    expect(refusal({ type: 'array', items: { enum: Array.from({ length: 17 }, (_, i) => i) }, uniqueItems: true })).toContain('over more than 16 values');
    expect(refusal({ type: 'array', items: { enum: [1, 2] }, uniqueItems: true, minItems: 3 })).toContain('needs 3 distinct items');
  });

  it('string lengths up to 128, and lengths beside a pattern or format when implied by it', async () => {
    await expectLanguage({ type: 'string', minLength: 40, maxLength: 100 }, [`"${'a'.repeat(40)}"`, `"${'é'.repeat(100)}"`], [`"${'a'.repeat(39)}"`, `"${'a'.repeat(101)}"`]);
    expect(refusal({ type: 'string', maxLength: 129 })).toContain("schema at '/maxLength' is above 128");
    await expectLanguage({ type: 'string', format: 'uuid', minLength: 36, maxLength: 36 }, ['"123e4567-e89b-42d3-a456-426614174000"'], []);
    // A pattern that is one class repeated takes length bounds (pydantic constr, zod .regex().min().max()).
    await expectLanguage({ type: 'string', pattern: '^[A-Z0-9-]+$', minLength: 3, maxLength: 5 }, ['"AB-"', '"A1B2C"'], ['"AB"', '"ABCDEF"', '"abc"']);
    expect(refusal({ type: 'string', format: 'uri', maxLength: 2083 })).toContain("schema at '/maxLength' combines 'maxLength' with 'format'");
    expect(refusal({ type: 'string', pattern: '^ab+$', minLength: 3 })).toContain("schema at '/minLength' combines 'minLength' with 'pattern'");
  });

  it('decimal bounds compare exactly', async () => {
    await expectLanguage({ type: 'number', minimum: 0.5, maximum: 10.25 }, ['0.5', '1', '10.25', '10.2', '0.75', '10', '10.250', '0.50001'], ['0.49', '10.26', '10.251', '0.4999', '11', '-1', '1e1']);
    await expectLanguage({ type: 'number', exclusiveMinimum: -1.5, exclusiveMaximum: 2.5 }, ['-1.4', '0', '-1', '2.4999', '-0.5', '-1.49999'], ['-1.5', '2.5', '-1.50', '2.50', '-2', '3']);
    await expectLanguage({ type: 'number', minimum: -0.25, maximum: 0 }, ['0', '-0.25', '-0.1', '0.0'], ['-0.26', '0.1', '-0']);
    await expectLanguage({ type: 'number', exclusiveMinimum: 0.1 }, ['0.11', '5', '123456.7'], ['0.1', '0.1000', '0.09', '0']);
    await expectLanguage({ type: 'number', maximum: 1e-7 }, ['0.0000001', '-3', '0'], ['0.00000011', '1']);
    expect(refusal({ type: 'number', minimum: 1e-20 })).toContain("schema at '/minimum' has more than 15 fraction digits");
  });

  it('what stays refused names the keyword and where it is', () => {
    const cases: [unknown, string][] = [
      [{ type: 'string', pattern: '^(?=a)' }, "schema at '/pattern' uses a lookahead '(?='"],
      [{ type: 'string', pattern: '(?<!a)b' }, "schema at '/pattern' uses a lookbehind '(?<!'"],
      [{ type: 'object', properties: { a: { type: 'string', pattern: '(a)\\1' } } }, "schema at '/properties/a/pattern' uses a backreference '\\1'"],
      [{ type: 'string', pattern: '\\bword' }, "uses the word boundary '\\b'"],
      [{ type: 'string', pattern: '\\p{L}+' }, "uses the Unicode property escape '\\p{...}'"],
      [{ type: 'string', pattern: 'a^b' }, "uses the anchor '^' inside the pattern"],
      [{ type: 'string', pattern: 'a{1,500}' }, 'bounded repetition above 64'],
      [{ type: 'string', pattern: '(a' }, "has an unterminated '('"],
      [{ type: 'integer', multipleOf: 3 }, "uses 'multipleOf'"],
      [{ not: { type: 'string' } }, "uses 'not'"],
      [{ allOf: [{ type: 'object' }, { type: 'object' }] }, 'exactly one subschema'],
      [{ type: 'object', patternProperties: { '^x': {} } }, "uses 'patternProperties'"],
      [{ type: 'object', minProperties: 1 }, "uses 'minProperties'"],
      [{ type: 'array', contains: { type: 'integer' } }, "uses 'contains'"],
      [{ if: { type: 'string' }, then: {} }, "uses 'if'"],
    ];
    for (const [schema, message] of cases) expect(refusal(schema)).toContain(message);
  });
});
