// The bench/RESULTS.md sections: the latest full peer benchmark and the latest micro-benchmarks, with the
// machine they ran on and what each figure means.
import { describeBandwidth, type MachineBandwidth } from './bandwidth.ts';
import type { Figure } from './micro-cases.ts';
import type { MachineInfo } from './machine.ts';
import type { PeerReport } from './report.ts';
import { markdownTable } from './summary.ts';

const gb = (x: number) => (x / 1e9).toFixed(3);
const mb = (x: number) => (x / 1e6).toFixed(1);

function machineLine(m: MachineInfo): string {
  return `${m.cpuModel}, ${m.cores} cores, ${m.memGiB} GiB, ${m.kernel}, Node ${m.node}; moeserve ${m.moeserveVersion} at ${m.revision}, SIMD \`${m.moeserveSimd}\` (kernels \`${m.moeserveKernels}\`)`;
}

export function peerMarkdown(r: PeerReport, jsonFile: string, svgFile: string): string {
  const w = r.workload;
  const d = r.decodeBandwidth;
  const b = d.moeserve.breakdown;
  const l = r.load;
  return `## moeserve vs llama.cpp

The latest full run of \`npm run bench:peer\` (issue 5; \`--quick\` runs do not touch this file).
Samples: \`${jsonFile}\` (git-ignored). Chart: \`${svgFile}\`.

![moeserve vs llama.cpp](${svgFile})

${markdownTable(r.metrics)}

Decode bandwidth (one stream): moeserve reads ${gb(d.moeserve.bytesPerToken)} GB of weights per token${r.moeserve.describe.codedWeights ? ' (the bf16 weights in their lossless 12-bit coded form, 0.77× their bytes)' : ''} (attention projections ${gb(b.attention)},
${r.model.topK} experts × ${r.model.layers} layers ${gb(b.experts)}, lm_head ${gb(b.lmHead)}, router + norms + embedding row ${mb(b.router + b.norms + b.embeddingRow)} MB);
× ${d.moeserve.tokensPerS.toFixed(2)} tok/s = **${d.moeserve.gbPerS.toFixed(1)} GB/s, ${(d.moeserve.fraction * 100).toFixed(0)}% of the measured bandwidth**.
llama.cpp: ${gb(d.llama.bytesPerToken)} GB (F32 norms and router) × ${d.llama.tokensPerS.toFixed(2)} tok/s = ${d.llama.gbPerS.toFixed(1)} GB/s, ${(d.llama.fraction * 100).toFixed(0)}%.
(The KV cache read per token, under 1 MB at these contexts, is left out.)

- Date: ${r.date}; the run took ${(r.durationS / 60).toFixed(1)} min; ${r.runs} runs, each figure their median.
- Machine: ${machineLine(r.machine)}. llama.cpp: node-llama-cpp ${r.llama.version}, prebuilt CPU build (\`${r.llama.systemInfo}\`).
- Memory read bandwidth: ${describeBandwidth(r.bandwidth)}.
- Load: load average ${l.before.join(' / ')} before and ${l.after.join(' / ')} after (1/5/15 min); while the samples ran, other
  processes used ${l.foreignCoresMedian.toFixed(2)} cores (median over samples; max ${l.foreignCoresMax.toFixed(2)}).
- Model: the "slice" checkpoint, Tongyi DeepResearch 30B-A3B's real layer shapes with ${r.model.layers} layers (hidden ${r.model.hidden},
  ${r.model.heads} query / ${r.model.kvHeads} KV heads × ${r.model.headDim}, ${r.model.experts} experts top-${r.model.topK}, moe_intermediate ${r.model.moeIntermediate}, vocab ${r.model.vocab}),
  random bf16 weights, generated into \`bench/.cache/\`; llama.cpp reads the same weights as a BF16 GGUF (norms and router F32).

### What each figure is

${r.metrics.map((x) => `- **${x.label}** (${x.unit}): ${x.definition}`).join('\n')}
- **ratio**: moeserve ÷ llama.cpp, of the medians. **ratio per CPU-s**: the same with output tokens per CPU-second of each
  engine's process (all threads; moeserve's server process without the client), steadier than wall time when other
  processes run (a thread spinning while it waits still counts). **runs**: every sample, in run order.
- Both engines use ${r.threads} threads, ${r.order === 'sequential'
    ? 'one after the other (all samples of moeserve, then all of llama.cpp: both models would not fit in memory together)'
    : 'run alternately (which goes first alternates from figure to figure and run to run)'}, each after a warm-up that pages in every expert, and every sample right after an untimed 64-token prompt on the same engine (so that neither is measured cold after sitting idle while the other ran). Prompts are random ordinary token ids (no tokenizer or
  template on either side), distinct for every run and stream, so no prefix cache applies. Sampling is greedy on both
  sides and every stream produces exactly its token count (\`ignore_eos\` for moeserve; EOS yielded and counted for llama.cpp).
- moeserve: \`${r.moeserve.args}\` in a child process, measured through its HTTP API: streaming \`/v1/completions\`
  with the \`openai\` client (the decode run asks \`logprobs: 0\` so that every token arrives in its own chunk).${r.moeserve.describe.dtype ? ` Its arithmetic: ${String(r.moeserve.describe.dtype).replace(/^dtype: /, '')}.` : ''}
- llama.cpp: in-process through node-llama-cpp: one context of ${r.llama.singleContextSize} tokens (batch ${r.llama.batchSize}) for prefill and decode;
  for N streams a context of N sequences generating together, held in lockstep so that every step is one \`llama_decode\`
  of all N (${r.llama.batching}). Flash attention \`${String(r.llama.flashAttention)}\`, F16 KV cache (node-llama-cpp's defaults).
- Weights ${r.llama.describe.mlock ? 'locked in RAM on both sides (moeserve `--mlock`, node-llama-cpp `useMlock`)' : 'not locked (`--no-mlock`)'}: the OS's proactive
  reclaim (DAMON on the VM these figures come from) otherwise pages out experts that sat idle while the other engine ran,
  and the next sample reads them back from disk.
- Workload: prefill ${w.prefillTokens} tokens; decode ${w.decodeTokens} tokens after a ${w.shortPromptTokens}-token prompt; ${w.concurrency.join(' / ')} streams of a
  ${w.shortPromptTokens}-token prompt + ${w.concurrentTokens} tokens each.

Re-run: \`npm run bench:peer\` (about 12 minutes on an idle 2-core machine; \`-- --runs 6\`, \`-- --layers 8\`, \`-- --quick\`, \`-- --help\`).
`;
}

export interface MicroReport {
  date: string;
  machine: MachineInfo;
  threads: number;
  load: { before: number[]; after: number[]; foreignCores: number };
  bandwidth: MachineBandwidth;
  figures: Figure[];
}

export function microMarkdown(r: MicroReport, jsonFile: string): string {
  const f = (x: number | undefined, d: number) => (x === undefined || !Number.isFinite(x) ? '' : x.toFixed(d));
  const rows = r.figures.map((x) => `| ${x.family} | ${x.what} | ${f(x.ms, 2)} | ${f(x.gbPerS, 1)} | ${x.ofBandwidth === undefined ? '' : `${(x.ofBandwidth * 100).toFixed(0)}%`} | ${f(x.gflopPerS, 1)} |`);
  const formulas = [...new Set(r.figures.map((x) => `- ${x.family}: ${x.formula}`))];
  return `## Kernel micro-benchmarks

The latest \`npm run bench:micro\`: each kernel family through the addon (\`loadModel\` + \`step\`) on the slice checkpoint
(2 layers, real shapes), ${r.threads} threads. Times are the addon's own per-phase step timings (\`MOESERVE_PROFILE=1\`, summed
over layers), median over repetitions; "of bandwidth" is GB/s ÷ the measured read bandwidth. Samples: \`${jsonFile}\` (git-ignored).

| family | case | ms | GB/s | of bandwidth | GFLOP/s |
| --- | --- | ---: | ---: | ---: | ---: |
${rows.join('\n')}

${formulas.join('\n')}
- Expert-grouped MoE: n streams of one token each in one step; "× vs n × 1 token" is n × the one-token time ÷ this time (the
  gain from reading each expert once for all its tokens). Attention at long contexts reads the KV pool's zero-initialised
  blocks for the positions before the token (their values do not change the work).

- Date: ${r.date}. Machine: ${machineLine(r.machine)}.
- Memory read bandwidth: ${describeBandwidth(r.bandwidth)}.
- Load: load average ${r.load.before.join(' / ')} before and ${r.load.after.join(' / ')} after; other processes used ${r.load.foreignCores.toFixed(2)} cores
  (mean) while the cases ran.
`;
}
