// Web search through a Serper-compatible API (https://serper.dev, what the reference agent uses): POST {q, num}
// to `${baseUrl}/search` with the user's key in X-API-KEY; the `organic` results become search hits.
import { errorMessage, oneLine, type SearchHit } from './format.ts';
import { withDeadline, type FetchFn } from './http.ts';

export interface WebSearch {
  /** Names the backend in messages ("Serper"). */
  name: string;
  search(query: string, signal: AbortSignal): Promise<SearchHit[]>;
}

export interface SerperOptions {
  apiKey: string;
  baseUrl?: string;
  fetch?: FetchFn;
  /** Results asked for per query (default 10, as the reference). */
  num?: number;
  /** Per query (default 15 s). */
  timeoutMs?: number;
}

export function createSerperSearch(options: SerperOptions): WebSearch {
  if (!options.apiKey) throw new Error('a Serper API key is needed for web search');
  const baseUrl = (options.baseUrl ?? 'https://google.serper.dev').replace(/\/+$/, '');
  const endpoint = `${baseUrl}/search`;
  const fetchFn = options.fetch ?? fetch;
  const num = options.num ?? 10;
  const timeoutMs = options.timeoutMs ?? 15_000;
  return {
    name: 'Serper',
    search: (query, signal) =>
      withDeadline(signal, timeoutMs, `web search for '${query}'`, async (inner) => {
        let response: Response;
        try {
          response = await fetchFn(endpoint, {
            method: 'POST',
            signal: inner,
            headers: { 'X-API-KEY': options.apiKey, 'content-type': 'application/json' },
            body: JSON.stringify({ q: query, num }),
          });
        } catch (err) {
          if (inner.aborted) throw err;
          throw new Error(`web search request to ${endpoint} failed: ${errorMessage(err)}`);
        }
        const body = await response.text();
        if (!response.ok) {
          const detail = oneLine(body).slice(0, 200);
          throw new Error(`web search failed: HTTP ${response.status}${response.statusText ? ' ' + response.statusText : ''}${detail ? `: ${detail}` : ''}`);
        }
        let data: unknown;
        try {
          data = JSON.parse(body);
        } catch {
          throw new Error(`web search returned a body that is not JSON (${oneLine(body).slice(0, 80) || 'empty'})`);
        }
        if (typeof data !== 'object' || data === null) throw new Error('web search returned JSON that is not an object');
        const organic = (data as { organic?: unknown }).organic;
        if (organic === undefined) return [];
        if (!Array.isArray(organic)) throw new Error("web search returned an 'organic' field that is not a list");
        const hits: SearchHit[] = [];
        for (const item of organic as Record<string, unknown>[]) {
          if (typeof item?.link !== 'string') continue;
          hits.push({
            title: typeof item.title === 'string' ? item.title : item.link,
            link: item.link,
            snippet: typeof item.snippet === 'string' ? item.snippet.replace("Your browser can't play this video.", '').trim() : undefined,
            date: typeof item.date === 'string' ? item.date : undefined,
            source: typeof item.source === 'string' ? item.source : undefined,
          });
        }
        return hits;
      }),
  };
}
