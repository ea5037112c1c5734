// The grammar of a reply that calls tools in the Qwen3 / Hermes format, exactly as the chat template
// renders an assistant's tool_calls:
//   <tool_call>\n{"name": "<name>", "arguments": <arguments>}\n</tool_call>
// several calls joined by "\n". <tool_call> and </tool_call> are single (non-special) tokens of the
// vocabulary; the grammar matches their text, so the model may also spell them out.
import { alt, lit, seq } from './ebnf.ts';
import { GrammarBuilder } from './json-schema-grammar.ts';

export interface ToolGrammarSpec {
  name: string;
  /** The function's parameters schema; undefined / null: no parameters ({}). */
  parameters: unknown;
  /** The request field naming this schema, for errors: "tools[0].function.parameters". */
  param: string;
}

const NO_PARAMETERS = { type: 'object', properties: {} };

/** `multiple`: one or more calls (tool_choice 'required'); otherwise exactly one. */
export function toolCallGrammar(tools: readonly ToolGrammarSpec[], multiple: boolean): string {
  if (tools.length === 0) throw new Error('toolCallGrammar needs at least one tool');
  const g = new GrammarBuilder();
  const bodies = tools.map((tool) => {
    const args = g.schema(tool.parameters ?? NO_PARAMETERS, tool.param, true);
    return seq(lit(`{"name": ${JSON.stringify(tool.name)}, "arguments": `), args, lit('}'));
  });
  const call = g.rule('tool_call', seq(lit('<tool_call>\n'), alt(bodies), lit('\n</tool_call>')));
  return g.build(multiple ? seq(call, `(${lit('\n')} ${call})*`) : call);
}
