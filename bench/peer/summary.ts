// Samples → medians, ratios and targets; the plain-text and Markdown tables.
import { median } from './workload.ts';

export type EngineKey = 'moeserve' | 'llama';

export interface Sample {
  run: number;
  /** The figure of merit: tokens/s (see MetricSummary.definition). */
  value: number;
  wallMs: number;
  tokens: number;
  /** CPU time of the engine's process during the sample (all threads). */
  cpuMs: number;
  /** Cores' worth of CPU used by other processes meanwhile. */
  foreignCores: number;
  notes?: Record<string, number | string>;
}

export interface MetricSummary {
  id: string;
  label: string;
  unit: string;
  definition: string;
  /** Medians of the runs. */
  moeserve: number;
  llama: number;
  ratio: number;
  /** The issues' target for the ratio, where they set one (issue 5; prefill: issue 16). */
  target?: number;
  met?: boolean;
  /** Tokens per CPU-second (median), the figure least disturbed by other processes. */
  moeservePerCpuS: number;
  llamaPerCpuS: number;
  samples: Record<EngineKey, Sample[]>;
}

export interface MetricSpec {
  id: string;
  label: string;
  unit: string;
  definition: string;
  target?: number;
}

export function summarize(spec: MetricSpec, samples: Record<EngineKey, Sample[]>): MetricSummary {
  const med = (k: EngineKey) => median(samples[k].map((s) => s.value));
  const perCpu = (k: EngineKey) => median(samples[k].map((s) => (s.cpuMs > 0 ? (s.tokens * 1000) / s.cpuMs : NaN)));
  const moeserve = med('moeserve');
  const llama = med('llama');
  const ratio = moeserve / llama;
  return {
    ...spec,
    moeserve,
    llama,
    ratio,
    met: spec.target === undefined ? undefined : ratio >= spec.target,
    moeservePerCpuS: perCpu('moeserve'),
    llamaPerCpuS: perCpu('llama'),
    samples,
  };
}

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '–');
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '–');

function rows(metrics: MetricSummary[]): string[][] {
  return metrics.map((m) => [
    m.label,
    f1(m.moeserve),
    f1(m.llama),
    `${f2(m.ratio)}×`,
    m.target === undefined ? '' : `≥ ${m.target}× ${m.met ? 'met' : 'NOT met'}`,
    `${f2(m.moeservePerCpuS / m.llamaPerCpuS)}×`,
    m.samples.moeserve.map((s) => f1(s.value)).join(' '),
    m.samples.llama.map((s) => f1(s.value)).join(' '),
  ]);
}

const HEAD = ['', 'moeserve tok/s', 'llama.cpp tok/s', 'ratio', 'target', 'ratio per CPU-s', 'moeserve runs', 'llama.cpp runs'];

export function textTable(metrics: MetricSummary[]): string {
  const all = [HEAD, ...rows(metrics)];
  const widths = HEAD.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  return all.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n');
}

export function markdownTable(metrics: MetricSummary[]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(HEAD.map((h) => h || 'metric')), line(HEAD.map((_, i) => (i === 0 ? '---' : '---:'))), ...rows(metrics).map(line)].join('\n');
}
