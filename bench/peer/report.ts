// The peer benchmark's report: its shape, and writing it out (JSON + SVG under bench/results/,
// bench/RESULTS.md for a full run).
import fs from 'node:fs';
import path from 'node:path';
import type { MachineBandwidth } from './bandwidth.ts';
import { peerChartSvg } from './chart.ts';
import type { DecodeBytes, DecodeShape } from './decode-bytes.ts';
import type { MachineInfo } from './machine.ts';
import { updateResultsFile } from './results-file.ts';
import { peerMarkdown } from './results-md.ts';
import type { MetricSummary } from './summary.ts';
import type { Workload } from './workload.ts';

export interface EngineBandwidth {
  bytesPerToken: number;
  breakdown: DecodeBytes;
  tokensPerS: number;
  gbPerS: number;
  /** gbPerS ÷ the measured read bandwidth. */
  fraction: number;
}

export interface PeerReport {
  date: string;
  durationS: number;
  command: string[];
  quick: boolean;
  machine: MachineInfo;
  threads: number;
  runs: number;
  /** alternating: both engines loaded, samples interleaved; sequential: one engine's samples, then the other's. */
  order: 'alternating' | 'sequential';
  model: DecodeShape & { dir: string; gguf: string };
  workload: Workload;
  load: { before: number[]; after: number[]; foreignCoresMedian: number; foreignCoresMax: number };
  bandwidth: MachineBandwidth;
  moeserve: { args: string; describe: Record<string, unknown> };
  llama: {
    version: string;
    systemInfo: string;
    singleContextSize: number;
    batchSize: number;
    flashAttention: string | boolean;
    batching: string;
    describe: Record<string, unknown>;
  };
  metrics: MetricSummary[];
  decodeBandwidth: { moeserve: EngineBandwidth; llama: EngineBandwidth };
}

export interface WrittenFiles {
  json: string;
  svg: string;
  latestSvg?: string;
  resultsMd?: string;
}

/** Writes bench/results/peer-<timestamp>.{json,svg}; a full run also bench/results/peer-latest.svg and its section of bench/RESULTS.md. */
export function writeReport(benchDir: string, r: PeerReport): WrittenFiles {
  const outDir = path.join(benchDir, 'results');
  fs.mkdirSync(outDir, { recursive: true });
  const stamp = r.date.replace(/[:.]/g, '-');
  const json = path.join(outDir, `peer-${stamp}.json`);
  const svg = path.join(outDir, `peer-${stamp}.svg`);
  fs.writeFileSync(json, JSON.stringify(r, null, 2) + '\n');
  const subtitle = `${r.model.layers}-layer slice of Tongyi DeepResearch 30B-A3B, bf16, ${r.threads} threads, ${r.machine.cpuModel}, ` +
    `median of ${r.runs} run${r.runs === 1 ? '' : 's'}, ${r.date.slice(0, 16).replace('T', ' ')} UTC`;
  const chart = peerChartSvg(r.metrics, 'moeserve vs llama.cpp (ratio above each pair)', subtitle);
  fs.writeFileSync(svg, chart);
  const written: WrittenFiles = { json, svg };
  if (!r.quick) {
    written.latestSvg = path.join(outDir, 'peer-latest.svg');
    fs.writeFileSync(written.latestSvg, chart);
    written.resultsMd = path.join(benchDir, 'RESULTS.md');
    updateResultsFile(written.resultsMd, 'peer', peerMarkdown(r, path.relative(benchDir, json), path.relative(benchDir, written.latestSvg)));
  }
  return written;
}
