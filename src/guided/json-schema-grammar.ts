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
import { integerRange, numberRange, UNBOUNDED_INTEGER, UNBOUNDED_NUMBER, type Bound } from './number-ranges.ts';

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Keywords that only describe; they never constrain what we generate. */
const ANNOTATIONS = new Set([
  'title', 'description', 'default', 'examples', 'example', '$schema', '$id', '$comment', 'deprecated', 'readOnly',
  'writeOnly', 'contentEncoding', 'contentMediaType', 'discriminator', 'strict', '$anchor',
  // format is an annotation by default in JSON Schema 2020-12; we do not restrict strings by it.
  'format',
  // OpenAPI's nullable: true only widens; generating non-null values stays valid.
  'nullable',
]);
const CONSTRAINTS = new Set([
  'type', 'properties', 'required', 'additionalProperties', 'items', 'prefixItems', 'minItems', 'maxItems', 'minLength',
  'maxLength', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'enum', 'const', 'anyOf', 'oneOf', 'allOf',
  '$ref', '$defs', 'definitions', 'unevaluatedProperties', 'uniqueItems',
]);
const TYPES = ['string', 'number', 'integer', 'boolean', 'null', 'object', 'array'] as const;
type JsonType = (typeof TYPES)[number];

/** xgrammar compiles about 10 ms of rules per subschema over this vocabulary, on the JS thread. */
const MAX_SCHEMA_NODES = 500;
const MAX_DEPTH = 32;
/**
 * Each bound on a string's length costs a grammar rule per character, and xgrammar precomputes
 * every rule over the whole vocabulary (~60 ms each in WASM), so bounds stay small.
 */
const MAX_LENGTH_BOUND = 32;
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
  boundedString(min: number, max: number, nested: boolean): string {
    const esc = this.escape;
    const suffix = nested ? '' : '_root';
    const la = nested ? LOOKAHEAD : '';
    // upTo(k): at most k more characters, then the closing quote.
    const upTo = (k: number): string => {
      if (k === Infinity) return this.stringRest(nested);
      for (let i = 0; i <= k; i++) {
        const prev = `str_upto_${i - 1}${suffix}`;
        this.basic(`str_upto_${i}${suffix}`, () => (i === 0 ? `"\\""${la}` : `("\\"" | ${CHAR} ${prev} | "\\\\" ${esc} ${prev})${la}`));
      }
      return `str_upto_${k}${suffix}`;
    };
    const tail = upTo(max - min);
    let rest = tail;
    for (let i = 1; i <= min; i++) {
      const prev = rest;
      rest = this.basic(`str_min_${i}_${tail}`, () => `(${CHAR} ${prev} | "\\\\" ${esc} ${prev})`);
    }
    return `("\\"" ${rest})`;
  }

  /** Escapes; \u escapes of UTF-16 surrogates are left out (they would not count as one character). */
  private get escape(): string {
    const hex = '[0-9a-fA-F]';
    return this.basic('json_escape', () => `["\\\\/bfnrt] | "u" ([0-9a-cA-Ce-fE-F] ${hex} ${hex} ${hex} | [dD] [0-7] ${hex} ${hex})`);
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
    if (s.uniqueItems === true) this.fail(path, "uses 'uniqueItems', which guided decoding does not support");
    if (s.unevaluatedProperties !== undefined && s.unevaluatedProperties !== false) {
      this.fail(path, "uses 'unevaluatedProperties' other than false, which guided decoding does not support");
    }
    const constraints = Object.keys(s).filter((k) => CONSTRAINTS.has(k) && !['$defs', 'definitions', 'uniqueItems', 'unevaluatedProperties'].includes(k));
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
    if (has('properties', 'required', 'additionalProperties')) types.push('object');
    if (has('items', 'prefixItems', 'minItems', 'maxItems')) types.push('array');
    if (has('minLength', 'maxLength')) types.push('string');
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

  /** oneOf is generated as anyOf: allowed only where no value can match two branches. */
  private checkDisjoint(branches: unknown[], path: string): void {
    const seen = new Set<JsonType>();
    branches.forEach((b, i) => {
      const types = this.producedTypes(b);
      if (types === null) this.fail(`${path}/${i}`, "needs a 'type', 'enum' or 'const' (oneOf branches must be told apart by type)");
      const numeric = types.has('number') || types.has('integer');
      for (const t of types) {
        if (seen.has(t) || (numeric && (seen.has('number') || seen.has('integer')))) {
          this.fail(path, 'has branches that can match the same value (only oneOf branches of distinct types are supported)');
        }
      }
      types.forEach((t) => seen.add(t));
    });
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
    const min = this.count(s, 'minLength', path, MAX_LENGTH_BOUND) ?? 0;
    const max = this.count(s, 'maxLength', path, MAX_LENGTH_BOUND) ?? Infinity;
    if (min > max) this.fail(path, 'has minLength above maxLength');
    if (min === 0 && max === Infinity) return this.g.string(nested);
    return this.g.boundedString(min, max, nested);
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
      if (!integral) this.fail(`${path}/${b.key}`, "is not an integer: guided decoding supports only integral bounds on 'number'");
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
    if (lo === null && hi === null) return UNBOUNDED_INTEGER;
    const range = integerRange(lo && (lo.exclusive ? lo.value + 1n : lo.value), hi && (hi.exclusive ? hi.value - 1n : hi.value));
    if (range === null) this.fail(path, 'admits no integer');
    return range;
  }

  private numberType(s: Json, path: string): string {
    const { lo, hi } = this.bounds(s, path, false);
    if (lo === null && hi === null) return UNBOUNDED_NUMBER;
    const range = numberRange(lo, hi);
    if (range === null) this.fail(path, 'admits no number');
    return range;
  }

  private objectType(s: Json, path: string): string {
    for (const key of ['minProperties', 'maxProperties', 'patternProperties', 'propertyNames']) {
      if (s[key] !== undefined) this.fail(path, `uses '${key}', which guided decoding does not support`);
    }
    const required = s.required ?? [];
    if (!Array.isArray(required) || required.some((r) => typeof r !== 'string')) this.fail(`${path}/required`, 'must be an array of strings');
    const extra = s.additionalProperties;
    if (extra !== undefined && typeof extra !== 'boolean' && !isObject(extra)) this.fail(`${path}/additionalProperties`, 'must be a boolean or a schema');
    if (s.properties === undefined) {
      if (required.length > 0) this.fail(path, `requires '${required[0]}' but has no 'properties'`);
      if (extra === false) return '("{" "}")';
      if (isObject(extra)) {
        const value = this.node(extra, `${path}/additionalProperties`, true);
        const s_ = this.g.string(true);
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
