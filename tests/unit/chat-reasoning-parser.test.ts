// The Qwen3 <think> parser and the whole reply parser (reasoning → content → tool calls), one-shot
// and streamed in every split.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { promptOpensReasoning, ReasoningParser, splitReasoning } from '../../src/chat/reasoning-parser.ts';
import { ChatOutputParser, parseChatOutput, type OutputParserOptions } from '../../src/chat/output-parser.ts';
import { createChatTemplate } from '../../src/chat/template.ts';
import { qwen3TokenizerFile } from '../../src/model/tokenizer-files.ts';
import { byteDeltas, qwen3Tokenizer, splits, threeWaySplits } from '../helpers/stream-splits.ts';

function streamedReasoning(pieces: readonly string[], startInReasoning: boolean) {
  const parser = new ReasoningParser(startInReasoning);
  let reasoning = '';
  let content = '';
  for (const p of [...pieces.map((x) => parser.push(x)), parser.flush()]) {
    reasoning += p.reasoning;
    content += p.content;
  }
  return { reasoning: reasoning === '' ? null : reasoning, content };
}

function reasoning(text: string, startInReasoning: boolean, threeWay = false) {
  const whole = splitReasoning(text, startInReasoning);
  for (const pieces of splits(text)) expect(streamedReasoning(pieces, startInReasoning), JSON.stringify(pieces)).toEqual(whole);
  if (threeWay) for (const pieces of threeWaySplits(text)) expect(streamedReasoning(pieces, startInReasoning)).toEqual(whole);
  expect(streamedReasoning(byteDeltas(text), startInReasoning)).toEqual(whole);
  return whole;
}

describe('Qwen3 reasoning parser', () => {
  it('splits <think>…</think> off, without the framing newlines', () => {
    expect(reasoning('<think>\nThe user greets me.\n\nI answer.\n</think>\n\nHello!', false, true)).toEqual({
      reasoning: 'The user greets me.\n\nI answer.',
      content: 'Hello!',
    });
  });

  it('starts inside the reasoning when the prompt opened <think> (only </think> in the reply)', () => {
    expect(reasoning('Let me think… 2 < 3 > 1.\n</think>\n\nYes.', true, true)).toEqual({ reasoning: 'Let me think… 2 < 3 > 1.', content: 'Yes.' });
    // a model that repeats the opening tag anyway
    expect(reasoning('<think>\nHmm.\n</think>\n\nOK', true)).toEqual({ reasoning: 'Hmm.', content: 'OK' });
    // an empty reasoning block is no reasoning
    expect(reasoning('\n\n</think>\n\nOK', true)).toEqual({ reasoning: null, content: 'OK' });
  });

  it('a reply cut off while thinking is all reasoning', () => {
    expect(reasoning('<think>\nStep 1: search.\nStep 2: rea', false)).toEqual({ reasoning: 'Step 1: search.\nStep 2: rea', content: '' });
    expect(reasoning('Step 1.\n</thi', true)).toEqual({ reasoning: 'Step 1.\n</thi', content: '' });
  });

  it('without reasoning the reply is content untouched; a later <think> or a lone </think> is content', () => {
    expect(reasoning('  Just an answer.\n', false)).toEqual({ reasoning: null, content: '  Just an answer.\n' });
    expect(reasoning('Answer <think>not reasoning</think> end', false)).toEqual({ reasoning: null, content: 'Answer <think>not reasoning</think> end' });
    expect(reasoning('</think>\n\nAnswer', false)).toEqual({ reasoning: null, content: '</think>\n\nAnswer' });
    expect(reasoning('<thin', false)).toEqual({ reasoning: null, content: '<thin' });
    expect(reasoning('', false)).toEqual({ reasoning: null, content: '' });
  });

  it('only the first </think> ends the reasoning', () => {
    expect(reasoning('<think>a</think>b</think>c', false)).toEqual({ reasoning: 'a', content: 'b</think>c' });
  });
});

describe('promptOpensReasoning on rendered prompts', () => {
  const config = JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  const qwen3 = createChatTemplate(config)!;
  // Thinking models' templates (Qwen3 2507 Thinking, DeepResearch) open <think> in the generation prompt.
  const thinking = createChatTemplate({
    ...config,
    chat_template: (config.chat_template as string).replace("{{- '<|im_start|>assistant\\n' }}", "{{- '<|im_start|>assistant\\n<think>\\n' }}"),
  })!;
  const messages = [
    { role: 'user', content: 'What does <think> do?' },
    { role: 'assistant', content: '<think>\nearlier\n</think>\n\nIt opens reasoning.' },
    { role: 'user', content: 'And </think>?' },
  ];

  it('is false for the Qwen3 template, with or without enable_thinking', () => {
    expect(promptOpensReasoning(qwen3.render(messages))).toBe(false);
    expect(promptOpensReasoning(qwen3.render(messages, { kwargs: { enable_thinking: false } }))).toBe(false);
  });

  it('is true for a template that opens <think>, and not fooled by <think> in earlier turns', () => {
    const prompt = thinking.render(messages);
    expect(prompt.endsWith('<|im_start|>assistant\n<think>\n')).toBe(true);
    expect(promptOpensReasoning(prompt)).toBe(true);
    expect(promptOpensReasoning(thinking.render([{ role: 'user', content: 'Unclosed <think> in a question' }], { addGenerationPrompt: false }))).toBe(false);
  });

  it('the markers are added tokens that survive skip_special_tokens decoding', () => {
    const tok = qwen3Tokenizer();
    for (const [marker, id] of [['<think>', 151667], ['</think>', 151668], ['<tool_call>', 151657], ['</tool_call>', 151658]] as const) {
      expect(tok.addedTokens.get(marker)).toBe(id);
      expect(tok.encode(`a${marker}b`)).toContain(id);
      expect(tok.decode([id], { skipSpecialTokens: true })).toBe(marker);
    }
  });
});

describe('whole reply parser (reasoning, then tool calls)', () => {
  const auto: OutputParserOptions = { reasoning: true, startInReasoning: false, toolCalls: true };

  function streamed(pieces: readonly string[], options: OutputParserOptions) {
    const parser = new ChatOutputParser(options);
    const out = [...pieces.flatMap((p) => parser.push(p)), ...parser.flush()];
    let reasoningText = '';
    let content = '';
    const calls = [];
    for (const p of out) {
      if (p.kind === 'reasoning') reasoningText += p.text;
      else if (p.kind === 'content') content += p.text;
      else calls.push(p.call);
    }
    return { reasoning: reasoningText === '' ? null : reasoningText, content, calls };
  }

  function parse(text: string, options: OutputParserOptions) {
    const whole = parseChatOutput(text, options);
    for (const pieces of splits(text)) expect(streamed(pieces, options)).toEqual(whole);
    expect(streamed(byteDeltas(text), options)).toEqual(whole);
    return whole;
  }

  it('calls after long thinking; a <tool_call> written while thinking is not a call', () => {
    const thought = Array.from({ length: 40 }, (_, i) => `Step ${i}: consider source ${i} (<${i}> & "quotes").`).join('\n');
    const text =
      `<think>\n${thought}\nI could write <tool_call>\n{"name": "fake", "arguments": {}}\n</tool_call> here, but that is just thinking.\n</think>\n\n` +
      'Searching now.\n<tool_call>\n{"name": "search", "arguments": {"query": ["MoE routing", "混合专家"]}}\n</tool_call>\n' +
      '<tool_call>\n{"name": "visit", "arguments": {"url": "https://example.com/?a=1&b=<2>", "goal": "find 🎯"}}\n</tool_call>';
    const out = parse(text, auto);
    expect(out.reasoning).toBe(`${thought}\nI could write <tool_call>\n{"name": "fake", "arguments": {}}\n</tool_call> here, but that is just thinking.`);
    expect(out.content).toBe('Searching now.');
    expect(out.calls.map((c) => [c.name, JSON.parse(c.arguments)])).toEqual([
      ['search', { query: ['MoE routing', '混合专家'] }],
      ['visit', { url: 'https://example.com/?a=1&b=<2>', goal: 'find 🎯' }],
    ]);
  });

  it('with the prompt inside <think>, a call straight after </think>', () => {
    const text = 'I need the weather.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>';
    expect(parse(text, { ...auto, startInReasoning: true })).toEqual({
      reasoning: 'I need the weather.',
      content: '',
      calls: [{ name: 'get_weather', arguments: '{"city": "Zürich"}' }],
    });
  });

  it('tool_choice none / no parsers: calls stay content, reasoning stays in content', () => {
    const text = '<think>\nx\n</think>\n\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>';
    expect(parse(text, { reasoning: true, startInReasoning: false, toolCalls: false })).toEqual({
      reasoning: 'x',
      content: '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>',
      calls: [],
    });
    expect(parse(text, { reasoning: false, startInReasoning: false, toolCalls: false })).toEqual({ reasoning: null, content: text, calls: [] });
  });

  it('a reply cut off inside a call after thinking: reasoning, and the partial call as content', () => {
    const text = '<think>\nok\n</think>\n\n<tool_call>\n{"name": "f", "argum';
    expect(parse(text, auto)).toEqual({ reasoning: 'ok', content: '<tool_call>\n{"name": "f", "argum', calls: [] });
  });
});
