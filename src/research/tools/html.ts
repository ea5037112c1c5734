// Readable text from an HTML page: Mozilla's Readability (Firefox's reader view) over linkedom's DOM picks the
// article out of the navigation, sidebars and footers; the article's DOM is then written out as plain text with
// paragraph breaks, list items and headings kept. When Readability finds no article, the whole body's text is used.
import { Readability } from '@mozilla/readability';
import { parseHTML } from 'linkedom';

export interface ReadableText {
  title: string;
  text: string;
}

const SKIP = new Set(['SCRIPT', 'STYLE', 'NOSCRIPT', 'TEMPLATE', 'SVG', 'CANVAS', 'IFRAME', 'OBJECT', 'HEAD', 'BUTTON', 'SELECT', 'INPUT', 'TEXTAREA']);
const PARAGRAPH = new Set(['P', 'PRE', 'BLOCKQUOTE', 'TABLE', 'UL', 'OL', 'DL', 'FIGURE', 'HR', 'SECTION', 'ARTICLE', 'ASIDE', 'HEADER', 'FOOTER', 'NAV', 'MAIN', 'FORM', 'ADDRESS', 'DETAILS']);
const LINE = new Set(['DIV', 'TR', 'DT', 'DD', 'FIGCAPTION', 'CAPTION', 'SUMMARY', 'LEGEND', 'FIELDSET']);
const HEADING = /^H([1-6])$/;

/** Extracts the readable title and text of an HTML document. */
export function extractReadable(html: string): ReadableText {
  const { document } = parseHTML(html);
  const docTitle = (document.title ?? '').trim();
  try {
    const article = new Readability<Node>(document as unknown as Document, { serializer: (node) => node }).parse();
    if (article?.content) {
      const text = nodeToText(article.content);
      if (text) return { title: (article.title ?? '').trim() || docTitle, text };
    }
  } catch {
    // Readability gives up on odd documents; the body's own text below still serves.
  }
  // Readability edits the document it reads, so the fallback starts from a fresh parse.
  const fresh = parseHTML(html).document;
  const root = (fresh.body ?? fresh.documentElement) as unknown as Node | null;
  return { title: docTitle, text: root ? nodeToText(root) : '' };
}

/** Writes a DOM subtree out as text: blocks on their own lines, headings marked with #, list items with -. */
export function nodeToText(root: Node): string {
  const out: string[] = [];
  const walk = (node: Node, pre: boolean): void => {
    if (node.nodeType === 3) {
      const value = node.nodeValue ?? '';
      out.push(pre ? value : value.replace(/\s+/g, ' '));
      return;
    }
    if (node.nodeType !== 1 && node.nodeType !== 9 && node.nodeType !== 11) return;
    const tag = node.nodeType === 1 ? (node as Element).tagName.toUpperCase() : '';
    if (SKIP.has(tag)) return;
    if (tag === 'BR') {
      out.push('\n');
      return;
    }
    const heading = HEADING.exec(tag);
    let after = '';
    if (heading) {
      out.push(`\n\n${'#'.repeat(Number(heading[1]))} `);
      after = '\n\n';
    } else if (tag === 'LI') {
      out.push('\n- ');
      after = '\n';
    } else if (PARAGRAPH.has(tag)) {
      out.push('\n\n');
      after = '\n\n';
    } else if (LINE.has(tag)) {
      out.push('\n');
      after = '\n';
    } else if (tag === 'TD' || tag === 'TH') {
      out.push(' ');
      after = ' ';
    }
    for (const child of Array.from(node.childNodes)) walk(child, pre || tag === 'PRE');
    out.push(after);
  };
  walk(root, false);
  return out
    .join('')
    .replace(/\u00a0/g, ' ')
    .replace(/[ \t]+\n/g, '\n')
    .replace(/\n[ \t]+/g, '\n')
    .replace(/\n- *\n/g, '\n')
    .replace(/[ \t]{2,}/g, ' ')
    .replace(/\n{3,}/g, '\n\n')
    .replace(/^#+ *$/gm, '')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}
