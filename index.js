// The package's entry for plain Node (`import { research } from 'moeserve'`): the API is TypeScript
// (src/index.ts), loaded here through tsx's scoped loader, so the importing program needs no loader of its own
// and its other imports are left alone. Under tsx, vitest or another TS-aware runtime it works the same.
import { tsImport } from 'tsx/esm/api';

const api = await tsImport('./src/index.ts', import.meta.url);

export const {
  research, ResearchError, DEFAULT_MAX_CALLS, REFERENCE_MAX_CONTEXT, DEFAULT_TOOL_OUTPUT_CHARS, DEFAULT_REPORT_CHARS,
  REFERENCE_SAMPLING, toolDefinition, createTools, createProgress, summaryLines, fullMessages,
} = api;
