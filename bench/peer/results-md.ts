// bench/RESULTS.md: the latest full peer benchmark, with the machine it ran on and how to read it.
import type { PeerReport } from './report.ts';
import { describeBandwidth } from './bandwidth.ts';
import { markdownTable } from './summary.ts';

const gb = (x: number) => (x / 1e9).toFixed(2);
const mb = (x: number) => (x / 1e6).toFixed(1);

export function resultsMarkdown(r: PeerReport, jsonFile: string, svgFile: string): string {
  const m = r.machine;
  const w = r.workload;
  const db = r.decodeBandwidth;
  const l = r.load;
  return `# Peer benchmark: moeserve vs llama.cpp

The latest full run of \`npm run bench:peer\` (issue 5), rewritten by each full run (not by \`--quick\`).
Raw samples: \`${jsonFile}\` (git-ignored; the JSON of each run is kept there), chart: [\`${svgFile}\`](${svgFile}).

![moeserve vs llama.cpp](${svgFile})

- **Date**: ${r.date} (took ${(r.durationS / 60).toFixed(1)} min)
- **Model**: the "slice" checkpoint, Tongyi DeepResearch 30B-A3B's real layer shapes with ${r.model.layers} layers: hidden ${r.model.hidden},
  ${r.model.heads} query / ${r.model.kvHeads} KV heads × ${r.model.headDim}, ${r.model.experts} experts top-${r.model.topK}, moe_intermediate ${r.model.moeIntermediate},
  vocab ${r.model.vocab}, random bf16 weights (\`bench/.cache/\`); llama.cpp reads the same weights as a BF16 GGUF (norms and router F32).
- **Machine**: ${m.cpuModel}, ${m.cores} cores, ${m.memGiB} GiB, ${m.kernel}, Node ${m.node}; moeserve ${m.moeserveVersion} SIMD \`${m.moeserveSimd}\`
  (kernels \`${m.moeserveKernels}\`); llama.cpp: node-llama-cpp ${r.llama.version} prebuilt CPU build (\`${r.llama.systemInfo}\`).
- **Threads**: ${r.threads} on both sides. **Runs**: ${r.runs}, each figure the median; engines alternate (which goes first alternates too).
- **Load**: load average ${l.before.join(' / ')} before, ${l.after.join(' / ')} after (1/5/15 min); other processes used
  ${l.foreignCoresMedian.toFixed(2)} cores (median over samples, max ${l.foreignCoresMax.toFixed(2)}) while the samples ran.
- **Memory read bandwidth**: **${describeBandwidth(r.bandwidth)}**: the reference for the decode bandwidth below (a lower
  bound, measured from Node: glibc's memchr over buffers far larger than the last-level cache, in worker threads).

${markdownTable(r.metrics)}

**Decode bandwidth** (one stream): ${gb(db.moeserve.bytesPerToken)} GB of weights per token for moeserve (attention ${gb(db.moeserve.breakdown.attention)},
8 experts × ${r.model.layers} layers ${gb(db.moeserve.breakdown.experts)}, lm_head ${gb(db.moeserve.breakdown.lmHead)}, router + norms + embedding row
${mb(db.moeserve.breakdown.router + db.moeserve.breakdown.norms + db.moeserve.breakdown.embeddingRow)} MB) × ${db.moeserve.tokensPerS.toFixed(2)} tok/s =
**${db.moeserve.gbPerS.toFixed(1)} GB/s, ${(db.moeserve.fraction * 100).toFixed(0)}%** of the measured bandwidth; llama.cpp
${gb(db.llama.bytesPerToken)} GB × ${db.llama.tokensPerS.toFixed(2)} tok/s = ${db.llama.gbPerS.toFixed(1)} GB/s, ${(db.llama.fraction * 100).toFixed(0)}%.

## What each figure is

${r.metrics.map((x) => `- **${x.label}**: ${x.definition}`).join('\n')}
- **ratio**: moeserve ÷ llama.cpp of the medians. **ratio per CPU-s**: the same with output tokens per CPU-second of each
  engine's process (all threads), which other processes disturb less than wall time (a thread that spins while it waits
  still counts).
- Prompts are random ordinary token ids (no tokenizer, no template on either side), distinct for every run and stream, so
  prefix caching never applies. Sampling is greedy on both sides; every stream produces exactly its token count (EOS
  ignored: \`ignore_eos\` for moeserve, \`yieldEogToken\` and a count for llama.cpp).
- moeserve: \`moeserve serve\` in a child process (${r.moeserve.args}), measured through its HTTP API with streaming
  \`/v1/completions\` and the \`openai\` client (the decode run asks \`logprobs: 0\` so that every token is its own chunk).
- llama.cpp: in-process, one context of ${r.llama.singleContextSize} tokens (batch ${r.llama.batchSize}) for prefill and decode; for N streams a
  context with N sequences, all generating at once (node-llama-cpp batches every sequence's next token into one
  \`llama_decode\`: ${r.llama.batching}). Flash attention \`${String(r.llama.flashAttention)}\`, KV cache F16 (defaults).
- Workload: prefill ${w.prefillTokens} tokens; decode ${w.decodeTokens} tokens after a ${w.shortPromptTokens}-token prompt; concurrency ${w.concurrency.join(' / ')} streams
  of a ${w.shortPromptTokens}-token prompt + ${w.concurrentTokens} tokens each.

Re-run: \`npm run bench:peer\` (\`-- --runs 5\`, \`-- --layers 8\`, \`-- --quick\`; \`-- --help\` for all options).
`;
}
