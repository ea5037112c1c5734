// A tool the research agents can call: its OpenAI function definition (what the model sees inside <tools>) and
// its implementation. The agent loop (react.ts, heavy.ts) owns budgets and failures: it truncates what run()
// returns to the tool-output budget and turns a thrown error into an error text for the model, so a tool just
// does its work and throws when it cannot.
export interface ResearchTool {
  name: string;
  description: string;
  /** JSON schema of the arguments object. */
  parameters: Record<string, unknown>;
  /** The tool's output as text; throws (with a message the model can act on) when it fails. */
  run(args: Record<string, unknown>, signal: AbortSignal): Promise<string>;
}

/** The function definition the model is shown (Qwen3's template renders these inside <tools></tools>). */
export function toolDefinition(tool: ResearchTool): { type: 'function'; function: { name: string; description: string; parameters: Record<string, unknown> } } {
  return { type: 'function', function: { name: tool.name, description: tool.description, parameters: tool.parameters } };
}
