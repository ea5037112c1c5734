// Tool calls in Hermes/Qwen3 format (vLLM's "hermes" tool parser), parsed from streamed content:
//   <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>
//
// Contract (the streaming parser is the definition; the one-shot result is push(all) + flush()):
// - A block becomes a call when its body is a JSON object with a non-empty string "name" and
//   "arguments" that is an object (or a string holding a JSON object, or absent: "{}"; "parameters"
//   is accepted in its place). `arguments` is the model's own JSON text of that object, verbatim
//   (numbers and key order exactly as generated), so it always parses.
// - A block that is not such JSON, or is never closed (max_tokens), stays content verbatim,
//   markers included. A <tool_call> inside an open block ends that block there (as content).
// - Markers count only outside JSON strings, so arguments may contain "</tool_call>"; a block that
//   never resolves that way ends, at the end of the reply, at its first marker after all (an
//   unclosed string must not swallow the calls after it).
// - Whitespace touching a call is framing (the template writes '\n' between content and calls):
//   it is dropped, except a run after a call that is followed by more text once content exists.
// - Calls are emitted only when complete: a call never streams half-made, and nothing emitted
//   is taken back. Content is held only while it may be the start of a block.

import { partialMarkerLength } from './reasoning-parser.ts';

export interface ParsedToolCall {
  name: string;
  /** JSON text of an object. */
  arguments: string;
}

export type ToolParserEvent = { type: 'content'; text: string } | { type: 'tool_call'; call: ParsedToolCall };

export interface ToolCallMarkers {
  start: string;
  end: string;
}

export const HERMES_TOOL_CALL: ToolCallMarkers = { start: '<tool_call>', end: '</tool_call>' };

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function skipWs(text: string, i: number): number {
  while (i < text.length && (text[i] === ' ' || text[i] === '\n' || text[i] === '\r' || text[i] === '\t')) i++;
  return i;
}

/** End of the JSON string starting at text[i] === '"' (one past its closing quote). */
function skipString(text: string, i: number): number {
  for (i++; i < text.length; i++) {
    if (text[i] === '\\') i++;
    else if (text[i] === '"') return i + 1;
  }
  return i;
}

/** End of the JSON value starting at text[i]; `text` is known to be valid JSON. */
function skipValue(text: string, i: number): number {
  const c = text[i];
  if (c === '"') return skipString(text, i);
  if (c === '{' || c === '[') {
    let depth = 0;
    while (i < text.length) {
      const ch = text[i];
      if (ch === '"') {
        i = skipString(text, i);
        continue;
      }
      if (ch === '{' || ch === '[') depth++;
      else if (ch === '}' || ch === ']') {
        depth--;
        if (depth === 0) return i + 1;
      }
      i++;
    }
    return i;
  }
  while (i < text.length && !',}] \n\r\t'.includes(text[i])) i++;
  return i;
}

/** Source spans of the top-level members of a valid JSON object text (a repeated key: the last, as JSON.parse). */
function memberSpans(text: string): Map<string, [number, number]> {
  const spans = new Map<string, [number, number]>();
  let i = skipWs(text, 0) + 1; // past '{'
  for (;;) {
    i = skipWs(text, i);
    if (text[i] !== '"') return spans;
    const keyEnd = skipString(text, i);
    const key = JSON.parse(text.slice(i, keyEnd)) as string;
    i = skipWs(text, skipWs(text, keyEnd) + 1); // past ':'
    const end = skipValue(text, i);
    spans.set(key, [i, end]);
    i = skipWs(text, end);
    if (text[i] !== ',') return spans;
    i++;
  }
}

/** The call a block body holds, or null when it is not a valid call. */
export function parseToolCallBody(body: string): ParsedToolCall | null {
  const text = body.trim();
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (!isObject(value) || typeof value.name !== 'string' || value.name === '') return null;
  const key = 'arguments' in value ? 'arguments' : 'parameters' in value ? 'parameters' : null;
  const args = key === null ? undefined : value[key];
  if (args === undefined || args === null) return { name: value.name, arguments: '{}' };
  if (isObject(args)) {
    const [from, to] = memberSpans(text).get(key!)!;
    return { name: value.name, arguments: text.slice(from, to) };
  }
  if (typeof args === 'string') {
    try {
      if (isObject(JSON.parse(args))) return { name: value.name, arguments: args.trim() };
    } catch {
      // not JSON: not a call
    }
  }
  return null;
}

type Phase = 'text' | 'call';

export class ToolCallParser {
  private phase: Phase = 'text';
  /** Unprocessed text: in 'text', a possible partial start marker; in 'call', the block body so far. */
  private buffer = '';
  /** Whitespace held back in 'text' (it may touch a call); on entering a call, the run before it. */
  private pendingWs = '';
  private blockWs = '';
  private afterCall = false;
  private contentEmitted = false;
  // Scan state of the open block body: how far it was scanned, whether that point is inside a JSON
  // string, and the first marker seen inside a string (the fallback end).
  private scanned = 0;
  private inString = false;
  private escaped = false;
  private fallback: { at: number; marker: 'start' | 'end' } | null = null;
  private events: ToolParserEvent[] = [];

  constructor(private readonly markers: ToolCallMarkers = HERMES_TOOL_CALL) {}

  push(text: string): ToolParserEvent[] {
    this.buffer += text;
    this.run(false);
    return this.take();
  }

  /** At the end of the reply: an unclosed block and held text become content. */
  flush(): ToolParserEvent[] {
    this.run(true);
    return this.take();
  }

  private take(): ToolParserEvent[] {
    const events = this.events;
    this.events = [];
    return events;
  }

  private emitContent(text: string): void {
    if (text === '') return;
    const last = this.events.at(-1);
    if (last?.type === 'content') last.text += text;
    else this.events.push({ type: 'content', text });
    this.contentEmitted = true;
  }

  /** Plain text (no markers): emitted, except trailing whitespace, held as it may precede a call. */
  private text(segment: string): void {
    const all = this.pendingWs + segment;
    const body = all.replace(/\s+$/, '');
    this.pendingWs = all.slice(body.length);
    if (body === '') return;
    const lead = body.length - body.trimStart().length;
    // Whitespace after a call, before any content, is framing too.
    this.emitContent(this.afterCall && !this.contentEmitted ? body.slice(lead) : body);
    this.afterCall = false;
  }

  private run(final: boolean): void {
    const { start } = this.markers;
    for (;;) {
      if (this.phase === 'text') {
        const at = this.buffer.indexOf(start);
        if (at >= 0) {
          this.text(this.buffer.slice(0, at));
          this.openBlock(this.buffer.slice(at + start.length));
          continue;
        }
        const keep = final ? 0 : partialMarkerLength(this.buffer, start);
        this.text(this.buffer.slice(0, this.buffer.length - keep));
        this.buffer = this.buffer.slice(this.buffer.length - keep);
        if (final && !this.afterCall) this.emitContent(this.pendingWs);
        if (final) this.pendingWs = '';
        return;
      }
      if (!this.scanBlock(final)) return;
    }
  }

  private openBlock(rest: string): void {
    this.phase = 'call';
    this.blockWs = this.pendingWs;
    this.pendingWs = '';
    this.buffer = rest;
    this.scanned = 0;
    this.inString = false;
    this.escaped = false;
    this.fallback = null;
  }

  /** Scans the open block; true when it was closed (back to 'text'), false when it needs more text. */
  private scanBlock(final: boolean): boolean {
    const { start, end } = this.markers;
    const buf = this.buffer;
    // Markers are only looked for once whole, so scanning stops short of a possible partial one.
    const limit = final ? buf.length : buf.length - Math.max(start.length, end.length) + 1;
    for (let i = this.scanned; i < limit; i++) {
      const ch = buf[i];
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (ch === '\\') this.escaped = true;
        else if (ch === '"') this.inString = false;
        if (ch === '<' && this.fallback === null) {
          if (buf.startsWith(end, i)) this.fallback = { at: i, marker: 'end' };
          else if (buf.startsWith(start, i)) this.fallback = { at: i, marker: 'start' };
        }
        continue;
      }
      if (ch === '"') {
        this.inString = true;
      } else if (ch === '<' && buf.startsWith(end, i)) {
        this.closeBlock(i, i + end.length);
        return true;
      } else if (ch === '<' && buf.startsWith(start, i)) {
        // A new block opens inside this one: this one was not a call.
        this.abandonBlock(i);
        this.openBlock(buf.slice(i + start.length));
        return true;
      }
    }
    this.scanned = Math.max(this.scanned, limit);
    if (!final) return false;
    if (this.fallback) {
      // Never resolved outside a string: it ends at its first marker after all; the rest is re-read.
      const { at, marker } = this.fallback;
      if (marker === 'end') this.closeBlock(at, at + end.length);
      else this.abandonBlock(at);
      return true;
    }
    this.abandonBlock(buf.length);
    this.buffer = '';
    return true;
  }

  /** The block body is buffer[0, bodyEnd); the text after `next` goes back to 'text'. */
  private closeBlock(bodyEnd: number, next: number): void {
    const body = this.buffer.slice(0, bodyEnd);
    const rest = this.buffer.slice(next);
    this.phase = 'text';
    this.buffer = rest;
    const call = parseToolCallBody(body);
    if (call) {
      this.events.push({ type: 'tool_call', call });
      this.afterCall = true;
      this.blockWs = '';
      return;
    }
    this.pendingWs = this.blockWs;
    this.text(this.markers.start + body + this.markers.end);
  }

  /** The open block, up to `bodyEnd`, was not a call: it is content, verbatim. */
  private abandonBlock(bodyEnd: number): void {
    const body = this.buffer.slice(0, bodyEnd);
    this.buffer = this.buffer.slice(bodyEnd);
    this.phase = 'text';
    this.pendingWs = this.blockWs;
    this.text(this.markers.start + body);
  }
}

/** One-shot parse of a whole reply. */
export function parseToolCalls(text: string): { content: string; calls: ParsedToolCall[] } {
  const parser = new ToolCallParser();
  const events = [...parser.push(text), ...parser.flush()];
  return {
    content: events.map((e) => (e.type === 'content' ? e.text : '')).join(''),
    calls: events.flatMap((e) => (e.type === 'tool_call' ? [e.call] : [])),
  };
}
