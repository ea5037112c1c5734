// What a request asks guided decoding to constrain, as it crosses to the grammar worker (plain data:
// structured-cloned).
import type { ToolGrammarSpec } from './tool-call-grammar.ts';

export type GuideSpec =
  /** schema null: any JSON object (response_format json_object). */
  | { kind: 'json'; schema: unknown | null; param: string }
  /** multiple: one or more calls (tool_choice 'required'), else exactly one. */
  | { kind: 'tool_calls'; tools: ToolGrammarSpec[]; multiple: boolean; param: string };

export interface GuideOptions {
  /** The prompt leaves the model inside <think>: free until </think>, then constrained. */
  startInReasoning?: boolean;
}
