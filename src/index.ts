// moeserve's TypeScript API: `import { research } from 'moeserve'` (package.json "exports"; index.js loads this
// file through tsx for plain Node).
export {
  research, ResearchError, DEFAULT_MAX_CALLS, REFERENCE_MAX_CONTEXT, DEFAULT_TOOL_OUTPUT_CHARS, DEFAULT_REPORT_CHARS,
  type ResearchOptions, type ResearchResult, type ResearchStats,
} from './research/research.ts';
export type { ResearchEvent, Termination, AgentId, TokenUsage } from './research/events.ts';
export type { AgentResult } from './research/react.ts';
export { REFERENCE_SAMPLING, type Sampling } from './research/session.ts';
export { toolDefinition, type ResearchTool } from './research/tool.ts';
export { createTools, type CreateToolsOptions } from './research/tools/index.ts';
export { createProgress, summaryLines, type Progress, type ProgressOptions } from './research/progress.ts';
export { fullMessages, type ResearchTrace, type TraceEntry, type TraceRequest, type TraceToolCall } from './research/trace.ts';
export type { MetricsReport, ServerMetrics } from './research/server-metrics.ts';
