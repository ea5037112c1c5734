// Tokenizing prompts and rendering chat templates off the event loop. The JS tokenizer takes seconds
// per megabyte and the template engine is plain JS too: on the thread that serves every other request
// they would stall /health and every running stream for that long. A pool of worker threads, each
// with the same tokenizer and template, does the per-request work; the event loop keeps only cheap
// checks and the per-token incremental detokenizing. Inline mode (workers: 0) runs the same TextOps
// on the caller's thread, for tools that serve no one else.
import { ApiError } from '../server/errors.ts';
import { WorkerThread, type SerializedError } from '../worker/rpc.ts';
import { RequestError } from '../engine/types.ts';
import { TemplateError, type ChatMessage, type ChatTemplate, type RenderOptions } from './template.ts';
import type { TextTokenizer } from './tokenizer.ts';
import { splitEncoded, TextOps, type EncodedTexts, type EncodeOptions, type RenderedChat } from './text-ops.ts';
import type { TextWorkerInput } from './text-worker.ts';

export type { EncodeOptions } from './text-ops.ts';

export interface ChatPrompt {
  text: string;
  ids: number[];
}

export interface TextService {
  /** Token ids of each text; a 400 naming o.param for a text that cannot fit o.maxTokens (none tokenized then). */
  encode(texts: string[], o: EncodeOptions): Promise<number[][]>;
  /** The chat template's text for `messages` and its token ids. */
  renderChat(messages: ChatMessage[], render: RenderOptions, o: EncodeOptions): Promise<ChatPrompt>;
  /** The text of each id list. */
  decode(lists: number[][]): Promise<string[]>;
  /** Each token's text on its own. */
  tokenTexts(ids: number[]): Promise<string[]>;
  /** Starts the workers now instead of on the first request (each builds the tokenizer: about a second). */
  warmup(): Promise<void>;
  close(): Promise<void>;
}

/** Default worker count: tokenizing is per request, so two keep one long prompt from delaying all others. */
export const DEFAULT_TOKENIZER_WORKERS = 2;

/**
 * Inputs up to this many characters are tokenized (and rendered) on the calling thread: a few
 * milliseconds at most, less than a round trip to a worker, and short requests then never queue
 * behind a megabyte prompt that occupies the workers.
 */
export const INLINE_CHARS = 4096;

/**
 * Inputs up to this many characters (about 16K tokens, tens of ms) go to the first worker, which takes
 * nothing longer: a conversation of ordinary length never waits behind megabyte prompts, which the
 * other workers take (with one worker, it takes both).
 */
export const MEDIUM_CHARS = 65536;

/** Long inputs queued per long-input worker at most; past that a 503 (each can take seconds). */
export const MAX_QUEUED_LONG = 4;

/** Characters of text in a JSON-like value, counting no further than `cap`. */
function textSize(value: unknown, cap: number): number {
  let size = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0 && size <= cap) {
    const v = stack.pop();
    if (typeof v === 'string') {
      size += v.length;
    } else if (v !== null && typeof v === 'object') {
      // Each child counts one character, so that walking a huge array or object stops at the cap too.
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length && size <= cap; i++, size++) stack.push(v[i]);
      } else {
        for (const k in v) {
          if (size > cap) break;
          if (!Object.hasOwn(v, k)) continue;
          size += 1 + k.length;
          stack.push((v as Record<string, unknown>)[k]);
        }
      }
    } else {
      size += 8;
    }
  }
  return size;
}

/** A worker's heap: one with the Qwen3 tokenizer takes about 175 MB; a prompt that would need far more kills that worker only. */
const WORKER_HEAP_MB = 2048;

/** Rebuilds the error classes the routes map to 4xx answers; anything else stays a plain Error (a 500). */
function reviveError(e: SerializedError): Error {
  if (e.name === 'ApiError' && typeof e.status === 'number') return new ApiError(e.status, e.message, e.param ?? null);
  if (e.name === 'RequestError') return new RequestError(e.message, e.param ?? null);
  if (e.name === 'TemplateError') return new TemplateError(e.message);
  return Object.assign(new Error(e.message), { name: e.name });
}

export function createTextService(tokenizer: TextTokenizer, template: ChatTemplate | null, workers = DEFAULT_TOKENIZER_WORKERS): TextService {
  const inline = inlineService(new TextOps(tokenizer, template));
  if (workers === 0) return inline;
  const data: TextWorkerInput = { tokenizer: tokenizer.source, templateConfig: template ? { ...template.tokenizerConfig } : null };
  const threads = Array.from({ length: workers }, () => new WorkerThread({
    module: new URL('./text-worker.ts', import.meta.url),
    data,
    resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_MB },
    reviveError,
    label: 'tokenizer worker',
  }));
  const long = threads.length > 1 ? threads.slice(1) : threads;
  /** Inline, on the medium lane, or on the least busy long-input worker (a 503 when they are all full). */
  const run = async <T>(size: number, inlineRun: () => Promise<T>, remote: (thread: WorkerThread) => Promise<T>): Promise<T> => {
    if (size <= INLINE_CHARS) return inlineRun();
    let thread = threads[0];
    if (size > MEDIUM_CHARS) {
      thread = long.reduce((best, t) => (t.load < best.load ? t : best));
      if (thread.load >= MAX_QUEUED_LONG) {
        throw new ApiError(503, 'The server is busy tokenizing other long prompts; retry shortly (or send shorter ones).');
      }
    }
    try {
      return await remote(thread);
    } catch (err) {
      // A worker that died (its heap limit, a crash) fails every call it held; it restarts on the next.
      if (err instanceof ApiError || err instanceof RequestError || err instanceof TemplateError) throw err;
      throw new ApiError(503, `Tokenizing failed on a worker thread that stopped (${(err as Error).message}); retry.`);
    }
  };
  const sizeOf = (value: unknown) => textSize(value, MEDIUM_CHARS + 1);
  return {
    encode: (texts, o) =>
      run(sizeOf(texts), () => inline.encode(texts, o), async (t) => splitEncoded(await t.call<EncodedTexts>('encode', [texts, o]))),
    renderChat: (messages, render, o) =>
      run(
        sizeOf([messages, render.tools ?? null, render.kwargs ?? null]),
        () => inline.renderChat(messages, render, o),
        async (t) => chatPrompt(await t.call<RenderedChat>('renderChat', [messages, render, o])),
      ),
    decode: (lists) => run(lists.reduce((n, l) => n + 4 * l.length, 0), () => inline.decode(lists), (t) => t.call<string[]>('decode', [lists])),
    tokenTexts: (ids) => run(4 * ids.length, () => inline.tokenTexts(ids), (t) => t.call<string[]>('tokenTexts', [ids])),
    warmup: async () => {
      await Promise.all(threads.map((t) => t.call('ready', [])));
    },
    close: async () => {
      await Promise.all(threads.map((t) => t.close()));
    },
  };
}

const chatPrompt = (r: RenderedChat): ChatPrompt => ({ text: r.text, ids: Array.from(r.ids) });

function inlineService(ops: TextOps): TextService {
  return {
    encode: async (texts, o) => splitEncoded(ops.encode(texts, o)),
    renderChat: async (messages, render, o) => chatPrompt(ops.renderChat(messages, render, o)),
    decode: async (lists) => ops.decode(lists),
    tokenTexts: async (ids) => ops.tokenTexts(ids),
    warmup: async () => {},
    close: async () => {},
  };
}
