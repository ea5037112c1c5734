// The Hermes/Qwen3 <tool_call> parser on realistic replies, one-shot and streamed in every split.
import { describe, expect, it } from 'vitest';
import { parseToolCallBody, parseToolCalls, ToolCallParser, type ParsedToolCall } from '../../src/chat/tool-parser.ts';
import { byteDeltas, splits, threeWaySplits } from '../helpers/stream-splits.ts';

interface Parsed {
  content: string;
  calls: ParsedToolCall[];
}

/** Streams `pieces` through one parser; also checks that nothing emitted is empty. */
function streamed(pieces: readonly string[]): Parsed {
  const parser = new ToolCallParser();
  const events = [...pieces.flatMap((p) => parser.push(p)), ...parser.flush()];
  for (const e of events) if (e.type === 'content') expect(e.text).not.toBe('');
  return {
    content: events.map((e) => (e.type === 'content' ? e.text : '')).join(''),
    calls: events.flatMap((e) => (e.type === 'tool_call' ? [e.call] : [])),
  };
}

/** The one-shot parse, checked equal to every streamed split of the text (and byte-wise streaming). */
function parse(text: string, threeWay = false): Parsed {
  const whole = parseToolCalls(text);
  for (const pieces of splits(text)) expect(streamed(pieces), JSON.stringify(pieces)).toEqual(whole);
  if (threeWay) for (const pieces of threeWaySplits(text)) expect(streamed(pieces)).toEqual(whole);
  expect(streamed(byteDeltas(text))).toEqual(whole);
  return whole;
}

const call = (name: string, args: unknown) => `<tool_call>\n{"name": "${name}", "arguments": ${JSON.stringify(args)}}\n</tool_call>`;

describe('Hermes tool-call parser', () => {
  it('parses one call; arguments are the model\'s own JSON text of the object', () => {
    const text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3.50, "big": 12345678901234567890}}\n</tool_call>';
    const out = parse(text, true);
    expect(out.content).toBe('');
    expect(out.calls).toEqual([{ name: 'get_weather', arguments: '{"city": "Paris", "days": 3.50, "big": 12345678901234567890}' }]);
  });

  it('returns several calls of one turn, with the text before them as content', () => {
    const text = `I'll check both cities.\n${call('get_weather', { city: 'Paris' })}\n${call('get_weather', { city: 'Tokyo' })}\n${call('get_time', { tz: 'Asia/Tokyo' })}`;
    const out = parse(text);
    expect(out.content).toBe("I'll check both cities.");
    expect(out.calls.map((c) => [c.name, JSON.parse(c.arguments)])).toEqual([
      ['get_weather', { city: 'Paris' }],
      ['get_weather', { city: 'Tokyo' }],
      ['get_time', { tz: 'Asia/Tokyo' }],
    ]);
  });

  it('keeps nested JSON with < > quotes, escapes and unicode in strings exactly', () => {
    const args = {
      query: 'a < b && c > d',
      html: '<div class="x">café 日本語 🎉</div>',
      escaped: 'line1\nline2\t"quoted" \\ back',
      nested: { list: [1, { k: null, deep: [[true, false], { s: '</tool' }] }], empty: {} },
    };
    const text = `<tool_call>\n{"name": "render", "arguments": ${JSON.stringify(args, null, 1)}}\n</tool_call>`;
    const out = parse(text);
    expect(out.calls).toHaveLength(1);
    expect(JSON.parse(out.calls[0].arguments)).toEqual(args);
    expect(out.calls[0].arguments).toBe(JSON.stringify(args, null, 1));
  });

  it('backslash escapes in strings: an odd number of escaped quotes, a string ending in a backslash, whole and streamed', () => {
    // As JSON text: "say \"hi", "C:\\" and "\\\"".
    const [quote, drive, both] = ['say "hi', 'C:\\', '\\"'];
    const cases: Record<string, string>[] = [
      { s: quote },
      { s: drive },
      { s: both },
      { a: quote, b: drive, c: both },
      // A marker inside a string after an escape: read as outside the string, it would end the call early.
      { a: quote, b: '</tool_call>', c: drive },
      { a: drive, b: '<tool_call>' },
    ];
    for (const args of cases) {
      const text = `Calling.\n${call('f', args)}\nDone.`;
      const out = parse(text, true);
      expect(out.content, text).toBe('Calling.\nDone.');
      expect(out.calls.map((c) => JSON.parse(c.arguments)), text).toEqual([args]);
      // The call is out as soon as its end marker is in, not only at flush() (where a lost string state recovers).
      for (const pieces of splits(text)) {
        const parser = new ToolCallParser();
        const calls = pieces.flatMap((p) => parser.push(p)).filter((e) => e.type === 'tool_call');
        expect(calls.map((e) => e.type === 'tool_call' && JSON.parse(e.call.arguments)), JSON.stringify(pieces)).toEqual([args]);
      }
    }
  });

  it('an end marker inside a JSON string does not end the call', () => {
    const args = { code: 'print("<tool_call>")\nprint("</tool_call>")' };
    const text = `Run it.\n${call('python', args)}`;
    const out = parse(text, true);
    expect(out).toEqual({ content: 'Run it.', calls: [{ name: 'python', arguments: JSON.stringify(args) }] });
  });

  it('a block that is not valid JSON stays content verbatim, and later calls still parse', () => {
    const bad = '<tool_call>\n{"name": "search", "arguments": {"q": "x"}\n</tool_call>'; // one brace short
    const text = `Trying.\n${bad}\n${call('search', { q: 'y' })}`;
    const out = parse(text);
    expect(out.content).toBe(`Trying.\n${bad}`);
    expect(out.calls).toEqual([{ name: 'search', arguments: '{"q":"y"}' }]);
  });

  it("DeepResearch's PythonInterpreter block (code after the JSON) is not a call: content verbatim", () => {
    const text = '<tool_call>\n{"name": "PythonInterpreter", "arguments": {}}\n<code>\nprint(1 < 2)\n</code>\n</tool_call>';
    expect(parse(text)).toEqual({ content: text, calls: [] });
  });

  it('a block without a name, with a non-object body or non-object arguments stays content', () => {
    for (const body of ['{"arguments": {}}', '{"name": "", "arguments": {}}', '[1, 2]', '"text"', '{"name": "f", "arguments": [1]}', '{"name": 5}']) {
      const text = `<tool_call>\n${body}\n</tool_call>`;
      expect(parse(text)).toEqual({ content: text, calls: [] });
    }
  });

  it('an unterminated call (max_tokens) stays content verbatim', () => {
    const text = `Let me search.\n<tool_call>\n{"name": "search", "arguments": {"query": "moe`;
    expect(parse(text, true)).toEqual({ content: text, calls: [] });
    // even when it is complete JSON, a call needs its end marker
    const complete = '<tool_call>\n{"name": "search", "arguments": {}}\n';
    expect(parse(complete)).toEqual({ content: complete, calls: [] });
  });

  it('an unclosed string swallows no later call for good: the block ends at its first end marker', () => {
    const bad = '<tool_call>\n{"name": "a", "arguments": {"q": "oops}}\n</tool_call>';
    const text = `${bad}\n${call('b', { ok: 1 })}`;
    const out = parse(text);
    expect(out.calls).toEqual([{ name: 'b', arguments: '{"ok":1}' }]);
    expect(out.content).toBe(bad);
  });

  it('a <tool_call> inside an open block ends that block as content', () => {
    const text = `<tool_call>\n{"name": "a", "argu${call('b', {})}`;
    const out = parse(text);
    expect(out.calls).toEqual([{ name: 'b', arguments: '{}' }]);
    expect(out.content).toBe('<tool_call>\n{"name": "a", "argu');
  });

  it('drops whitespace touching calls, keeps text around them readable', () => {
    expect(parse(`${call('f', {})}\n\nDone.`).content).toBe('Done.');
    expect(parse(`Before.\n\n${call('f', {})}\n\nAfter.\n`).content).toBe('Before.\n\nAfter.\n');
    expect(parse(`  \n${call('f', {})}\n  \n`).content).toBe('');
    // without calls nothing is touched
    expect(parse('  Plain reply, with a < and a <tool and </tool_call> alone.\n\n').content).toBe('  Plain reply, with a < and a <tool and </tool_call> alone.\n\n');
  });

  it('accepts arguments as a JSON string, "parameters" for "arguments", and no arguments at all', () => {
    expect(parseToolCallBody('{"name": "f", "arguments": "{\\"a\\": 1}"}')).toEqual({ name: 'f', arguments: '{"a": 1}' });
    expect(parseToolCallBody('{"name": "f", "parameters": {"a": 1}}')).toEqual({ name: 'f', arguments: '{"a": 1}' });
    expect(parseToolCallBody('{"name": "f"}')).toEqual({ name: 'f', arguments: '{}' });
    expect(parseToolCallBody('{"name": "f", "arguments": null}')).toEqual({ name: 'f', arguments: '{}' });
    expect(parseToolCallBody('{"name": "f", "arguments": "not json"}')).toBeNull();
    // a repeated key: the last one, as JSON.parse reads it
    expect(parseToolCallBody('{"arguments": {"x": 1}, "name": "f", "arguments" :  {"y": [2, "}"]} }')).toEqual({ name: 'f', arguments: '{"y": [2, "}"]}' });
  });

  it('never throws on random text made of marker pieces and JSON characters', () => {
    let seed = 1;
    const rand = (n: number) => Math.floor(((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * n);
    const parts = ['<tool_call>', '</tool_call>', '<tool', '_call>', '{', '}', '"', '\\', '"name"', ': ', '"f"', ', ', '"arguments"', '{}', '\n', ' ', 'x', 'é', '🎉'];
    for (let n = 0; n < 300; n++) {
      const text = Array.from({ length: 1 + rand(30) }, () => parts[rand(parts.length)]).join('');
      const whole = parseToolCalls(text);
      // nothing lost: every character is content, or inside a call, or framing whitespace
      const chars = (s: string) => s.replace(/\s/g, '').length;
      const callChars = whole.calls.reduce((sum, c) => sum + chars(c.name), 0);
      expect(chars(whole.content) + callChars).toBeLessThanOrEqual(chars(text));
      if (whole.calls.length === 0) expect(whole.content.replace(/\s/g, '')).toBe(text.replace(/\s/g, ''));
      for (const c of whole.calls) expect(() => JSON.parse(c.arguments)).not.toThrow();
      const cut = rand(text.length + 1);
      expect(streamed([text.slice(0, cut), text.slice(cut)])).toEqual(whole);
    }
  });
});
