// Splits a reply into reasoning (Qwen3's <think>…</think>) and content, as vLLM's qwen3 reasoning
// parser does, streaming over decoded text deltas of any size.
//
// Contract (the streaming parser is the definition; the one-shot result is push(all) + flush()):
// - Starting outside reasoning, a <think> that opens the reply (after whitespace only) starts
//   reasoning; anywhere else <think> is plain content. Starting inside reasoning (the template
//   opened <think> in the prompt), a repeated <think> at the very start is dropped.
// - Reasoning ends at the first </think>; everything after it is content. A reply that never
//   closes it (max_tokens hit while thinking) is reasoning only.
// - The newlines the template puts around the block are framing, not text: reasoning loses its
//   leading whitespace and trailing newlines, and content loses the newlines right after </think>.
//   Qwen3's template re-renders exactly that ('<think>\n' + reasoning + '\n</think>\n\n' + content),
//   so nothing the next turn needs is lost.
// - Markers split across deltas are held back until they are known to be (or not to be) markers.
// In Qwen3's tokenizer <think> and </think> are added tokens not marked special, so they survive
// skip_special_tokens decoding and reach this parser as text.

export interface ReasoningMarkers {
  start: string;
  end: string;
}

export const QWEN3_REASONING: ReasoningMarkers = { start: '<think>', end: '</think>' };

export interface ReasoningPieces {
  reasoning: string;
  content: string;
}

type State = 'lead' | 'think-lead' | 'reasoning' | 'content-lead' | 'content';

/** Length of the longest suffix of `text` that is a proper prefix of `marker`. */
export function partialMarkerLength(text: string, marker: string): number {
  for (let len = Math.min(marker.length - 1, text.length); len > 0; len--) {
    if (marker.startsWith(text.slice(text.length - len))) return len;
  }
  return 0;
}

/**
 * True when the rendered prompt leaves the reply inside an open reasoning block: its last turn
 * (after the last ChatML <|im_start|>) is still open (no <|im_end|>) and has a <think> with no
 * </think> after it. Templates of thinking models (Qwen3 2507 Thinking, DeepResearch) end the
 * prompt that way; Qwen3's own opens nothing (the model writes <think>) or, with
 * enable_thinking=false, closes an empty block.
 */
export function promptOpensReasoning(
  prompt: string,
  markers: ReasoningMarkers = QWEN3_REASONING,
  turn: { start: string; end: string } = { start: '<|im_start|>', end: '<|im_end|>' },
): boolean {
  const at = prompt.lastIndexOf(turn.start);
  const tail = at < 0 ? prompt : prompt.slice(at);
  if (tail.includes(turn.end)) return false;
  const open = tail.lastIndexOf(markers.start);
  return open >= 0 && tail.indexOf(markers.end, open + markers.start.length) < 0;
}

export class ReasoningParser {
  private state: State;
  private buffer = '';
  /** Whether a leading <think> was already dropped in think-lead (only one is). */
  private leadDropped = false;

  constructor(
    startInReasoning: boolean,
    private readonly markers: ReasoningMarkers = QWEN3_REASONING,
  ) {
    this.state = startInReasoning ? 'think-lead' : 'lead';
  }

  /** True while the text seen so far is (or may still turn out to be) reasoning. */
  get inReasoning(): boolean {
    return this.state === 'think-lead' || this.state === 'reasoning';
  }

  push(text: string): ReasoningPieces {
    this.buffer += text;
    return this.run(false);
  }

  /** At the end of the reply: whatever is still held. */
  flush(): ReasoningPieces {
    return this.run(true);
  }

  private run(final: boolean): ReasoningPieces {
    const out: ReasoningPieces = { reasoning: '', content: '' };
    const { start, end } = this.markers;
    for (;;) {
      const buf = this.buffer;
      if (this.state === 'lead') {
        const rest = buf.trimStart();
        if (rest.startsWith(start)) {
          this.state = 'think-lead';
          this.leadDropped = true;
          this.buffer = rest.slice(start.length);
          continue;
        }
        if (!final && (rest === '' || start.startsWith(rest))) return out;
        this.state = 'content';
        continue;
      }
      if (this.state === 'think-lead') {
        const rest = buf.trimStart();
        if (!this.leadDropped && rest.startsWith(start)) {
          this.leadDropped = true;
          this.buffer = rest.slice(start.length);
          continue;
        }
        if (!final && (rest === '' || (!this.leadDropped && start.startsWith(rest)))) return out;
        this.buffer = rest;
        this.state = 'reasoning';
        continue;
      }
      if (this.state === 'reasoning') {
        const at = buf.indexOf(end);
        if (at >= 0) {
          out.reasoning += buf.slice(0, at).replace(/\n+$/, '');
          this.buffer = buf.slice(at + end.length);
          this.state = 'content-lead';
          continue;
        }
        if (final) {
          out.reasoning += buf.replace(/\n+$/, '');
          this.buffer = '';
          return out;
        }
        // Hold a possible partial </think> and the newlines before it (they vanish if it closes).
        let keep = partialMarkerLength(buf, end);
        const body = buf.slice(0, buf.length - keep);
        keep += body.length - body.replace(/\n+$/, '').length;
        out.reasoning += buf.slice(0, buf.length - keep);
        this.buffer = buf.slice(buf.length - keep);
        return out;
      }
      if (this.state === 'content-lead') {
        const rest = buf.replace(/^\n+/, '');
        this.buffer = rest;
        if (rest === '') return out;
        this.state = 'content';
        continue;
      }
      out.content += buf;
      this.buffer = '';
      return out;
    }
  }
}

/** One-shot split of a whole reply; null reasoning when there was none (or it was empty). */
export function splitReasoning(text: string, startInReasoning: boolean, markers: ReasoningMarkers = QWEN3_REASONING): { reasoning: string | null; content: string } {
  const parser = new ReasoningParser(startInReasoning, markers);
  const a = parser.push(text);
  const b = parser.flush();
  const reasoning = a.reasoning + b.reasoning;
  return { reasoning: reasoning === '' ? null : reasoning, content: a.content + b.content };
}
