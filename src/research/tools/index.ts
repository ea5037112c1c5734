// The research agents' tools, built from the user's options: `search` and `visit`, served by a local corpus
// (--corpus DIR), a Serper-compatible web search (the user's own key) and http(s) fetching.
//
// There is no `python` tool (the reference agent's PythonInterpreter): running code the model writes is only safe
// inside a real sandbox (a container or VM with no network, no access to the user's files and bounded resources),
// and nothing in-process here provides one, so it is left out rather than run unconfined.
import type { ResearchTool } from '../tool.ts';
import { createCorpus, type Corpus, type CorpusOptions } from './corpus.ts';
import type { FetchFn } from './http.ts';
import { createSerperSearch } from './serper.ts';
import { createSearchTool, createVisitTool } from './tools.ts';

export { createCorpus, corpusLink, corpusPath, CORPUS_SCHEME, type Corpus, type CorpusDocument, type CorpusOptions } from './corpus.ts';
export { createSerperSearch, type SerperOptions, type WebSearch } from './serper.ts';
export { fetchPage, isPrivateAddress, type FetchPageOptions, type FetchedPage } from './http.ts';
export { createSearchTool, createVisitTool, type SearchToolOptions, type VisitToolOptions } from './tools.ts';
export { extractReadable } from './html.ts';
export type { SearchHit } from './format.ts';

/** The tools createTools can build, in their default order. */
export const TOOL_NAMES = ['search', 'visit'] as const;

export interface CreateToolsOptions {
  /** The tools wanted (default: search and visit). */
  names?: string[];
  /** A directory of .txt/.md/.html files for offline search and visit. */
  corpusDir?: string;
  /** An already-built corpus (instead of corpusDir), e.g. shared between runs. */
  corpus?: Corpus;
  corpusOptions?: CorpusOptions;
  /** Enables web search (Serper-compatible API), when the network is allowed. */
  serperApiKey?: string;
  serperBaseUrl?: string;
  /** Used for web search and page fetches (tests inject one). */
  fetch?: FetchFn;
  /** Web search and http(s) visits (default true). When false, a Serper key is ignored and only the corpus serves. */
  allowNetwork?: boolean;
  /** Let visit fetch loopback/private-network addresses (default false). */
  allowPrivateNetwork?: boolean;
  /** Per page fetch, body included (default 20000 ms). */
  fetchTimeoutMs?: number;
  /** Bytes of a fetched page read at most (default 2 MiB). */
  maxPageBytes?: number;
  /** Per web search query (default 15000 ms). */
  searchTimeoutMs?: number;
  /** Characters of page text one visit call returns, shared among its URLs (default 24000). */
  visitMaxChars?: number;
}

/**
 * Builds the tools. Throws with a message for the user on an unknown name, on python (no sandbox), and on a tool
 * that nothing would serve (search without a corpus or a web key, visit without a corpus or the network).
 */
export async function createTools(options: CreateToolsOptions = {}): Promise<ResearchTool[]> {
  const network = options.allowNetwork ?? true;
  const webKey = network ? options.serperApiKey?.trim() : undefined;
  const names = [...new Set((options.names ?? [...TOOL_NAMES]).map((n) => n.trim()).filter(Boolean))];
  for (const name of names) {
    if (/^python/i.test(name)) {
      throw new Error(`the ${name} tool is not available: model-written code can only run safely in a sandbox, and moeserve has none`);
    }
    if (!(TOOL_NAMES as readonly string[]).includes(name)) throw new Error(`unknown tool '${name}' (available: ${TOOL_NAMES.join(', ')})`);
  }
  if (names.length === 0) throw new Error('no tools were asked for');

  const corpus = options.corpus ?? (options.corpusDir !== undefined ? await createCorpus(options.corpusDir, options.corpusOptions) : undefined);
  const web = webKey
    ? createSerperSearch({ apiKey: webKey, baseUrl: options.serperBaseUrl, fetch: options.fetch, timeoutMs: options.searchTimeoutMs })
    : undefined;

  const tools: ResearchTool[] = [];
  for (const name of names) {
    if (name === 'search') {
      if (!corpus && !web) {
        const why = options.serperApiKey && !network ? ' (a web search key was given, but network access is off)' : '';
        throw new Error(`the search tool has nothing to search: give a corpus directory or a Serper API key${why}`);
      }
      tools.push(createSearchTool({ corpus, web }));
    } else if (name === 'visit') {
      if (!corpus && !network) {
        throw new Error('the visit tool has nothing to read: give a corpus directory or allow network access');
      }
      tools.push(
        createVisitTool({
          corpus,
          network,
          maxChars: options.visitMaxChars,
          fetchOptions: {
            fetch: options.fetch,
            timeoutMs: options.fetchTimeoutMs,
            maxBytes: options.maxPageBytes,
            allowPrivateNetwork: options.allowPrivateNetwork,
          },
        }),
      );
    }
  }
  return tools;
}
