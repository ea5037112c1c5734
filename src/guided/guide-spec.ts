// What a request asks guided decoding to constrain, as it crosses to the grammar worker (plain data:
// structured-cloned).
import type { ToolGrammarSpec } from './tool-call-grammar.ts';

export type GuideSpec =
  /** schema null: any JSON object (response_format json_object). */
  | { kind: 'json'; schema: unknown | null; param: string }
  /** multiple: one or more calls (tool_choice 'required'), else exactly one. */
  | { kind: 'tool_calls'; tools: ToolGrammarSpec[]; multiple: boolean; param: string }
  /** A grammar in xgrammar's EBNF, root rule `root` (vLLM's guided_grammar as given; guided_choice's alternatives). */
  | { kind: 'grammar'; grammar: string; param: string }
  /** A regular expression the whole output matches (vLLM's guided_regex); xgrammar turns it into a grammar. */
  | { kind: 'regex'; pattern: string; param: string };

export interface GuideOptions {
  /** The prompt leaves the model inside <think>: free until </think>, then constrained. */
  startInReasoning?: boolean;
}
