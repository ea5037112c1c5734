// Our rendering of tool requests (tools, assistant tool_calls, tool results, reasoning) equals the
// reference rendering: golden strings made by Python's jinja2 configured as transformers does, after
// vLLM's message preprocessing (tests/fixtures/chat-template/render-reference.py wrote them).
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createChatTemplate, type ChatTemplate } from '../../src/chat/template.ts';
import { checkTools, resolveToolChoice, toTemplateMessage } from '../../src/server/chat-request.ts';
import { ApiError } from '../../src/server/errors.ts';
import type { ChatBody } from '../../src/server/schemas.ts';
import { QWEN3_TEMPLATE_SOURCES, qwen3Config, RERENDER_GOLDENS, templateSha256, type Qwen3TemplateName } from '../helpers/qwen3-chat-template.ts';
import { qwen3Tokenizer } from '../helpers/stream-splits.ts';

const FIXTURES = path.join(import.meta.dirname, '../fixtures/chat-template');
const templates = Object.fromEntries(
  Object.entries(QWEN3_TEMPLATE_SOURCES).map(([name, source]) => [name, createChatTemplate({ ...qwen3Config, chat_template: source })!]),
) as Record<Qwen3TemplateName, ChatTemplate>;

interface Fixture {
  description: string;
  template: Qwen3TemplateName;
  /** sha256 of the template source "expected" was rendered from, and what rendered it (render-reference.py). */
  templateSha256: string;
  renderer: string;
  request: ChatBody;
  expected: string;
}

const fixtures = fs
  .readdirSync(FIXTURES)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .map((f) => ({ file: f, ...(JSON.parse(fs.readFileSync(path.join(FIXTURES, f), 'utf8')) as Fixture) }));

/** The server's path from a request body to the prompt text. */
function render(body: ChatBody, template: ChatTemplate): string {
  const tools = checkTools(body);
  resolveToolChoice(body, tools);
  return template.render(body.messages.map(toTemplateMessage), {
    tools,
    addGenerationPrompt: body.add_generation_prompt ?? true,
    kwargs: body.chat_template_kwargs ?? undefined,
  });
}

function expectBadRequest(fn: () => unknown, param: string, message: RegExp) {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(400);
    expect((err as ApiError).param).toBe(param);
    expect((err as ApiError).message).toMatch(message);
    return;
  }
  throw new Error(`no error (expected one about ${param})`);
}

describe('chat template golden fixtures (tools, tool calls, tool results, reasoning)', () => {
  it('has the fixtures, each saying what rendered it', () => {
    expect(fixtures.length).toBeGreaterThanOrEqual(9);
    for (const f of fixtures) {
      expect(f.expected.length, f.file).toBeGreaterThan(0);
      expect(Object.keys(QWEN3_TEMPLATE_SOURCES), f.file).toContain(f.template);
      expect(f.templateSha256, `${f.file} lacks templateSha256: re-run ${RERENDER_GOLDENS}`).toMatch(/^[0-9a-f]{64}$/);
      expect(f.renderer, `${f.file} lacks renderer: re-run ${RERENDER_GOLDENS}`).toMatch(/^jinja2 \d+\.\d+/);
    }
  });

  for (const fixture of fixtures) {
    it(`${fixture.file}: ${fixture.description}`, () => {
      // A golden of another template proves nothing about this one, even where the output happens to agree.
      expect(
        templateSha256(QWEN3_TEMPLATE_SOURCES[fixture.template]),
        `the ${fixture.template} template is not the one ${fixture.file} was rendered from (${fixture.renderer}): ` +
          `re-run ${RERENDER_GOLDENS} (needs jinja2) and review the new goldens`,
      ).toBe(fixture.templateSha256);
      expect(render(fixture.request, templates[fixture.template])).toBe(fixture.expected);
    });
  }

  it('tool calls in the rendered prompt tokenize to the single <tool_call>/<tool_response> tokens', () => {
    const fixture = fixtures.find((f) => f.file === 'tool-call-round-trip.json')!;
    const ids = qwen3Tokenizer().encode(fixture.expected);
    // 2 calls, plus 2 in the system prompt ("within <tool_call></tool_call> XML tags" and its example)
    expect(ids.filter((id) => id === 151657)).toHaveLength(4);
    expect(ids.filter((id) => id === 151658)).toHaveLength(4);
    expect(ids.filter((id) => id === 151665)).toHaveLength(2);
    expect(ids.filter((id) => id === 151667)).toHaveLength(1);
    expect(ids.filter((id) => id === 151668)).toHaveLength(1);
  });
});

describe('tool request checks', () => {
  const body = (extra: Partial<ChatBody>): ChatBody => ({ messages: [{ role: 'user', content: 'x' }], ...extra });
  const fn = { type: 'function', function: { name: 'f', parameters: { type: 'object' } } };

  it('refuses malformed tools, naming the parameter', () => {
    expectBadRequest(() => checkTools(body({ tools: [{ type: 'retrieval' }] })), 'tools[0].type', /must be 'function'/);
    expectBadRequest(() => checkTools(body({ tools: [fn, { type: 'function' }] })), 'tools[1].function', /required object/);
    expectBadRequest(() => checkTools(body({ tools: [{ type: 'function', function: { description: 'd' } }] })), 'tools[0].function.name', /required/);
    expectBadRequest(() => checkTools(body({ tools: [{ type: 'function', function: { name: '' } }] })), 'tools[0].function.name', /non-empty/);
    expectBadRequest(() => checkTools(body({ tools: [{ type: 'function', function: { name: 'f', parameters: [] } }] })), 'tools[0].function.parameters', /object/);
    expectBadRequest(() => checkTools(body({ tools: [{ type: 'function', function: { name: 'f', description: 3 } }] })), 'tools[0].function.description', /string/);
    expect(checkTools(body({ tools: [] }))).toBeUndefined();
    expect(checkTools(body({ tools: [fn] }))).toEqual([fn]);
  });

  it('resolves tool_choice as OpenAI: auto with tools, none without', () => {
    const tools = [fn];
    expect(resolveToolChoice(body({}), tools)).toEqual({ mode: 'auto' });
    expect(resolveToolChoice(body({}), undefined)).toEqual({ mode: 'none' });
    expect(resolveToolChoice(body({ tool_choice: 'auto' }), undefined)).toEqual({ mode: 'none' });
    expect(resolveToolChoice(body({ tool_choice: 'none' }), tools)).toEqual({ mode: 'none' });
    expect(resolveToolChoice(body({ tool_choice: 'required' }), tools)).toEqual({ mode: 'required' });
    expect(resolveToolChoice(body({ tool_choice: { type: 'function', function: { name: 'f' } } }), tools)).toEqual({ mode: 'named', name: 'f' });
    expectBadRequest(() => resolveToolChoice(body({ tool_choice: 'any' }), tools), 'tool_choice', /'none', 'auto', 'required'/);
    expectBadRequest(() => resolveToolChoice(body({ tool_choice: { type: 'function', function: { name: 'g' } } }), tools), 'tool_choice.function.name', /'g'.*not in 'tools'/);
    expectBadRequest(() => resolveToolChoice(body({ tool_choice: { type: 'function' } }), tools), 'tool_choice', /must be/);
    expectBadRequest(() => resolveToolChoice(body({ tool_choice: 'required' }), undefined), 'tool_choice', /needs 'tools'/);
  });

  it('refuses assistant tool_calls whose arguments are not a JSON object', () => {
    const call = (fnBody: unknown) => ({ role: 'assistant', content: null, tool_calls: [{ id: 'a', type: 'function', function: fnBody }] });
    expectBadRequest(() => toTemplateMessage(call({ name: 'f', arguments: '{"a": ' }), 2), 'messages[2].tool_calls[0].function.arguments', /not valid JSON/);
    expectBadRequest(() => toTemplateMessage(call({ name: 'f', arguments: '[1]' }), 0), 'messages[0].tool_calls[0].function.arguments', /JSON object/);
    expectBadRequest(() => toTemplateMessage(call({ arguments: '{}' }), 0), 'messages[0].tool_calls[0].function.name', /non-empty/);
    expectBadRequest(() => toTemplateMessage({ role: 'assistant', tool_calls: [7] }, 1), 'messages[1].tool_calls[0].function', /required/);
    expectBadRequest(() => toTemplateMessage({ role: 'assistant', content: 'x', reasoning_content: 5 }, 0), 'messages[0].reasoning_content', /string/);
    // arguments given as an object (some clients do) or empty are accepted
    expect(toTemplateMessage(call({ name: 'f', arguments: { a: 1 } }), 0).tool_calls).toEqual([{ id: 'a', type: 'function', function: { name: 'f', arguments: { a: 1 } } }]);
    expect(toTemplateMessage(call({ name: 'f', arguments: '' }), 0).tool_calls).toEqual([{ id: 'a', type: 'function', function: { name: 'f', arguments: {} } }]);
  });
});
