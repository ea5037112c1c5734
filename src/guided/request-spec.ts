// OpenAI request fields → what to constrain the output to: `response_format` (chat and completions)
// and a forced tool call (tool_choice 'required' or a named function). Bad values are RequestErrors
// (OpenAI-shaped 400s) naming the parameter.
import { RequestError } from '../engine/types.ts';
import type { GuideSpec } from './guide-spec.ts';
import { MAX_ENUM_VALUES } from './json-schema-grammar.ts';

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
