// llama.cpp in-process through node-llama-cpp's prebuilt CPU build: the same GGUF weights (BF16), the
// same threads, greedy sampling, exactly N tokens per stream (EOS is yielded and generation goes on).
// Concurrent streams are LlamaContextSequence objects of one context, evaluated at once: the context
// queues every sequence's pending tokens and dispatches them as one llama_decode batch (it dispatches
// immediately once every sequence of the context has queued, so a context is made with exactly as many
// sequences as there are streams; see stepBarrier for keeping them together). The batching actually
// achieved is counted and recorded.
import { getLlama, LlamaLogLevel, type Llama, type LlamaContext, type LlamaModel, type Token } from 'node-llama-cpp';
import type { ConcurrentSample, DecodeSample, PeerEngine, PrefillSample } from './engine.ts';
import { stepBarrier } from './step-barrier.ts';

export interface LlamaOptions {
  gguf: string;
  threads: number;
  /** Tokens per sequence of the single-stream context (prefill prompt + output must fit). */
  contextSize: number;
  /** Tokens per llama_decode (n_batch = n_ubatch in node-llama-cpp); the prefill prompt goes in one. */
  batchSize: number;
  flashAttention: 'auto' | boolean;
  /** Lock the weights in RAM (llama.cpp's --mlock). */
  mlock: boolean;
}

/** node-llama-cpp's internal binding context, wrapped to count the batches it hands to llama_decode. */
interface BatchCounter {
  decodes: number;
  largest: number;
}

function countBatches(context: LlamaContext): BatchCounter {
  const counter: BatchCounter = { decodes: 0, largest: 0 };
  // Internal API (node-llama-cpp 3.22): AddonContext.initBatch(size) precedes each decodeBatch().
  const ctx = (context as unknown as { _ctx: { initBatch(n: number): void } })._ctx;
  if (typeof ctx?.initBatch !== 'function') return counter;
  const initBatch = ctx.initBatch.bind(ctx);
  // The method is a read-only prototype property of the native object: shadow it on the instance.
  Object.defineProperty(ctx, 'initBatch', {
    configurable: true,
    value: (n: number) => {
      counter.decodes++;
      counter.largest = Math.max(counter.largest, n);
      initBatch(n);
    },
  });
  return counter;
}

export async function startLlama(o: LlamaOptions): Promise<PeerEngine & { llama: Llama; model: LlamaModel }> {
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, progressLogs: false, maxThreads: o.threads });
  const model = await llama.loadModel({ modelPath: o.gguf, gpuLayers: 0, useMmap: true, useMlock: o.mlock });
  const threads = { ideal: o.threads, min: o.threads };
  const single = await model.createContext({
    contextSize: o.contextSize, batchSize: o.batchSize, sequences: 1, threads, flashAttention: o.flashAttention,
  });
  const seq = single.getSequence();

  /** Exactly `n` greedy tokens after `prompt`; awaits onToken after each. */
  const generate = async (s: typeof seq, prompt: number[], n: number, onToken?: () => void | Promise<void>): Promise<number> => {
    let count = 0;
    for await (const _token of s.evaluate(prompt as Token[], { temperature: 0, yieldEogToken: true })) {
      count++;
      await onToken?.();
      if (count === n) break;
    }
    if (count !== n) throw new Error(`llama.cpp generated ${count} tokens, expected ${n}`);
    return count;
  };

  return {
    name: 'llama.cpp',
    pid: process.pid,
    llama,
    model,
    async prefill(prompt): Promise<PrefillSample> {
      await seq.clearHistory();
      const t0 = performance.now();
      await generate(seq, prompt, 1);
      return { ms: performance.now() - t0 };
    },
    async decode(prompt, maxTokens): Promise<DecodeSample> {
      await seq.clearHistory();
      const t0 = performance.now();
      let first = NaN;
      let last = NaN;
      const tokens = await generate(seq, prompt, maxTokens, () => {
        last = performance.now();
        if (Number.isNaN(first)) first = last;
      });
      return { firstTokenMs: first - t0, decodeMs: last - first, tokens };
    },
    async concurrent(prompts, maxTokens): Promise<ConcurrentSample> {
      const perSeq = Math.ceil((Math.max(...prompts.map((p) => p.length)) + maxTokens + 1) / 256) * 256;
      const context = await model.createContext({
        contextSize: perSeq, sequences: prompts.length, threads, flashAttention: o.flashAttention,
        batchSize: Math.max(o.batchSize, prompts.reduce((n, p) => n + p.length, 0)),
      });
      try {
        const seqs = prompts.map(() => context.getSequence());
        const counter = countBatches(context);
        const t0 = performance.now();
        const barrier = stepBarrier(prompts.length);
        const counts = await Promise.all(seqs.map((s, i) => generate(s, prompts[i]!, maxTokens, barrier)));
        const ms = performance.now() - t0;
        // Ideal: one llama_decode for all prompts (when they fit one batch), then one per step for all streams.
        const notes: Record<string, number> = {
          llamaDecodeCalls: counter.decodes,
          llamaDecodeCallsIdeal: maxTokens,
          llamaLargestBatch: counter.largest,
        };
        return { ms, tokens: counts.reduce((a, b) => a + b, 0), notes };
      } finally {
        await context.dispose();
      }
    },
    cpuMs: () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    },
    describe: () => ({
      transport: 'in-process (node-llama-cpp)',
      threads: o.threads,
      singleStreamContext: { contextSize: o.contextSize, batchSize: o.batchSize },
      flashAttention: o.flashAttention,
      mlock: o.mlock,
      kvCacheType: 'F16 (default)',
      llamaCppBuild: llama.buildType,
      systemInfo: llama.systemInfo,
    }),
    async close() {
      await single.dispose();
      await model.dispose();
      await llama.dispose();
    },
  };
}
