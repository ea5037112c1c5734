// The `search` and `visit` tools, with the names, argument shapes and output formats of Tongyi DeepResearch's
// reference agent, served by a local corpus, a Serper-compatible web search and http(s) fetching.
import type { ResearchTool } from '../tool.ts';
import type { Corpus } from './corpus.ts';
import { CORPUS_SCHEME } from './corpus.ts';
import { BLOCK_SEPARATOR, errorMessage, formatQueryResults, formatVisit, truncateText, type ResultSection } from './format.ts';
import { fetchPage, parseHttpUrl, type FetchPageOptions } from './http.ts';
import type { WebSearch } from './serper.ts';

export interface SearchToolOptions {
  corpus?: Corpus;
  web?: WebSearch;
  /** Results per query from each backend (default 10, as the reference). */
  limit?: number;
  /** Queries answered per call at most; more are dropped with a note (default 10). */
  maxQueries?: number;
}

/**
 * `search` {query: string[]}. With both a corpus and a web search it asks both and lists the corpus's results first
 * ("## Corpus Results", then "## Web Results", numbered on), so the user's own documents come before the web; one
 * backend failing leaves the other's results with a note, and only when every query failed everywhere does it throw.
 */
export function createSearchTool(options: SearchToolOptions): ResearchTool {
  const { corpus, web } = options;
  if (!corpus && !web) throw new Error('the search tool needs a corpus directory or a web search key');
  const limit = options.limit ?? 10;
  const maxQueries = options.maxQueries ?? 10;
  const where = corpus && web ? 'the local document collection and the web' : corpus ? 'the local document collection' : 'Google (web)';
  return {
    name: 'search',
    description: `Perform searches of ${where} then returns a string of the top search results. Accepts multiple queries.`,
    parameters: {
      type: 'object',
      properties: {
        query: {
          type: 'array',
          items: { type: 'string', description: 'The search query.' },
          minItems: 1,
          description: 'The list of search queries.',
        },
      },
      required: ['query'],
    },
    async run(args, signal) {
      const all = stringList(args.query, 'query');
      const queries = all.slice(0, maxQueries);
      let failures = 0;
      let firstError = '';
      const blocks = await Promise.all(
        queries.map(async (query) => {
          const sections: ResultSection[] = [];
          if (corpus) sections.push({ heading: 'Corpus Results', hits: corpus.search(query, limit) });
          if (web) {
            try {
              sections.push({ heading: 'Web Results', hits: (await web.search(query, signal)).slice(0, limit) });
            } catch (err) {
              signal.throwIfAborted();
              failures++;
              firstError ||= errorMessage(err);
              sections.push({ heading: 'Web Results', hits: [], error: errorMessage(err) });
            }
          }
          return formatQueryResults(query, sections);
        }),
      );
      if (!corpus && failures === queries.length) throw new Error(firstError);
      const dropped = all.length - queries.length;
      const note = dropped > 0 ? `\n[search] only the first ${maxQueries} queries were run; ${dropped} dropped` : '';
      return blocks.join(BLOCK_SEPARATOR) + note;
    },
  };
}

export interface VisitToolOptions {
  corpus?: Corpus;
  /** Fetch http(s) URLs (default false). */
  network?: boolean;
  fetchOptions?: FetchPageOptions;
  /** Characters of page text per call, shared among the URLs of the call (default 24000; at least 2000 a page). */
  maxChars?: number;
}

/**
 * `visit` {url: string | string[], goal: string}: each page's readable text, under the goal, cut to a share of the
 * budget. corpus:// links are read from the corpus, http(s) URLs fetched (when network is on), anything else
 * refused. Several URLs: a page that fails gets an error line in its place; the call throws only if all fail.
 */
export function createVisitTool(options: VisitToolOptions): ResearchTool {
  const { corpus, network = false } = options;
  if (!corpus && !network) throw new Error('the visit tool needs a corpus directory or network access');
  const maxChars = options.maxChars ?? 24_000;
  const what = corpus && network ? 'webpage(s) or corpus:// document(s)' : corpus ? 'corpus:// document(s)' : 'webpage(s)';
  return {
    name: 'visit',
    description: `Visit ${what} and return the content.`,
    parameters: {
      type: 'object',
      properties: {
        url: {
          type: 'array',
          items: { type: 'string' },
          description: 'The URL(s) of the webpage(s) to visit. Can be a single URL or an array of URLs.',
        },
        goal: { type: 'string', description: 'The specific information goal for visiting webpage(s).' },
      },
      required: ['url', 'goal'],
    },
    async run(args, signal) {
      const urls = stringList(args.url, 'url');
      const goal = typeof args.goal === 'string' && args.goal.trim() ? args.goal.trim() : '(none given)';
      const perPage = Math.max(2000, Math.floor(maxChars / urls.length));
      const read = async (url: string): Promise<string> => {
        let title: string;
        let text: string;
        if (url.startsWith(CORPUS_SCHEME)) {
          if (!corpus) throw new Error(`no corpus is configured, so ${url} cannot be read`);
          ({ title, text } = corpus.get(url));
        } else {
          if (!/^[a-z][a-z0-9+.-]*:/i.test(url)) {
            throw new Error(`not a URL: ${url} (visit takes http(s) URLs${corpus ? ' and the corpus:// links that search returns' : ''})`);
          }
          parseHttpUrl(url);
          if (!network) throw new Error(`network access is off: only corpus:// links can be visited, not ${url}`);
          const page = await fetchPage(url, signal, options.fetchOptions);
          title = page.title;
          text = page.truncated ? `${page.text}\n[... the page was longer than the download limit and was cut]` : page.text;
        }
        if (!text.trim()) throw new Error(`${url} has no readable text`);
        return formatVisit(url, goal, title, truncateText(text, perPage));
      };
      const results = await Promise.allSettled(urls.map(read));
      signal.throwIfAborted();
      if (urls.length === 1 && results[0].status === 'rejected') throw results[0].reason;
      if (results.every((r) => r.status === 'rejected')) {
        throw new Error(results.map((r, i) => `${urls[i]}: ${errorMessage((r as PromiseRejectedResult).reason)}`).join('; '));
      }
      return results
        .map((r, i) => (r.status === 'fulfilled' ? r.value : `[visit] Failed to read ${urls[i]}: ${errorMessage(r.reason)}`))
        .join(BLOCK_SEPARATOR)
        .trim();
    },
  };
}

/** A string or a list of strings, blanks dropped; throws when there is none. */
function stringList(value: unknown, name: string): string[] {
  const list = typeof value === 'string' ? [value] : Array.isArray(value) ? value : [];
  const strings = list.filter((v): v is string => typeof v === 'string').map((v) => v.trim()).filter(Boolean);
  if (strings.length === 0) throw new Error(`'${name}' must be a string or a non-empty array of strings`);
  return strings;
}
