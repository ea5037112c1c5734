// A spec's grammar text, bounded: what reaches xgrammar's compiler is refused here when it is
// absurdly large, as a 400 naming the parameter, before any compilation time is spent on it.
import { RequestError } from '../engine/types.ts';
import type { GuideSpec } from './guide-spec.ts';
import { jsonSchemaGrammar } from './json-schema-grammar.ts';
import { toolCallGrammar } from './tool-call-grammar.ts';

/**
 * The largest grammar text compiled, in characters. OpenAI's structured outputs allow 120,000
 * characters of property names, enum and const values in all; our grammar writes an optional
 * property's name twice and escapes non-ASCII as \uXXXX, and structure adds a few KB. 512 Ki leaves
 * room for all that; beyond it compiling costs seconds of the grammar worker (about 4 ms per
 * 1,000 literal characters measured), time every other guided request waits for its masks.
 */
export const MAX_GRAMMAR_CHARS = 512 * 1024;

/** The grammar text of a spec (RequestError on an unsupported or oversized constraint). */
export function guideGrammar(spec: GuideSpec): string {
  let text: string;
  try {
    if (spec.kind === 'regex') throw new Error('guideGrammar: a regex spec is turned into a grammar by xgrammar (compiled-grammars.ts)');
    text = spec.kind === 'json' ? jsonSchemaGrammar(spec.schema, spec.param) : spec.kind === 'grammar' ? spec.grammar : toolCallGrammar(spec.tools, spec.multiple);
  } catch (err) {
    // e.g. enum values nested deeper than the stack: still the client's input, still a 400.
    if (err instanceof RangeError) throw new RequestError(`${spec.param}: the schema is too deeply nested`, spec.param);
    throw err;
  }
  if (text.length > MAX_GRAMMAR_CHARS) {
    throw new RequestError(
      `${spec.param}: the constraint is too large for guided decoding (its grammar has ${text.length} characters, more than ${MAX_GRAMMAR_CHARS})`,
      spec.param,
    );
  }
  return text;
}
