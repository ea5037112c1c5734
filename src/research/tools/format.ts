// The text the research tools hand the model, in the shapes Tongyi DeepResearch's reference agent was trained on
// (Alibaba-NLP/DeepResearch inference/tool_search.py and tool_visit.py): a numbered markdown list of results per
// query, queries and pages separated by "\n=======\n".

/** One search result, from the corpus or the web. */
export interface SearchHit {
  title: string;
  /** An http(s) URL, or a corpus://relative/path link. */
  link: string;
  snippet?: string;
  date?: string;
  source?: string;
}

/** A titled list of results inside one query's answer ("## Web Results"), or the reason that backend failed. */
export interface ResultSection {
  heading: string;
  hits: SearchHit[];
  error?: string;
}

export const BLOCK_SEPARATOR = '\n=======\n';

/** `1. [title](link)\nDate published: …\nSource: …\n\nsnippet`, as the reference formats a Serper hit. */
export function formatHit(hit: SearchHit, index: number): string {
  const date = hit.date ? `\nDate published: ${hit.date}` : '';
  const source = hit.source ? `\nSource: ${hit.source}` : '';
  const snippet = hit.snippet ? `\n${hit.snippet}` : '';
  return `${index}. [${oneLine(hit.title) || hit.link}](${hit.link})${date}${source}\n${snippet}`;
}

/** One query's answer: "A search for 'q' found N results:\n\n## Web Results\n1. …", numbering running across sections. */
export function formatQueryResults(query: string, sections: ResultSection[]): string {
  const total = sections.reduce((n, s) => n + s.hits.length, 0);
  const errors = sections.filter((s) => s.error).map((s) => `[search] ${s.heading} failed: ${s.error}`);
  if (total === 0) {
    const none = `No results found for '${query}'. Try with a more general query.`;
    return errors.length ? `${none}\n${errors.join('\n')}` : none;
  }
  let index = 0;
  const parts = sections
    .filter((s) => s.hits.length > 0)
    .map((s) => `## ${s.heading}\n` + s.hits.map((hit) => formatHit(hit, ++index)).join('\n\n'));
  const tail = errors.length ? `\n\n${errors.join('\n')}` : '';
  return `A search for '${query}' found ${total} results:\n\n${parts.join('\n\n')}${tail}`;
}

/**
 * One visited page. The reference agent has a second LLM summarise the page against the goal and prints its
 * "evidence" and "summary"; we have no separate summary model, so the page's readable text itself is the evidence
 * (cut to a budget), under the same heading, and the model reads it against its goal.
 */
export function formatVisit(url: string, goal: string, title: string, text: string): string {
  const firstLine = text.trimStart().split('\n', 1)[0].replace(/^#+\s*/, '').trim();
  const heading = title && oneLine(title) !== firstLine ? `# ${oneLine(title)}\n\n` : '';
  return `The useful information in ${url} for user goal ${goal} as follows: \n\nEvidence in page: \n${heading}${text}\n`;
}

/** Cuts text to maxChars (at a whitespace boundary when one is near) and says how much was left out. */
export function truncateText(text: string, maxChars: number): string {
  if (text.length <= maxChars) return text;
  let cut = maxChars;
  const space = text.lastIndexOf(' ', maxChars);
  const newline = text.lastIndexOf('\n', maxChars);
  const boundary = Math.max(space, newline);
  if (boundary > maxChars * 0.8) cut = boundary;
  return `${text.slice(0, cut).trimEnd()}\n[... truncated: ${text.length - cut} more characters]`;
}

export function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as { cause?: unknown }).cause;
    const causeText = cause instanceof Error ? cause.message : typeof cause === 'string' ? cause : '';
    return causeText && !err.message.includes(causeText) ? `${err.message} (${causeText})` : err.message;
  }
  return String(err);
}
