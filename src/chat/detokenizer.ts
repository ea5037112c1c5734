// Streaming text out of a stream of token ids: an incremental detokenizer and a stop-string matcher.
import type { DecodeOptions } from './tokenizer.ts';

export interface Decoder {
  decode(ids: readonly number[], options?: DecodeOptions): string;
}

const MAX_HELD_TOKENS = 16;

/**
 * vLLM's detokenize_incrementally: decode a short window [prefixOffset, end) of the ids and emit
 * what it adds to the already-emitted window [prefixOffset, readOffset). Text ending in U+FFFD is
 * held back (an unfinished UTF-8 character split over byte-level tokens) until a later token
 * completes it. Windows start where the text so far was complete, so the concatenation of
 * everything emitted plus flush() equals decode(all ids).
 */
export class IncrementalDetokenizer {
  private ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;
  private prefixText = '';
  private emitted = '';

  constructor(
    private readonly decoder: Decoder,
    private readonly options: DecodeOptions = { skipSpecialTokens: true },
  ) {}

  /** Adds one token; returns the text it completes ("" while a character is unfinished). */
  push(id: number): string {
    this.ids.push(id);
    const newText = this.decoder.decode(this.ids.slice(this.prefixOffset), this.options);
    // A legitimately unfinished character spans at most 3 bytes, so a few tokens; a longer run
    // ending in U+FFFD is invalid UTF-8 for good (a random model's output) and is let through
    // rather than decoded again and again.
    const pending = this.ids.length - this.readOffset;
    if (newText.endsWith('\uFFFD') && pending <= MAX_HELD_TOKENS) return '';
    // No new text (skipped special tokens) still advances the window, keeping it short.
    const delta = newText.length > this.prefixText.length ? newText.slice(this.prefixText.length) : '';
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    this.prefixText = this.decoder.decode(this.ids.slice(this.prefixOffset, this.readOffset), this.options);
    this.compact();
    this.emitted += delta;
    return delta;
  }

  /** At the end of generation: whatever is still held (an unfinished character decodes to U+FFFD). */
  flush(): string {
    const newText = this.decoder.decode(this.ids.slice(this.prefixOffset), this.options);
    const delta = newText.length > this.prefixText.length ? newText.slice(this.prefixText.length) : '';
    this.prefixOffset = this.readOffset = this.ids.length;
    this.prefixText = '';
    this.compact();
    this.emitted += delta;
    return delta;
  }

  /** All text emitted so far. */
  get text(): string {
    return this.emitted;
  }

  /** Ids before prefixOffset are never decoded again. */
  private compact(): void {
    if (this.prefixOffset === 0) return;
    this.ids = this.ids.slice(this.prefixOffset);
    this.readOffset -= this.prefixOffset;
    this.prefixOffset = 0;
  }
}

export interface StopMatch {
  /** Text safe to emit now. */
  text: string;
  /** The stop string that ended generation, when one was found. */
  stop?: string;
}

/**
 * Finds stop strings in streamed text, across chunk (token) boundaries. Text that could be the
 * start of a stop string is held back until it is known not to be one; the stop string itself is
 * not emitted unless includeStop. After a stop, everything further is ignored.
 */
export class StopStringMatcher {
  private held = '';
  private stopped = false;
  private readonly stops: string[];
  private readonly maxHold: number;

  constructor(stops: readonly string[], private readonly includeStop = false) {
    this.stops = [...new Set(stops.filter((s) => s.length > 0))];
    this.maxHold = Math.max(0, ...this.stops.map((s) => s.length - 1));
  }

  get done(): boolean {
    return this.stopped;
  }

  push(chunk: string): StopMatch {
    if (this.stopped) return { text: '' };
    if (this.stops.length === 0) return { text: chunk };
    const buffer = this.held + chunk;
    // Earliest occurrence wins; at the same index the longer stop string (it contains the shorter).
    let at = -1;
    let found = '';
    // Only the held text plus the new chunk can contain a stop string not seen before.
    for (const stop of this.stops) {
      const i = buffer.indexOf(stop);
      if (i >= 0 && (at < 0 || i < at || (i === at && stop.length > found.length))) {
        at = i;
        found = stop;
      }
    }
    if (at >= 0) {
      this.stopped = true;
      this.held = '';
      return { text: buffer.slice(0, this.includeStop ? at + found.length : at), stop: found };
    }
    const keep = this.partialSuffixLength(buffer);
    this.held = buffer.slice(buffer.length - keep);
    return { text: buffer.slice(0, buffer.length - keep) };
  }

  /** At the end of generation: held text that turned out not to be a stop string. */
  flush(): string {
    const rest = this.stopped ? '' : this.held;
    this.held = '';
    return rest;
  }

  /** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
  private partialSuffixLength(text: string): number {
    for (let len = Math.min(this.maxHold, text.length); len > 0; len--) {
      const suffix = text.slice(text.length - len);
      if (this.stops.some((s) => s.length > len && s.startsWith(suffix))) return len;
    }
    return 0;
  }
}
