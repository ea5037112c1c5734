// JSON Schema → xgrammar EBNF, for the subset whose every output we can guarantee valid; anything
// else is refused with a RequestError naming the parameter and the schema path.
//
// Why our own converter rather than xgrammar's (web-xgrammar 0.1.27): its converter lets raw
// control characters into length-bounded strings, lets unescaped quotes into `pattern` strings,
// writes fractional bounds with an unescaped "." (so "0x5" passes for minimum 0.5), ignores required
// properties missing from `properties`, and aborts the WASM instance on a `false` subschema. xgrammar
// stays the engine that turns the grammar into token masks.
//
// Output shape: compact JSON with ", " and ": " separators (Python's json.dumps default, the form
// Qwen3 writes tool calls in), properties in schema order. Strict: an object with `properties` gets
// only those (as OpenAI's strict mode), optional ones may be left out. Numbers have at most 15
// integer digits and 15 fraction digits; bounded numbers have integral bounds and no exponent.
import { RequestError } from '../engine/types.ts';
import { alt, lit, repeat, seq } from './ebnf.ts';
import { FORMAT_PATTERNS, INTEGER_FORMAT_BOUNDS, KNOWN_PATTERNS } from './json-schema-formats.ts';
import { PatternError, patternGrammar } from './json-schema-pattern.ts';
import { decimalRange, integerRange, numberRange, toDecimal, UNBOUNDED_INTEGER, UNBOUNDED_NUMBER, type Bound } from './number-ranges.ts';

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Keywords that only describe; they never constrain what we generate. */
const ANNOTATIONS = new Set([
  'title', 'description', 'default', 'examples', 'example', '$schema', '$id', '$comment', 'deprecated', 'readOnly',
  'writeOnly', 'contentEncoding', 'contentMediaType', 'discriminator', 'strict', '$anchor',
  // OpenAPI's nullable: true only widens; generating non-null values stays valid.
  'nullable',
]);
const CONSTRAINTS = new Set([
  'type', 'properties', 'required', 'additionalProperties', 'items', 'prefixItems', 'minItems', 'maxItems', 'minLength',
  'maxLength', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'enum', 'const', 'anyOf', 'oneOf', 'allOf',
  '$ref', '$defs', 'definitions', 'unevaluatedProperties', 'uniqueItems', 'pattern', 'format', 'propertyNames',
]);
const TYPES = ['string', 'number', 'integer', 'boolean', 'null', 'object', 'array'] as const;
type JsonType = (typeof TYPES)[number];

/** xgrammar compiles about 10 ms of rules per subschema over this vocabulary, on the JS thread. */
const MAX_SCHEMA_NODES = 500;
const MAX_DEPTH = 32;
/**
 * Each bound on a string's length costs a grammar rule per character, and xgrammar precomputes
 * every rule over the whole vocabulary (15-40 ms each in WASM), so bounds stay moderate. (xgrammar's
 * own {n,m} repetition is no cheaper: [^"]{0,500} compiles in ~10 s and its masks cost ~1-20 ms.)
 */
export const MAX_LENGTH_BOUND = 128;
/** uniqueItems over a finite set of values: the most values (their arrays are written in schema order). */
export const MAX_UNIQUE_VALUES = 16;
const CHAR = '[^\\0-\\x1f"\\\\]';
const LOOKAHEAD = ' (= [,}\\]:])';
const MAX_ITEMS_BOUND = 1000;
/**
 * Enum and const values in one grammar (all tools' schemas together). Each is an alternative that
 * xgrammar compiles over the vocabulary: 4,096 compile in about 0.15 s, 60,000 in about 6 s of the
 * grammar worker, which every other guided request waits for. OpenAI's structured outputs allow
 * 1,000 enum values per schema; this is four times that.
 */
export const MAX_ENUM_VALUES = 4096;

/** JSON text of a value with the grammar's separators. */
export function compactJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(compactJson).join(', ')}]`;
  if (isObject(v)) return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${compactJson(x)}`).join(', ')}}`;
  return JSON.stringify(v);
}

function typeOfValue(v: unknown): JsonType {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v as JsonType;
}

/** Builds one grammar; several schemas (e.g. one per tool) may share it. */
export class GrammarBuilder {
  private readonly rules = new Map<string, string>();
  private readonly refRules = new Map<unknown, Map<string, string>>();
  private nodes = 0;
  private enumValues = 0;

  /** Adds `name ::= body` (name made unique) and returns the name. */
  rule(hint: string, body: string): string {
    const name = this.reserve(hint);
    this.rules.set(name, body);
    return name;
  }

  private reserve(hint: string): string {
    const base = hint.replace(/[^A-Za-z0-9_]/g, '_') || 'r';
    let name = base;
    for (let i = 1; this.rules.has(name); i++) name = `${base}_${i}`;
    this.rules.set(name, '');
    return name;
  }

  /** A shared rule, defined once. */
  private basic(name: string, body: () => string): string {
    if (!this.rules.has(name)) this.rules.set(name, body());
    return name;
  }

  /**
   * A JSON string. Written as right recursion ending in a lookahead (a string inside a container is
   * always followed by one of , } ] : in compact JSON): that form lets xgrammar precompute the masks
   * inside strings; a `char*` form costs over 100 ms per token over this vocabulary. A string at the
   * root has nothing after it, hence no lookahead.
   */
  string(nested: boolean): string {
    const rest = this.stringRest(nested);
    return this.basic(nested ? 'json_string' : 'json_string_root', () => `"\\"" ${rest}`);
  }

  /** A string's characters after the opening quote, and the closing quote. */
  private stringRest(nested: boolean): string {
    const esc = this.escape;
    const rest = nested ? 'json_string_rest' : 'json_string_rest_root';
    return this.basic(rest, () => `("\\"" | ${CHAR} ${rest} | "\\\\" ${esc} ${rest})${nested ? LOOKAHEAD : ''}`);
  }

  /** A JSON string of min..max characters (an escape counts as one), max finite or Infinity. */
  boundedString(min: number, max: number, nested: boolean, char?: { ebnf: string; key: string }): string {
    const esc = this.escape;
    const suffix = (nested ? '' : '_root') + (char ? `_${char.key}` : '');
    const la = nested ? LOOKAHEAD : '';
    // One character then `next`: any string character, or one of `char` (a pattern's class).
    const one = (next: string) => (char ? `(${char.ebnf}) ${next}` : `${CHAR} ${next} | "\\\\" ${esc} ${next}`);
    // upTo(k): at most k more characters, then the closing quote.
    const upTo = (k: number): string => {
      if (k === Infinity) {
        if (!char) return this.stringRest(nested);
        return this.basic(`str_rest${suffix}`, () => `("\\"" | ${one(`str_rest${suffix}`)})${la}`);
      }
      for (let i = 0; i <= k; i++) {
        const prev = `str_upto_${i - 1}${suffix}`;
        this.basic(`str_upto_${i}${suffix}`, () => (i === 0 ? `"\\""${la}` : `("\\"" | ${one(prev)})${la}`));
      }
      return `str_upto_${k}${suffix}`;
    };
    const tail = upTo(max - min);
    let rest = tail;
    for (let i = 1; i <= min; i++) {
      const prev = rest;
      rest = this.basic(`str_min_${i}_${tail}`, () => `(${one(prev)})`);
    }
    return `("\\"" ${rest})`;
  }

  /** Escapes; \u escapes of UTF-16 surrogates are left out (they would not count as one character). */
  private get escape(): string {
    const hex = '[0-9a-fA-F]';
    return this.basic('json_escape', () => `["\\\\/bfnrt] | "u" ([0-9a-cA-Ce-fE-F] ${hex} ${hex} ${hex} | [dD] [0-7] ${hex} ${hex})`);
  }

  /** Any one character of a string's JSON text. */
  get anyChar(): string {
    const esc = this.escape;
    return this.basic('json_char', () => `${CHAR} | "\\\\" (${esc})`);
  }

  /** A string whose text between the quotes is `body` (a pattern or format). */
  patternString(body: string, nested: boolean): string {
    return this.rule('pattern_string', `("\\"" ${body} "\\"")${nested ? LOOKAHEAD : ''}`);
  }

  private readonly classKeys = new Map<string, string>();
  /** A short name for a character class's EBNF (rule names must differ per class). */
  classKey(ebnf: string): string {
    let key = this.classKeys.get(ebnf);
    if (key === undefined) this.classKeys.set(ebnf, (key = `c${this.classKeys.size}`));
    return key;
  }

  /** Any JSON value (nested: inside a container). */
  value(nested: boolean): string {
    const name = nested ? 'json_value' : 'json_value_root';
    if (!this.rules.has(name)) {
      this.rules.set(name, '');
      const s = this.string(true);
      const number = this.basic('json_number', () => UNBOUNDED_NUMBER);
      const obj = this.basic('json_object', () => `"{" (${s} ": " json_value (", " ${s} ": " json_value)*)? "}"`);
      const arr = this.basic('json_array', () => '"[" (json_value (", " json_value)*)? "]"');
      this.rules.set(name, `${obj} | ${arr} | ${this.string(nested)} | ${number} | "true" | "false" | "null"`);
      if (!nested) void this.value(true);
    }
    return name;
  }

  /** Any JSON object. */
  get object(): string {
    void this.value(true);
    return 'json_object';
  }

  /** A rule matching JSON text valid against `schema`; `param` names the request field for errors. */
  schema(schema: unknown, param: string, nested: boolean): string {
    return new SchemaConverter(this, schema, param).root(nested);
  }

  refRule(doc: unknown, pointer: string, make: (name: string) => string): string {
    let byPointer = this.refRules.get(doc);
    if (!byPointer) this.refRules.set(doc, (byPointer = new Map()));
    const known = byPointer.get(pointer);
    if (known) return known;
    const name = this.reserve(`ref_${pointer.split('/').pop() ?? 'root'}`);
    byPointer.set(pointer, name);
    this.rules.set(name, make(name));
    return name;
  }

  countNode(fail: () => never): void {
    if (++this.nodes > MAX_SCHEMA_NODES) fail();
  }

  countEnumValues(n: number, fail: () => never): void {
    this.enumValues += n;
    if (this.enumValues > MAX_ENUM_VALUES) fail();
  }

  /** The grammar text, `root` being the start rule's body. */
  build(root: string): string {
    const lines = [`root ::= ${root}`];
    for (const [name, body] of this.rules) lines.push(`${name} ::= ${body}`);
    return `${lines.join('\n')}\n`;
  }
}

class SchemaConverter {
  constructor(
    private readonly g: GrammarBuilder,
    private readonly doc: unknown,
    private readonly param: string,
  ) {}

  root(nested: boolean): string {
    return this.node(this.doc, '', nested);
  }

  private fail(path: string, message: string): never {
    throw new RequestError(`${this.param}: ${path === '' ? 'the schema' : `schema at '${path}'`} ${message}`, this.param);
  }

  private depth = 0;

  private node(s: unknown, path: string, nested: boolean): string {
    this.g.countNode(() => this.fail(path, `makes the constraint too large for guided decoding (more than ${MAX_SCHEMA_NODES} subschemas)`));
    if (this.depth >= MAX_DEPTH) this.fail(path, `is nested too deeply (more than ${MAX_DEPTH} levels)`);
    this.depth++;
    try {
      return this.nodeInner(s, path, nested);
    } finally {
      this.depth--;
    }
  }

  private nodeInner(s: unknown, path: string, nested: boolean): string {
    if (s === true) return this.g.value(nested);
    if (s === false) this.fail(path, 'is false: no value can satisfy it');
    if (!isObject(s)) this.fail(path, 'must be an object or a boolean');
    for (const key of Object.keys(s)) {
      if (!ANNOTATIONS.has(key) && !CONSTRAINTS.has(key) && !key.startsWith('x-')) {
        this.fail(path, `uses '${key}', which guided decoding does not support`);
      }
    }
    if (s.unevaluatedProperties !== undefined && s.unevaluatedProperties !== false) {
      this.fail(path, "uses 'unevaluatedProperties' other than false, which guided decoding does not support");
    }
    const constraints = Object.keys(s).filter((k) => CONSTRAINTS.has(k) && !['$defs', 'definitions', 'uniqueItems', 'unevaluatedProperties'].includes(k));
    if (s.uniqueItems !== undefined && typeof s.uniqueItems !== 'boolean') this.fail(`${path}/uniqueItems`, 'must be a boolean');
    const only = (key: string, allowed: string[] = []) => {
      const others = constraints.filter((k) => k !== key && !allowed.includes(k));
      if (others.length > 0) this.fail(path, `combines '${key}' with '${others.join("', '")}', which guided decoding does not support`);
    };
    if (s.$ref !== undefined) {
      only('$ref');
      return this.ref(s.$ref, `${path}/$ref`, nested);
    }
    if (s.enum !== undefined || s.const !== undefined) {
      const key = s.enum !== undefined ? 'enum' : 'const';
      only(key, ['type']);
      if (key === 'enum' && (!Array.isArray(s.enum) || s.enum.length === 0)) this.fail(`${path}/enum`, 'must be a non-empty array');
      const values = key === 'enum' ? (s.enum as unknown[]) : [s.const];
      this.g.countEnumValues(values.length, () =>
        this.fail(`${path}/${key}`, `makes the constraint too large for guided decoding (more than ${MAX_ENUM_VALUES} enum and const values in all)`),
      );
      const types = s.type === undefined ? null : this.types(s.type, path);
      const kept = values.filter((v) => types === null || types.includes(typeOfValue(v)) || (typeOfValue(v) === 'integer' && types.includes('number')));
      if (kept.length === 0) this.fail(path, `has no ${key} value of the allowed type`);
      return alt(kept.map((v) => lit(compactJson(v))));
    }
    if (s.anyOf !== undefined || s.oneOf !== undefined) {
      const key = s.anyOf !== undefined ? 'anyOf' : 'oneOf';
      only(key);
      const branches = s[key];
      if (!Array.isArray(branches) || branches.length === 0) this.fail(`${path}/${key}`, 'must be a non-empty array');
      if (key === 'oneOf') this.checkDisjoint(branches, `${path}/oneOf`);
      return alt(branches.map((b, i) => this.node(b, `${path}/${key}/${i}`, nested)));
    }
    if (s.allOf !== undefined) {
      only('allOf');
      if (!Array.isArray(s.allOf) || s.allOf.length !== 1) this.fail(`${path}/allOf`, 'must have exactly one subschema (intersections are not supported)');
      return this.node(s.allOf[0], `${path}/allOf/0`, nested);
    }
    const types = s.type === undefined ? this.inferTypes(s) : this.types(s.type, path);
    if (types === null) return this.g.value(nested);
    return alt(types.map((t) => this.typed(s, t, path, nested)));
  }

  private types(type: unknown, path: string): JsonType[] {
    const list = Array.isArray(type) ? type : [type];
    if (list.length === 0) this.fail(`${path}/type`, 'must not be empty');
    for (const t of list) {
      if (!TYPES.includes(t as JsonType)) this.fail(`${path}/type`, `has unknown type ${JSON.stringify(t)}`);
    }
    return [...new Set(list as JsonType[])];
  }

  /** The types a schema without 'type' constrains (null: none, any value). */
  private inferTypes(s: Json): JsonType[] | null {
    const has = (...keys: string[]) => keys.some((k) => s[k] !== undefined);
    const types: JsonType[] = [];
    if (has('properties', 'required', 'additionalProperties', 'propertyNames')) types.push('object');
    if (has('items', 'prefixItems', 'minItems', 'maxItems') || s.uniqueItems === true) types.push('array');
    if (has('minLength', 'maxLength', 'pattern', 'format')) types.push('string');
    if (has('minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum')) types.push('number');
    return types.length > 0 ? types : null;
  }

  /** The JSON types a schema can produce, or null when that is not plain to see. */
  private producedTypes(s: unknown, depth = 0): Set<JsonType> | null {
    if (!isObject(s) || depth > 20) return null;
    if (typeof s.$ref === 'string') return this.producedTypes(this.resolve(s.$ref, ''), depth + 1);
    if (s.const !== undefined) return new Set([typeOfValue(s.const)]);
    if (Array.isArray(s.enum)) return new Set(s.enum.map(typeOfValue));
    if (s.type === undefined) return null;
    const list = (Array.isArray(s.type) ? s.type : [s.type]) as JsonType[];
    return new Set(list);
  }

  /** The schema a $ref chain ends at (as written, when it is not a plain reference). */
  private deref(s: unknown, depth = 0): unknown {
    return isObject(s) && typeof s.$ref === 'string' && depth < 20 ? this.deref(this.resolve(s.$ref, ''), depth + 1) : s;
  }

  /**
   * The values a required property's const/enum allows, per object branch: a discriminator that
   * tells the branches apart (z.discriminatedUnion, pydantic's discriminated unions).
   */
  private discriminated(branches: unknown[]): boolean {
    const objects = branches.map((b) => this.deref(b));
    if (!objects.every((o) => isObject(o) && isObject(o.properties) && Array.isArray(o.required))) return false;
    const first = objects[0] as Json;
    const valuesOf = (o: Json, name: string): unknown[] | null => {
      if (!(o.required as unknown[]).includes(name)) return null;
      const p = this.deref((o.properties as Json)[name]);
      if (!isObject(p)) return null;
      if (p.const !== undefined) return [p.const];
      return Array.isArray(p.enum) ? p.enum : null;
    };
    return Object.keys(first.properties as Json).some((name) => {
      const seen = new Set<string>();
      for (const o of objects) {
        const values = valuesOf(o as Json, name);
        if (values === null) return false;
        for (const v of values) {
          const key = compactJson(v);
          if (seen.has(key)) return false;
          seen.add(key);
        }
      }
      return true;
    });
  }

  /**
   * oneOf is generated as anyOf: allowed only where no value can match two branches: branches of
   * distinct types, and object branches told apart by a required const (or enum) property.
   */
  private checkDisjoint(branches: unknown[], path: string): void {
    const byType = new Map<JsonType, number[]>();
    branches.forEach((b, i) => {
      const types = this.producedTypes(b);
      if (types === null) this.fail(`${path}/${i}`, "needs a 'type', 'enum' or 'const' (oneOf branches must be told apart by type or by a const property)");
      for (const t of types) {
        const key = t === 'integer' ? 'number' : t;
        byType.set(key, [...(byType.get(key) ?? []), i]);
      }
    });
    for (const [type, indices] of byType) {
      if (indices.length < 2) continue;
      if (type === 'object' && this.discriminated(indices.map((i) => branches[i]))) continue;
      this.fail(path, `has branches that can match the same value (${indices.map((i) => `${i}`).join(', ')}): oneOf needs branches of distinct types, or objects told apart by a required property's const`);
    }
  }

  private resolve(ref: unknown, path: string): unknown {
    if (typeof ref !== 'string' || !ref.startsWith('#')) this.fail(path, `must be a local reference ("#/..."), got ${JSON.stringify(ref)}`);
    const pointer = decodeURIComponent(ref.slice(1));
    if (pointer === '') return this.doc;
    if (!pointer.startsWith('/')) this.fail(path, `is not a JSON pointer: ${JSON.stringify(ref)}`);
    let at: unknown = this.doc;
    for (const raw of pointer.slice(1).split('/')) {
      const part = raw.replace(/~1/g, '/').replace(/~0/g, '~');
      if (!isObject(at) && !Array.isArray(at)) this.fail(path, `points nowhere: ${JSON.stringify(ref)}`);
      at = (at as Json)[part];
      if (at === undefined) this.fail(path, `points nowhere: ${JSON.stringify(ref)}`);
    }
    return at;
  }

  private ref(ref: unknown, path: string, nested: boolean): string {
    const target = this.resolve(ref, path);
    // Rules made for references are nested ones; a reference at the root is inlined.
    if (!nested) return this.node(target, (ref as string).slice(1), false);
    return this.g.refRule(this.doc, ref as string, () => this.node(target, (ref as string).slice(1), true));
  }

  private typed(s: Json, t: JsonType, path: string, nested: boolean): string {
    switch (t) {
      case 'string':
        return this.stringType(s, path, nested);
      case 'integer':
        return this.integerType(s, path);
      case 'number':
        return this.numberType(s, path);
      case 'boolean':
        return '("true" | "false")';
      case 'null':
        return '"null"';
      case 'object':
        return this.objectType(s, path);
      case 'array':
        return this.arrayType(s, path);
    }
  }

  private count(s: Json, key: string, path: string, limit: number): number | undefined {
    const v = s[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) this.fail(`${path}/${key}`, 'must be a non-negative integer');
    if (v > limit) this.fail(`${path}/${key}`, `is above ${limit}, the largest guided decoding supports`);
    return v;
  }

  private stringType(s: Json, path: string, nested: boolean): string {
    const shaped = this.shapedString(s, path);
    const lengthOf = (key: string) => {
      const v = s[key];
      if (v === undefined) return undefined;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) this.fail(`${path}/${key}`, 'must be a non-negative integer');
      return v;
    };
    if (shaped !== null) {
      // A pattern or format with length bounds: accepted when its own lengths lie within them, or
      // when the pattern is one class repeated (^[A-Z0-9-]+$): a bounded string of that class.
      const min = lengthOf('minLength') ?? 0;
      const max = lengthOf('maxLength') ?? Infinity;
      if (shaped.repeated !== undefined && (min > shaped.minLength || max < shaped.maxLength)) {
        const lo = Math.max(min, shaped.minLength);
        const hi = Math.min(max, shaped.maxLength);
        for (const [key, v] of [['minLength', lo], ['maxLength', hi]] as const) {
          if (v !== Infinity && v > MAX_LENGTH_BOUND) this.fail(`${path}/${key}`, `is above ${MAX_LENGTH_BOUND}, the largest guided decoding supports`);
        }
        if (lo > hi) this.fail(path, 'admits no string (its pattern and length bounds conflict)');
        return this.g.boundedString(lo, hi, nested, { ebnf: shaped.repeated, key: this.g.classKey(shaped.repeated) });
      }
      for (const [key, ok] of [['minLength', shaped.minLength >= min], ['maxLength', shaped.maxLength <= max]] as const) {
        if (!ok) {
          this.fail(
            `${path}/${key}`,
            `combines '${key}' with '${shaped.keyword}', which guided decoding does not support (the ${shaped.keyword} allows ${shaped.minLength} to ${shaped.maxLength === Infinity ? 'any number of' : shaped.maxLength} characters)`,
          );
        }
      }
      return this.g.patternString(shaped.body, nested);
    }
    const min = this.count(s, 'minLength', path, MAX_LENGTH_BOUND) ?? 0;
    const max = this.count(s, 'maxLength', path, MAX_LENGTH_BOUND) ?? Infinity;
    if (min > max) this.fail(path, 'has minLength above maxLength');
    if (min === 0 && max === Infinity) return this.g.string(nested);
    return this.g.boundedString(min, max, nested);
  }

  /**
   * The grammar of a string constrained by `pattern` and/or an enforced `format` (null: neither).
   * With both, the pattern is enforced (zod writes its own regex of the format as the pattern),
   * except known lookaround patterns that stand for a format (zod's email regex).
   */
  private shapedString(s: Json, path: string): { body: string; minLength: number; maxLength: number; repeated?: string; keyword: string } | null {
    let pattern = s.pattern;
    let format = s.format;
    if (pattern !== undefined && typeof pattern !== 'string') this.fail(`${path}/pattern`, 'must be a string');
    if (format !== undefined && typeof format !== 'string') this.fail(`${path}/format`, 'must be a string');
    if (typeof pattern === 'string' && KNOWN_PATTERNS[pattern] !== undefined) {
      const known = KNOWN_PATTERNS[pattern];
      if ('format' in known) {
        if (format !== undefined && format !== known.format) this.fail(`${path}/pattern`, `uses a lookaround, which guided decoding does not support`);
        [pattern, format] = [undefined, known.format];
      } else pattern = known.pattern;
    }
    if (typeof pattern === 'string') {
      try {
        return { ...patternGrammar(pattern, this.g.anyChar), keyword: 'pattern' };
      } catch (e) {
        if (e instanceof PatternError) this.fail(`${path}/pattern`, e.message);
        throw e;
      }
    }
    if (typeof format === 'string' && FORMAT_PATTERNS[format] !== undefined) {
      return { ...patternGrammar(FORMAT_PATTERNS[format], this.g.anyChar, true), keyword: 'format' };
    }
    return null;
  }

  private bounds(s: Json, path: string, integral: boolean): { lo: Bound | null; hi: Bound | null } {
    const num = (key: string): number | undefined => {
      const v = s[key];
      if (v === undefined || (typeof v === 'boolean' && key.startsWith('exclusive'))) return undefined;
      if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(`${path}/${key}`, 'must be a finite number');
      return v;
    };
    // 2020-12: exclusiveMinimum is a number; draft 4: a boolean that makes minimum exclusive.
    const side = (key: string, exKey: string, tighter: (a: number, b: number) => boolean) => {
      const inclusive = num(key);
      const flag = s[exKey];
      if (typeof flag === 'boolean') return inclusive === undefined ? null : { v: inclusive, exclusive: flag, key };
      const exclusive = num(exKey);
      if (exclusive === undefined) return inclusive === undefined ? null : { v: inclusive, exclusive: false, key };
      if (inclusive === undefined || tighter(exclusive, inclusive) || exclusive === inclusive) return { v: exclusive, exclusive: true, key: exKey };
      return { v: inclusive, exclusive: false, key };
    };
    const toBound = (b: { v: number; exclusive: boolean; key: string } | null, lower: boolean): Bound | null => {
      if (b === null) return null;
      if (Number.isInteger(b.v)) return { value: BigInt(b.v), exclusive: b.exclusive };
      if (!integral) return null; // numberType handles fractional bounds
      // For integers a fractional bound equals an inclusive integral one: ceil below, floor above.
      return { value: BigInt(lower ? Math.ceil(b.v) : Math.floor(b.v)), exclusive: false };
    };
    return {
      lo: toBound(side('minimum', 'exclusiveMinimum', (a, b) => a > b), true),
      hi: toBound(side('maximum', 'exclusiveMaximum', (a, b) => a < b), false),
    };
  }

  private integerType(s: Json, path: string): string {
    const { lo, hi } = this.bounds(s, path, true);
    let min = lo && (lo.exclusive ? lo.value + 1n : lo.value);
    let max = hi && (hi.exclusive ? hi.value - 1n : hi.value);
    const implied = typeof s.format === 'string' ? INTEGER_FORMAT_BOUNDS[s.format] : undefined;
    if (implied) {
      min = min === null || min < implied[0] ? implied[0] : min;
      max = max === null || max > implied[1] ? implied[1] : max;
    }
    if (min === null && max === null) return UNBOUNDED_INTEGER;
    const range = integerRange(min, max);
    if (range === null) this.fail(path, 'admits no integer');
    return range;
  }

  private numberType(s: Json, path: string): string {
    const fractional = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'].some((k) => typeof s[k] === 'number' && !Number.isInteger(s[k]));
    if (fractional) return this.decimalNumber(s, path);
    const { lo, hi } = this.bounds(s, path, false);
    if (lo === null && hi === null) return UNBOUNDED_NUMBER;
    const range = numberRange(lo, hi);
    if (range === null) this.fail(path, 'admits no number');
    return range;
  }

  /** A number within bounds of which at least one has a fraction: compared exactly as decimals. */
  private decimalNumber(s: Json, path: string): string {
    const side = (key: string, exKey: string, lower: boolean) => {
      const candidates: { v: number; exclusive: boolean; key: string }[] = [];
      const flag = s[exKey];
      if (typeof s[key] === 'number') candidates.push({ v: s[key] as number, exclusive: flag === true, key });
      if (typeof flag === 'number') candidates.push({ v: flag, exclusive: true, key: exKey });
      for (const c of candidates) if (!Number.isFinite(c.v)) this.fail(`${path}/${c.key}`, 'must be a finite number');
      // The tighter bound (exclusive wins a tie).
      candidates.sort((a, b) => (lower ? b.v - a.v : a.v - b.v) || Number(b.exclusive) - Number(a.exclusive));
      const best = candidates[0];
      if (!best) return null;
      const d = toDecimal(best.v, best.exclusive);
      if (d === null) this.fail(`${path}/${best.key}`, 'has more than 15 fraction digits, more than guided decoding supports');
      return d;
    };
    const range = decimalRange(side('minimum', 'exclusiveMinimum', true), side('maximum', 'exclusiveMaximum', false));
    if (range === null) this.fail(path, 'admits no number');
    return range;
  }

  /** The rule for a map's keys under `propertyNames`. */
  private keyRule(s: Json, path: string): string {
    const names = s.propertyNames;
    if (names === undefined || names === true) return this.g.string(true);
    const at = `${path}/propertyNames`;
    const produced = this.producedTypes(names);
    const types = produced !== null ? [...produced] : isObject(names) ? this.inferTypes(names) : null;
    if (names === false || (types !== null && !types.includes('string'))) this.fail(at, 'allows no property name');
    return this.node(isObject(names) && names.type === undefined && names.enum === undefined && names.const === undefined && names.$ref === undefined ? { ...names, type: 'string' } : names, at, true);
  }

  /** Whether a declared property name satisfies `propertyNames` (checked here, not by the grammar). */
  private nameAllowed(names: unknown, name: string, path: string): boolean {
    const n = this.deref(names);
    if (n === undefined || n === true || (isObject(n) && Object.keys(n).every((k) => ANNOTATIONS.has(k) || k === 'type'))) return true;
    if (!isObject(n)) return false;
    for (const key of Object.keys(n)) {
      if (ANNOTATIONS.has(key) || key === 'type') continue;
      if (key === 'enum' && Array.isArray(n.enum)) {
        if (!n.enum.includes(name)) return false;
      } else if (key === 'const') {
        if (n.const !== name) return false;
      } else if (key === 'minLength' && typeof n.minLength === 'number') {
        if ([...name].length < n.minLength) return false;
      } else if (key === 'maxLength' && typeof n.maxLength === 'number') {
        if ([...name].length > n.maxLength) return false;
      } else if (key === 'pattern' && typeof n.pattern === 'string') {
        if (!new RegExp(n.pattern, 'u').test(name)) return false;
      } else if (key === 'format' && typeof n.format === 'string') {
        const f = FORMAT_PATTERNS[n.format];
        if (f !== undefined && !new RegExp(`^(?:${f})$`, 'u').test(name)) return false;
      } else this.fail(`${path}/propertyNames`, `uses '${key}' beside 'properties', which guided decoding does not support`);
    }
    return true;
  }

  private objectType(s: Json, path: string): string {
    for (const key of ['minProperties', 'maxProperties', 'patternProperties']) {
      if (s[key] !== undefined) this.fail(path, `uses '${key}', which guided decoding does not support`);
    }
    const required = s.required ?? [];
    if (!Array.isArray(required) || required.some((r) => typeof r !== 'string')) this.fail(`${path}/required`, 'must be an array of strings');
    const extra = s.additionalProperties;
    if (extra !== undefined && typeof extra !== 'boolean' && !isObject(extra)) this.fail(`${path}/additionalProperties`, 'must be a boolean or a schema');
    if (s.properties === undefined && required.length > 0 && isObject(extra)) {
      // zod's z.record(z.enum([...]), v): every key required, each an additional property.
      const names = s.propertyNames;
      const keys = isObject(names) && Array.isArray(names.enum) ? names.enum : required;
      if (keys.every((k) => typeof k === 'string') && (required as string[]).every((r) => keys.includes(r))) {
        const { propertyNames: _n, additionalProperties: _a, ...rest } = s;
        return this.objectType({ ...rest, properties: Object.fromEntries((keys as string[]).map((k) => [k, extra])) }, path);
      }
    }
    if (s.properties === undefined) {
      if (required.length > 0) this.fail(path, `requires '${required[0]}' but has no 'properties'`);
      if (extra === false) return '("{" "}")';
      if (isObject(extra) || (s.propertyNames !== undefined && extra !== true)) {
        const value = isObject(extra) ? this.node(extra, `${path}/additionalProperties`, true) : this.g.value(true);
        const s_ = this.keyRule(s, path);
        return this.g.rule('map', `"{" (${s_} ": " ${value} (", " ${s_} ": " ${value})*)? "}"`);
      }
      return this.g.object;
    }
    if (!isObject(s.properties)) this.fail(`${path}/properties`, 'must be an object');
    const properties = s.properties;
    const names = Object.keys(properties);
    for (const r of required as string[]) {
      if (!names.includes(r)) this.fail(path, `requires '${r}', which is not in its 'properties'`);
    }
    if (s.propertyNames !== undefined) {
      for (const name of names) {
        if (!this.nameAllowed(s.propertyNames, name, path)) this.fail(`${path}/propertyNames`, `does not allow the property '${name}' its 'properties' declare`);
      }
    }
    const props = names.map((name) => ({
      text: seq(lit(`${JSON.stringify(name)}: `), this.node(properties[name], `${path}/properties/${name}`, true)),
      required: (required as string[]).includes(name),
    }));
    if (props.every((p) => p.required)) {
      return this.g.rule('object', seq('"{"', ...props.flatMap((p, i) => (i === 0 ? [p.text] : ['", "', p.text])), '"}"'));
    }
    // rest(k): properties k.. once one was written (each after ", "); first(k): none written yet.
    // One rule per k keeps the grammar linear in the number of properties.
    const restRules: string[] = [];
    const rest = (k: number): string => {
      if (k === props.length) return '""';
      if (restRules[k] === undefined) {
        const item = seq('", "', props[k].text);
        restRules[k] = this.g.rule('props', seq(props[k].required ? item : `${item}?`, rest(k + 1)));
      }
      return restRules[k];
    };
    const first = (k: number): string => {
      if (k === props.length) return '""';
      const here = seq(props[k].text, rest(k + 1));
      return props[k].required ? here : this.g.rule('props_first', alt([here, first(k + 1)]));
    };
    return this.g.rule('object', seq('"{"', first(0), '"}"'));
  }

  /** The finite set of values a schema allows (enum, const, boolean, null), or null. */
  private finiteValues(s: unknown): unknown[] | null {
    const t = this.deref(s);
    if (!isObject(t)) return null;
    const keys = Object.keys(t).filter((k) => !ANNOTATIONS.has(k) && !k.startsWith('x-'));
    const types = t.type === undefined ? null : Array.isArray(t.type) ? t.type : [t.type];
    const ofType = (v: unknown) => types === null || types.includes(typeOfValue(v)) || (typeOfValue(v) === 'integer' && types.includes('number'));
    if (t.const !== undefined && keys.every((k) => k === 'const' || k === 'type')) return [t.const].filter(ofType);
    if (Array.isArray(t.enum) && keys.every((k) => k === 'enum' || k === 'type')) return t.enum.filter(ofType);
    if (keys.length === 1 && types !== null && types.every((x) => x === 'boolean' || x === 'null')) {
      return types.flatMap((x) => (x === 'boolean' ? [true, false] : [null]));
    }
    if (Array.isArray(t.anyOf) && keys.length === 1) {
      const all = t.anyOf.map((b) => this.finiteValues(b));
      return all.every((v) => v !== null) ? all.flat() : null;
    }
    return null;
  }

  /**
   * uniqueItems over a finite set of values (enums, literals, booleans): arrays of distinct values,
   * written in the order the schema lists them (a subset of all orders: enumerating every order of
   * n values would take 2^n grammar states).
   */
  private uniqueArray(s: Json, path: string, min: number, max: number, prefixLength: number): string {
    const refuse = (why: string): never => this.fail(`${path}/uniqueItems`, `is not supported ${why}`);
    if (prefixLength > 0) refuse("with 'prefixItems'");
    const values = s.items === undefined ? null : this.finiteValues(s.items);
    if (values === null) return refuse('unless the items are a finite set of values (enum, const, boolean) or maxItems is at most 1');
    const distinct = [...new Map(values.map((v) => [compactJson(v), v])).values()];
    if (distinct.length > MAX_UNIQUE_VALUES) refuse(`over more than ${MAX_UNIQUE_VALUES} values`);
    const n = distinct.length;
    const top = Math.min(max, n);
    if (min > top) this.fail(path, `needs ${min} distinct items but its items allow only ${n} values`);
    this.g.countEnumValues(n, () => this.fail(`${path}/items`, `makes the constraint too large for guided decoding (more than ${MAX_ENUM_VALUES} enum and const values in all)`));
    const lits = distinct.map((v) => lit(compactJson(v)));
    // rest(i, k): k values written; value i may follow (after ", ") or be skipped. Counting k only
    // when a bound needs it keeps the grammar at n rules for a plain set.
    const counted = min > 0 || top < n;
    const memo = new Map<string, string | null>();
    const state = (i: number, k: number, first: boolean): string | null => {
      const key = `${first}:${i}:${counted ? k : 0}`;
      if (memo.has(key)) return memo.get(key)!;
      memo.set(key, null);
      let body: string | null;
      if (i === n || n - i < min - k) body = i === n && k >= min ? '""' : null;
      else {
        const parts: string[] = [];
        const take = k < top ? state(i + 1, k + 1, false) : null;
        if (take !== null) parts.push(seq(first ? '""' : '", "', lits[i], take));
        const skip = state(i + 1, k, first);
        if (skip !== null) parts.push(skip);
        body = parts.length === 0 ? null : alt(parts);
      }
      const name = body === null || body === '""' ? body : this.g.rule('unique', body);
      memo.set(key, name);
      return name;
    };
    const elements = state(0, 0, true);
    if (elements === null) this.fail(path, `needs ${min} distinct items but its items allow only ${n} values`);
    return this.g.rule('array', `"[" ${elements} "]"`);
  }

  private arrayType(s: Json, path: string): string {
    if (s.contains !== undefined) this.fail(path, "uses 'contains', which guided decoding does not support");
    const prefix = s.prefixItems ?? [];
    if (!Array.isArray(prefix)) this.fail(`${path}/prefixItems`, 'must be an array');
    if (Array.isArray(s.items)) this.fail(`${path}/items`, "must be a schema (use 'prefixItems' for tuples)");
    const itemsFalse = s.items === false;
    const min = this.count(s, 'minItems', path, MAX_ITEMS_BOUND) ?? 0;
    let max = this.count(s, 'maxItems', path, MAX_ITEMS_BOUND) ?? Infinity;
    if (itemsFalse) max = Math.min(max, prefix.length);
    if (min > max) this.fail(path, itemsFalse ? 'needs more items than its prefixItems allow' : 'has minItems above maxItems');
    if (s.uniqueItems === true && max > 1) return this.uniqueArray(s, path, min, max, prefix.length);
    const item = itemsFalse ? null : s.items === undefined || s.items === true ? this.g.value(true) : this.node(s.items, `${path}/items`, true);
    const prefixRules = prefix.map((p, i) => this.node(p, `${path}/prefixItems/${i}`, true));
    const k = prefixRules.length;
    // tail(i): elements i.. given i elements were already written.
    const tail = (i: number): string => {
      if (i >= k) {
        if (item === null || max <= i) return '""';
        return repeat(`(", " ${item})`, Math.max(0, min - i), max - i);
      }
      if (i >= max) return '""';
      const el = seq('", "', prefixRules[i], tail(i + 1));
      return i < min ? el : `${el}?`;
    };
    let body: string;
    if (max === 0) body = '"[" "]"';
    else if (k === 0) {
      const rest = repeat(`(", " ${item})`, Math.max(0, min - 1), max - 1);
      const elements = seq(item!, rest);
      body = min === 0 ? `"[" ${elements}? "]"` : `"[" ${elements} "]"`;
    } else {
      const elements = seq(prefixRules[0], tail(1));
      body = min === 0 ? `"[" ${elements}? "]"` : `"[" ${elements} "]"`;
    }
    return this.g.rule('array', body);
  }
}

/** A complete grammar for one schema (null: any JSON object, OpenAI's json_object). */
export function jsonSchemaGrammar(schema: unknown | null, param: string): string {
  const g = new GrammarBuilder();
  return g.build(schema === null ? g.object : g.schema(schema, param, false));
}
