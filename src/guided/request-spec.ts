// OpenAI request fields → what to constrain the output to: `response_format` (chat and completions)
// and a forced tool call (tool_choice 'required' or a named function). Bad values are RequestErrors
// (OpenAI-shaped 400s) naming the parameter.
import { RequestError } from '../engine/types.ts';
import type { GuideSpec } from './guide-spec.ts';
import { MAX_ENUM_VALUES } from './json-schema-grammar.ts';
import { alt, lit } from './ebnf.ts';

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** The constraint `response_format` asks for; null for none ('text' or absent). */
export function responseFormatSpec(responseFormat: unknown): GuideSpec | null {
  if (responseFormat === undefined || responseFormat === null) return null;
  if (!isObject(responseFormat)) throw new RequestError("'response_format' must be an object", 'response_format');
  const { type } = responseFormat;
  if (type === 'text') return null;
  if (type === 'json_object') return { kind: 'json', schema: null, param: 'response_format' };
  if (type !== 'json_schema') {
    throw new RequestError(
      `response_format type ${JSON.stringify(type)} is not supported; use 'text', 'json_object' or 'json_schema'`,
      'response_format.type',
    );
  }
  const spec = responseFormat.json_schema;
  if (!isObject(spec)) throw new RequestError("response_format 'json_schema' needs a 'json_schema' object", 'response_format.json_schema');
  if (spec.name !== undefined && spec.name !== null && typeof spec.name !== 'string') {
    throw new RequestError("'response_format.json_schema.name' must be a string", 'response_format.json_schema.name');
  }
  if (spec.strict !== undefined && spec.strict !== null && typeof spec.strict !== 'boolean') {
    throw new RequestError("'response_format.json_schema.strict' must be a boolean", 'response_format.json_schema.strict');
  }
  const schema = spec.schema;
  if (!isObject(schema) && typeof schema !== 'boolean') {
    throw new RequestError("'response_format.json_schema.schema' is required: a JSON Schema object", 'response_format.json_schema.schema');
  }
  return { kind: 'json', schema, param: 'response_format.json_schema.schema' };
}

/** vLLM's guided-decoding fields, each a way to constrain the output (guided_* are the older names of structured_outputs'). */
export const GUIDED_FIELDS = ['guided_json', 'guided_regex', 'guided_choice', 'guided_grammar'] as const;

/** structured_outputs' keys: the constraints (one of them), and options that cannot change our output. */
const STRUCTURED_CONSTRAINTS = ['json', 'regex', 'choice', 'grammar', 'json_object', 'structural_tag'] as const;
const STRUCTURED_OPTIONS: Record<string, (v: unknown) => boolean> = {
  // Our JSON is always compact with fixed separators and only declared properties: these ask for nothing more.
  disable_any_whitespace: (v) => v === null || typeof v === 'boolean',
  disable_additional_properties: (v) => v === null || typeof v === 'boolean',
  // There is no other backend to fall back to.
  disable_fallback: (v) => v === null || typeof v === 'boolean',
  // A custom whitespace pattern would change the output: only its absence is accepted.
  whitespace_pattern: (v) => v === null,
};

/** One constraint named by vLLM's field `param` (guided_json, structured_outputs.json, ...). */
function constraintSpec(kind: (typeof STRUCTURED_CONSTRAINTS)[number], value: unknown, param: string): GuideSpec | null {
  switch (kind) {
    case 'json': {
      let schema = value;
      // vLLM takes the schema as an object or as its JSON text.
      if (typeof value === 'string') {
        try {
          schema = JSON.parse(value);
        } catch (err) {
          throw new RequestError(`'${param}' is not a JSON schema: ${(err as Error).message}`, param);
        }
      }
      if (!isObject(schema) && typeof schema !== 'boolean') throw new RequestError(`'${param}' must be a JSON Schema object`, param);
      return { kind: 'json', schema, param };
    }
    case 'regex':
      if (typeof value !== 'string') throw new RequestError(`'${param}' must be a string (a regular expression)`, param);
      return { kind: 'regex', pattern: value, param };
    case 'choice': {
      if (!Array.isArray(value) || value.length === 0 || value.some((c) => typeof c !== 'string')) {
        throw new RequestError(`'${param}' must be a non-empty array of strings`, param);
      }
      return { kind: 'grammar', grammar: `root ::= ${alt((value as string[]).map(lit))}`, param };
    }
    case 'grammar':
      if (typeof value !== 'string' || value.trim() === '') throw new RequestError(`'${param}' must be a grammar in xgrammar's EBNF (root rule 'root')`, param);
      return { kind: 'grammar', grammar: value, param };
    case 'json_object':
      if (typeof value !== 'boolean') throw new RequestError(`'${param}' must be a boolean`, param);
      return value ? { kind: 'json', schema: null, param } : null;
    case 'structural_tag':
      throw new RequestError(`'${param}' is not supported (structural tags); use json, regex, choice or grammar`, param);
  }
}

/** vLLM's structured_outputs: exactly one constraint, and options that cannot change our output. */
function structuredOutputsSpec(value: unknown): GuideSpec | null {
  if (!isObject(value)) throw new RequestError("'structured_outputs' must be an object", 'structured_outputs');
  const given = STRUCTURED_CONSTRAINTS.filter((k) => value[k] !== undefined && value[k] !== null);
  if (given.length !== 1) {
    throw new RequestError(
      `'structured_outputs' must hold exactly one constraint of ${STRUCTURED_CONSTRAINTS.join(', ')} (got ${given.length === 0 ? 'none' : given.join(', ')})`,
      'structured_outputs',
    );
  }
  for (const [key, v] of Object.entries(value)) {
    if ((STRUCTURED_CONSTRAINTS as readonly string[]).includes(key)) continue;
    const ok = STRUCTURED_OPTIONS[key];
    if (!ok) throw new RequestError(`'structured_outputs.${key}' is not supported`, `structured_outputs.${key}`);
    if (!ok(v)) throw new RequestError(`'structured_outputs.${key}' is not supported with this value (${JSON.stringify(v)?.slice(0, 40)})`, `structured_outputs.${key}`);
  }
  return constraintSpec(given[0], value[given[0]], `structured_outputs.${given[0]}`);
}

/**
 * What constrains the output of a request: response_format, vLLM's structured_outputs or one of its
 * older guided_* fields (one of them at most, as vLLM allows). Null when nothing does.
 */
export function outputConstraintSpec(body: Readonly<Record<string, unknown>>): GuideSpec | null {
  const specs: GuideSpec[] = [];
  const responseFormat = responseFormatSpec(body.response_format);
  if (responseFormat) specs.push(responseFormat);
  const structured = body.structured_outputs;
  if (structured !== undefined && structured !== null) {
    const spec = structuredOutputsSpec(structured);
    if (spec) specs.push(spec);
  }
  for (const field of GUIDED_FIELDS) {
    const value = body[field];
    if (value === undefined || value === null) continue;
    const spec = constraintSpec(field.slice('guided_'.length) as (typeof STRUCTURED_CONSTRAINTS)[number], value, field);
    if (spec) specs.push(spec);
  }
  if (specs.length > 1) {
    const names = specs.map((s) => s.param.split('.')[0]);
    throw new RequestError(`Only one kind of guided decoding may be used per request (got ${names.join(' and ')})`, specs[1].param.split('.')[0]);
  }
  return specs[0] ?? null;
}

/**
 * A forced tool call over `tools` (already checked: each has function.name). `only`: the named
 * function (tool_choice {type: 'function', ...}); null: any of them ('required').
 * `multiple`: one or more calls ('required' with parallel_tool_calls not false); else exactly one.
 */
export function toolCallSpec(tools: readonly Record<string, unknown>[], only: string | null, multiple: boolean): GuideSpec {
  const chosen = tools
    .map((tool, i) => ({ fn: tool.function as Record<string, unknown>, i }))
    .filter(({ fn }) => only === null || fn.name === only)
    .map(({ fn, i }) => ({ name: String(fn.name), parameters: fn.parameters ?? undefined, param: `tools[${i}].function.parameters` }));
  if (chosen.length === 0) throw new RequestError(`tool_choice names function '${only}', which is not in 'tools'`, 'tool_choice');
  return { kind: 'tool_calls', tools: chosen, multiple: only === null && multiple, param: 'tools' };
}

/**
 * On the event loop, before a spec is cloned to the grammar worker: refuses a schema whose enum and
 * const values, as written, already exceed MAX_ENUM_VALUES (the worker counts them again after
 * resolving $refs, which can only add). Walks the schema but not the values themselves, so a 60,000-value
 * enum costs one array length here instead of a clone and a worker round trip.
 */
const NAMED = new Set(['properties', 'patternProperties', '$defs', 'definitions', 'dependentSchemas']);

export function checkEnumBudget(spec: GuideSpec): void {
  if (spec.kind === 'grammar' || spec.kind === 'regex') return;
  const roots = spec.kind === 'json' ? [{ schema: spec.schema, param: spec.param }] : spec.tools.map((t) => ({ schema: t.parameters, param: t.param }));
  let values = 0;
  for (const { schema, param } of roots) {
    // [node, its JSON pointer, whether its keys are names (properties, $defs) rather than keywords]
    const stack: [unknown, string, boolean][] = [[schema, '', false]];
    while (stack.length > 0) {
      const [node, path, names] = stack.pop()!;
      if (node === null || typeof node !== 'object') continue;
      if (Array.isArray(node)) {
        node.forEach((child, i) => stack.push([child, `${path}/${i}`, false]));
        continue;
      }
      for (const [key, child] of Object.entries(node)) {
        const at = `${path}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`;
        if (!names && ((key === 'enum' && Array.isArray(child)) || key === 'const')) {
          values += key === 'enum' ? (child as unknown[]).length : 1;
          if (values > MAX_ENUM_VALUES) {
            // Worded as the grammar's own refusal (json-schema-grammar.ts), which counts after $refs.
            throw new RequestError(`${param}: schema at '${at}' makes the constraint too large for guided decoding (more than ${MAX_ENUM_VALUES} enum and const values in all)`, param);
          }
        } else {
          stack.push([child, at, !names && NAMED.has(key)]);
        }
      }
    }
  }
}
