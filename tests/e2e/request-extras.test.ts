// Nothing that changes the output is silently ignored (issue 14, item 2): this file walks every field of
// src/server/request-fields.ts, on both endpoints that know it, against a real server (the addon, the
// engine, the Qwen3 tokenizer and chat template, guided decoding) over a tiny generated model. An
// implemented field gets a request that shows its effect (or names the suite that does, for the long
// established ones); a refused field gets a 400 naming it (and is served where its value asks for
// nothing); an ignored field leaves a greedy reply unchanged. The first block checks that the table,
// schemas.ts and vLLM's own field list agree, so a new field cannot slip in unlisted.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import type { FastifyInstance } from 'fastify';
import { loadServedModel, type LoadedModel } from '../../src/cli/load-model.ts';
import { buildApp } from '../../src/server/app.ts';
import type { GuidedDecoding } from '../../src/guided/guided-decoding.ts';
import { chatBodySchema, completionBodySchema } from '../../src/server/schemas.ts';
import { fieldsOf, REQUEST_FIELDS, type Endpoint, type KnownField } from '../../src/server/request-fields.ts';
import { tinyModelDir, warmGuidedDecoding } from '../helpers/tiny-server.ts';
import { listenLoopback } from '../helpers/loopback.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const MODEL = 'extras-moe';
const ROUTE: Record<Endpoint, string> = { chat: '/v1/chat/completions', completions: '/v1/completions' };
const ENDPOINTS: Endpoint[] = ['chat', 'completions'];

/** vLLM's ChatCompletionRequest and CompletionRequest fields (protocol.py, 0.10 to 0.12 and main), and OpenAI's chat fields. */
const VLLM_CHAT = [
  'messages', 'model', 'frequency_penalty', 'logit_bias', 'logprobs', 'top_logprobs', 'max_tokens', 'max_completion_tokens', 'n',
  'presence_penalty', 'response_format', 'seed', 'stop', 'stream', 'stream_options', 'temperature', 'top_p', 'tools', 'tool_choice',
  'reasoning_effort', 'include_reasoning', 'parallel_tool_calls', 'user', 'best_of', 'use_beam_search', 'top_k', 'min_p',
  'repetition_penalty', 'length_penalty', 'stop_token_ids', 'include_stop_str_in_output', 'ignore_eos', 'min_tokens',
  'skip_special_tokens', 'spaces_between_special_tokens', 'truncate_prompt_tokens', 'prompt_logprobs', 'allowed_token_ids', 'bad_words',
  'echo', 'add_generation_prompt', 'continue_final_message', 'add_special_tokens', 'documents', 'chat_template', 'chat_template_kwargs',
  'mm_processor_kwargs', 'guided_json', 'guided_regex', 'guided_choice', 'guided_grammar', 'structural_tag', 'guided_decoding_backend',
  'guided_whitespace_pattern', 'structured_outputs', 'priority', 'request_id', 'logits_processors', 'return_tokens_as_token_ids',
  'return_token_ids', 'cache_salt', 'kv_transfer_params', 'vllm_xargs', 'max_repetition_pattern_size', 'min_repetition_pattern_size',
  'repetition_min_count',
];
const OPENAI_CHAT = ['functions', 'function_call', 'metadata', 'store', 'service_tier', 'modalities', 'audio', 'prediction', 'web_search_options', 'verbosity', 'prompt_cache_key', 'safety_identifier'];
const VLLM_COMPLETIONS = [
  'model', 'prompt', 'best_of', 'echo', 'frequency_penalty', 'logit_bias', 'logprobs', 'max_tokens', 'n', 'presence_penalty', 'seed', 'stop',
  'stream', 'stream_options', 'suffix', 'temperature', 'top_p', 'user', 'use_beam_search', 'top_k', 'min_p', 'repetition_penalty',
  'length_penalty', 'stop_token_ids', 'include_stop_str_in_output', 'ignore_eos', 'min_tokens', 'skip_special_tokens',
  'spaces_between_special_tokens', 'truncate_prompt_tokens', 'truncation_side', 'allowed_token_ids', 'prompt_logprobs', 'logprob_token_ids',
  'bad_words', 'prompt_embeds', 'add_special_tokens', 'response_format', 'structured_outputs', 'guided_json', 'guided_regex', 'guided_choice',
  'guided_grammar', 'guided_decoding_backend', 'guided_whitespace_pattern', 'priority', 'request_id', 'logits_processors',
  'return_tokens_as_token_ids', 'return_token_ids', 'return_token_offsets', 'cache_salt', 'kv_transfer_params', 'ec_transfer_params',
  'vllm_xargs', 'repetition_detection', 'thinking_token_budget',
];

describe('the field table', () => {
  const schemaFields: Record<Endpoint, string[]> = {
    chat: Object.keys(chatBodySchema.properties),
    completions: Object.keys(completionBodySchema.properties),
  };

  it.each(ENDPOINTS)('%s: every property of the body schema has a status, and every field of the table is typed by the schema', (endpoint) => {
    expect([...schemaFields[endpoint]].sort()).toEqual([...fieldsOf(endpoint)].sort());
  });

  it("every field of vLLM's and OpenAI's requests has a status", () => {
    expect(VLLM_CHAT.concat(OPENAI_CHAT).filter((f) => !fieldsOf('chat').includes(f as KnownField))).toEqual([]);
    expect(VLLM_COMPLETIONS.filter((f) => !fieldsOf('completions').includes(f as KnownField))).toEqual([]);
  });

  it('every field of the table is walked below', () => {
    const walked = new Set<string>([...Object.keys(EFFECTS), ...Object.keys(ESTABLISHED), ...Object.keys(REFUSE), ...Object.keys(IGNORED)]);
    expect(Object.keys(REQUEST_FIELDS).filter((f) => !walked.has(f))).toEqual([]);
    for (const [field, rule] of Object.entries(REQUEST_FIELDS)) {
      if (rule.status === 'refused') expect(REFUSE, field).toHaveProperty(field);
      if (rule.status === 'ignored') expect(IGNORED, field).toHaveProperty(field);
      if (rule.status === 'implemented') expect(field in EFFECTS || field in ESTABLISHED, field).toBe(true);
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// The server: the default one (guided decoding, chat templates of requests refused) and a trusting one.

let loaded: LoadedModel;
let guided: GuidedDecoding;
let app: FastifyInstance;
let trusting: FastifyInstance;
let client: OpenAI;

beforeAll(async () => {
  const dir = await tinyModelDir();
  loaded = await loadServedModel({ dir, threads: 2, kvCacheGiB: 0.05, maxModelLen: 512, generationConfig: 'vllm' });
  const vocabSize = loaded.config.native.vocabSize;
  guided = await warmGuidedDecoding(loaded);
  const common = { engine: loaded.engine, tokenizer: loaded.tokenizer, template: loaded.template, servedModelName: MODEL, vocabSize, guidedDecoding: guided };
  app = buildApp(common);
  trusting = buildApp({ ...common, trustRequestChatTemplate: true, reasoningParser: 'qwen3' });
  client = new OpenAI({ baseURL: `${await listenLoopback(app)}/v1`, apiKey: 'unused', maxRetries: 0 });
}, 120_000);

afterAll(async () => {
  await app?.close();
  await trusting?.close();
  await loaded?.engine.close();
  await guided?.close();
});

type Json = Record<string, any>;

async function post(endpoint: Endpoint, body: Json, server = app): Promise<{ status: number; json: Json; raw: string }> {
  const base = endpoint === 'chat' ? { model: MODEL, messages: [{ role: 'user', content: 'Say something.' }] } : { model: MODEL, prompt: 'Once upon a time' };
  const res = await server.inject({ method: 'POST', url: ROUTE[endpoint], payload: { ...base, max_tokens: 8, ...body } });
  return { status: res.statusCode, json: res.body.startsWith('{') ? res.json() : {}, raw: res.body };
}

async function ok(endpoint: Endpoint, body: Json, server = app): Promise<Json> {
  const res = await post(endpoint, body, server);
  if (res.status !== 200) throw new Error(`${res.status}: ${res.raw}`);
  return res.json;
}

async function refused(endpoint: Endpoint, body: Json, param: string, message?: RegExp): Promise<void> {
  const res = await post(endpoint, body);
  expect(res.status, res.raw).toBe(400);
  expect(res.json.error.param).toBe(param);
  expect(res.json.error.type).toBe('BadRequestError');
  if (message) expect(res.json.error.message).toMatch(message);
}

const textOf = (endpoint: Endpoint, r: Json, i = 0): string => (endpoint === 'chat' ? (r.choices[i].message.content ?? '') : r.choices[i].text);

async function tokenize(text: string): Promise<number[]> {
  const res = await app.inject({ method: 'POST', url: '/tokenize', payload: { prompt: text, add_special_tokens: false } });
  return res.json().tokens;
}

async function detokenize(tokens: number[]): Promise<string> {
  const res = await app.inject({ method: 'POST', url: '/detokenize', payload: { tokens } });
  return res.json().prompt;
}

/** Every endpoint of a field, each run as its own case. */
const on = (field: KnownField): Endpoint[] => [...REQUEST_FIELDS[field].endpoints];

// ---------------------------------------------------------------------------------------------------
// Implemented fields: a request that shows the effect, per endpoint.

const GUIDED = { temperature: 1, seed: 7, max_tokens: 40 };

const EFFECTS: Partial<Record<KnownField, (endpoint: Endpoint) => Promise<void>>> = {
  guided_choice: async (endpoint) => {
    const r = await ok(endpoint, { ...GUIDED, n: 3, guided_choice: ['yes', 'no', 'maybe so'] });
    for (let i = 0; i < 3; i++) expect(['yes', 'no', 'maybe so']).toContain(textOf(endpoint, r, i));
    await refused(endpoint, { guided_choice: [] }, 'guided_choice');
  },
  guided_regex: async (endpoint) => {
    const r = await ok(endpoint, { ...GUIDED, n: 3, guided_regex: '[a-c]{2,4}x(-[0-9])?' });
    for (let i = 0; i < 3; i++) expect(textOf(endpoint, r, i)).toMatch(/^[a-c]{2,4}x(-[0-9])?$/);
    await refused(endpoint, { guided_regex: '(unclosed' }, 'guided_regex', /regular expression/);
  },
  guided_grammar: async (endpoint) => {
    const r = await ok(endpoint, { ...GUIDED, n: 3, guided_grammar: 'root ::= "ID-" [0-9] [0-9] ("!" | "?")' });
    for (let i = 0; i < 3; i++) expect(textOf(endpoint, r, i)).toMatch(/^ID-\d\d[!?]$/);
    // A grammar that does not parse is the client's 400, with xgrammar's reason; the grammar engine goes on serving.
    await refused(endpoint, { guided_grammar: 'root ::= "a" | undefined_rule' }, 'guided_grammar', /undefined_rule/);
    const again = await ok(endpoint, { ...GUIDED, guided_grammar: 'root ::= "ok"' });
    expect(textOf(endpoint, again)).toBe('ok');
  },
  guided_json: async (endpoint) => {
    const schema = { type: 'object', properties: { digit: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['digit'], additionalProperties: false };
    // vLLM takes the schema as an object or as its text.
    const r = await ok(endpoint, { ...GUIDED, n: 2, guided_json: endpoint === 'chat' ? schema : JSON.stringify(schema) });
    for (let i = 0; i < 2; i++) {
      const value = JSON.parse(textOf(endpoint, r, i));
      expect(Object.keys(value)).toEqual(['digit']);
      expect(Number.isInteger(value.digit) && value.digit >= 0 && value.digit <= 9).toBe(true);
    }
    await refused(endpoint, { guided_json: '{not json' }, 'guided_json', /not a JSON schema/);
  },
  structured_outputs: async (endpoint) => {
    const choice = await ok(endpoint, { ...GUIDED, structured_outputs: { choice: ['left', 'right'], disable_any_whitespace: true } });
    expect(['left', 'right']).toContain(textOf(endpoint, choice));
    const regex = await ok(endpoint, { ...GUIDED, structured_outputs: { regex: '[0-9]{3}' } });
    expect(textOf(endpoint, regex)).toMatch(/^\d{3}$/);
    const grammar = await ok(endpoint, { ...GUIDED, structured_outputs: { grammar: 'root ::= "G" [a-z]' } });
    expect(textOf(endpoint, grammar)).toMatch(/^G[a-z]$/);
    await refused(endpoint, { structured_outputs: { choice: ['a'], regex: 'a' } }, 'structured_outputs', /exactly one/);
    await refused(endpoint, { structured_outputs: {} }, 'structured_outputs', /exactly one/);
    await refused(endpoint, { structured_outputs: { structural_tag: '{}' } }, 'structured_outputs.structural_tag');
    await refused(endpoint, { structured_outputs: { regex: 'a', whitespace_pattern: ' *' } }, 'structured_outputs.whitespace_pattern');
    // One kind of guided decoding per request, as vLLM.
    await refused(endpoint, { response_format: { type: 'json_object' }, guided_choice: ['a'] }, 'guided_choice', /Only one kind/);
  },
  allowed_token_ids: async (endpoint) => {
    const allowed = [...(await tokenize('a')), ...(await tokenize('b')), ...(await tokenize('7'))];
    expect(allowed).toHaveLength(3);
    const logprobs = endpoint === 'chat' ? { logprobs: true } : { logprobs: 0 };
    const r = await ok(endpoint, { temperature: 1, seed: 3, n: 2, max_tokens: 12, ...logprobs, return_tokens_as_token_ids: true, return_token_ids: true, allowed_token_ids: allowed });
    for (const choice of r.choices) {
      // EOS is not among them: only max_tokens ends the reply (as in vLLM).
      expect(choice.finish_reason).toBe('length');
      expect(choice.token_ids).toHaveLength(12);
      for (const id of choice.token_ids) expect(allowed).toContain(id);
      const tokens: string[] = endpoint === 'chat' ? choice.logprobs.content.map((c: Json) => c.token) : choice.logprobs.tokens;
      for (const t of tokens) expect(allowed.map((id) => `token_id:${id}`)).toContain(t);
      expect(textOf(endpoint, r, choice.index)).toMatch(/^[ab7]{12}$/);
    }
    await refused(endpoint, { allowed_token_ids: [] }, 'allowed_token_ids');
    await refused(endpoint, { allowed_token_ids: [loaded.config.native.vocabSize] }, 'allowed_token_ids');
  },
  bad_words: async (endpoint) => {
    // Qwen3 writes digits one token each: "12" is the sequence [1, 2], so a 2 may never follow a 1.
    const [one, two] = [(await tokenize('1'))[0], (await tokenize('2'))[0]];
    expect(await tokenize('12')).toEqual([one, two]);
    const base = { temperature: 1, seed: 11, n: 4, max_tokens: 16, allowed_token_ids: [one, two] };
    const free = await ok(endpoint, base);
    expect(free.choices.some((_: Json, i: number) => textOf(endpoint, free, i).includes('12')), 'without bad_words the draw writes 12').toBe(true);
    const banned = await ok(endpoint, { ...base, bad_words: ['12'] });
    for (let i = 0; i < 4; i++) expect(textOf(endpoint, banned, i)).toMatch(/^2*1*$/);
    // A one-token word is banned everywhere.
    const single = await ok(endpoint, { ...base, bad_words: ['1'] });
    for (let i = 0; i < 4; i++) expect(textOf(endpoint, single, i)).toBe('2'.repeat(16));
  },
  prompt_logprobs: async (endpoint) => {
    const r = await ok(endpoint, { prompt_logprobs: 2, max_tokens: 2 });
    const list = endpoint === 'chat' ? r.prompt_logprobs : r.choices[0].prompt_logprobs;
    expect(list).toHaveLength(r.usage.prompt_tokens);
    expect(list[0]).toBeNull();
    for (const entry of list.slice(1)) {
      const values = Object.values(entry) as Json[];
      expect(values.length).toBeGreaterThanOrEqual(2);
      expect(values.length).toBeLessThanOrEqual(3);
      for (const v of values) {
        expect(v.logprob).toBeLessThanOrEqual(0);
        expect(typeof v.decoded_token).toBe('string');
      }
      expect(values.filter((v) => v.rank === 1)).toHaveLength(1);
    }
    await refused(endpoint, { prompt_logprobs: 1, stream: true }, 'prompt_logprobs', /stream/);
    await refused(endpoint, { prompt_logprobs: 21 }, 'prompt_logprobs');
  },
  truncate_prompt_tokens: async (endpoint) => {
    const long = 'one two three four five six seven eight nine ten eleven twelve thirteen fourteen';
    const body = endpoint === 'chat' ? { messages: [{ role: 'user', content: long }] } : { prompt: long };
    const whole = await ok(endpoint, { ...body, max_tokens: 1 });
    expect(whole.usage.prompt_tokens).toBeGreaterThan(6);
    const cut = await ok(endpoint, { ...body, max_tokens: 1, truncate_prompt_tokens: 6, return_token_ids: true });
    expect(cut.usage.prompt_tokens).toBe(6);
    const ids = endpoint === 'chat' ? cut.prompt_token_ids : cut.choices[0].prompt_token_ids;
    expect(ids).toHaveLength(6);
    // Left truncation: the last six tokens of the whole prompt.
    const full = await ok(endpoint, { ...body, max_tokens: 1, return_token_ids: true });
    const fullIds = endpoint === 'chat' ? full.prompt_token_ids : full.choices[0].prompt_token_ids;
    expect(ids).toEqual(fullIds.slice(-6));
    await refused(endpoint, { ...body, truncate_prompt_tokens: 0 }, 'truncate_prompt_tokens');
    await refused(endpoint, { ...body, truncate_prompt_tokens: 513 }, 'truncate_prompt_tokens');
  },
  truncation_side: async (endpoint) => {
    const body = endpoint === 'chat' ? { messages: [{ role: 'user', content: 'alpha beta gamma delta epsilon zeta eta theta' }] } : { prompt: 'alpha beta gamma delta epsilon zeta eta theta' };
    const full = await ok(endpoint, { ...body, max_tokens: 1, return_token_ids: true });
    const right = await ok(endpoint, { ...body, max_tokens: 1, return_token_ids: true, truncate_prompt_tokens: 4, truncation_side: 'right' });
    const ids = (r: Json) => (endpoint === 'chat' ? r.prompt_token_ids : r.choices[0].prompt_token_ids);
    expect(ids(right)).toEqual(ids(full).slice(0, 4));
    if (endpoint === 'completions') {
      // echo returns what was kept.
      const echoed = await ok(endpoint, { ...body, max_tokens: 1, echo: true, truncate_prompt_tokens: 4, truncation_side: 'right' });
      expect(echoed.choices[0].text.startsWith(await detokenize(ids(full).slice(0, 4)))).toBe(true);
    }
  },
  continue_final_message: async () => {
    const messages = [{ role: 'user', content: 'Finish the sentence.' }, { role: 'assistant', content: 'The quick brown fox' }];
    const r = await ok('chat', { messages, continue_final_message: true, add_generation_prompt: false, return_token_ids: true, echo: true });
    // The assistant's message is left open: the prompt ends with its text, no end of turn.
    const prompt = await detokenize(r.prompt_token_ids);
    expect(prompt).toMatch(/<\|im_start\|>assistant\n(<think>\n\n<\/think>\n\n)?The quick brown fox$/);
    expect(r.choices[0].message.role).toBe('assistant');
    expect(r.choices[0].message.content.startsWith('The quick brown fox')).toBe(true);
    // Without continue_final_message the same conversation is closed and a new turn opened.
    const closed = await ok('chat', { messages, return_token_ids: true });
    expect(await detokenize(closed.prompt_token_ids)).toMatch(/The quick brown fox<\|im_end\|>\n<\|im_start\|>assistant\n/);
    await refused('chat', { messages, continue_final_message: true, add_generation_prompt: true }, 'continue_final_message', /Cannot set both/);
  },
  echo: async (endpoint) => {
    if (endpoint === 'completions') {
      const r = await ok('completions', { echo: true, max_tokens: 2 });
      expect(r.choices[0].text.startsWith('Once upon a time')).toBe(true);
      return;
    }
    // vLLM's chat echo: the last message, when it has the reply's role, before the content (and the
    // prompt's logprobs with it).
    const messages = [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Well,' }];
    const plain = await ok('chat', { messages, continue_final_message: true, temperature: 0 });
    const echoed = await ok('chat', { messages, continue_final_message: true, temperature: 0, echo: true });
    expect(echoed.choices[0].message.content).toBe(`Well,${plain.choices[0].message.content ?? ''}`);
    expect(echoed.prompt_logprobs).toHaveLength(echoed.usage.prompt_tokens);
    // A generation prompt makes the reply the assistant's, and the last message is the user's: nothing to echo.
    const other = await ok('chat', { temperature: 0, echo: true });
    const base = await ok('chat', { temperature: 0 });
    expect(other.choices[0].message.content).toBe(base.choices[0].message.content);
    // Streamed, the echo comes first.
    const stream = await trusting.inject({ method: 'POST', url: ROUTE.chat, payload: { model: MODEL, messages, continue_final_message: true, temperature: 0, echo: true, max_tokens: 8, stream: true } });
    const deltas = stream.body.split('\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)).choices[0]?.delta);
    expect(deltas[1]).toEqual({ content: 'Well,' });
  },
  chat_template: async () => {
    const template = '{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}';
    await refused('chat', { chat_template: template }, 'chat_template', /--trust-request-chat-template/);
    const r = await ok('chat', { chat_template: template, return_token_ids: true }, trusting);
    expect(await detokenize(r.prompt_token_ids)).toBe('[user] Say something.\n');
    const bad = await trusting.inject({ method: 'POST', url: ROUTE.chat, payload: { model: MODEL, messages: [{ role: 'user', content: 'x' }], chat_template: '{% for %}' } });
    expect(bad.statusCode).toBe(400);
  },
  reasoning_effort: async () => {
    // Passed to the template as vLLM passes it (Qwen3's own template does not read it).
    const r = await ok('chat', { chat_template: 'effort={{ reasoning_effort }}', reasoning_effort: 'high', return_token_ids: true }, trusting);
    expect(await detokenize(r.prompt_token_ids)).toBe('effort=high');
    await ok('chat', { reasoning_effort: 'low' });
    expect((await post('chat', { reasoning_effort: 'extreme' })).status).toBe(400);
  },
  documents: async () => {
    const r = await ok('chat', { chat_template: '{{ documents[0].title }}: {{ documents[0].text }}', documents: [{ title: 'T', text: 'body' }], return_token_ids: true }, trusting);
    expect(await detokenize(r.prompt_token_ids)).toBe('T: body');
  },
  include_reasoning: async () => {
    // A template that leaves the model thinking, and the qwen3 reasoning parser on: the reply is reasoning.
    const body = { chat_template: '{{ messages[0].content }}<think>\n', temperature: 0, max_tokens: 6 };
    const withReasoning = await ok('chat', body, trusting);
    expect(typeof withReasoning.choices[0].message.reasoning_content).toBe('string');
    const without = await ok('chat', { ...body, include_reasoning: false }, trusting);
    expect(without.choices[0].message).not.toHaveProperty('reasoning_content');
    expect(without.choices[0].message).not.toHaveProperty('reasoning');
  },
  functions: async () => {
    const functions = [{ name: 'get_weather', description: 'Weather of a city', parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 8 } }, required: ['city'], additionalProperties: false } }];
    const r = await ok('chat', { functions, function_call: { name: 'get_weather' }, temperature: 1, seed: 5, max_tokens: 120 });
    const message = r.choices[0].message;
    expect(message).not.toHaveProperty('tool_calls');
    expect(message.function_call.name).toBe('get_weather');
    expect(typeof JSON.parse(message.function_call.arguments).city).toBe('string');
    expect(r.choices[0].finish_reason).toBe('function_call');
    // The functions are rendered as the tools they are.
    const shown = await ok('chat', { functions, function_call: 'none', return_token_ids: true, max_tokens: 1 });
    expect(await detokenize(shown.prompt_token_ids)).toContain('"name": "get_weather"');
    await refused('chat', { functions, tools: [{ type: 'function', function: functions[0] }] }, 'functions');
  },
  function_call: async () => {
    // A legacy conversation: the assistant's function_call and the `function` result render as a tool call and its response.
    const messages = [
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: null, function_call: { name: 'get_weather', arguments: '{"city": "Paris"}' } },
      { role: 'function', name: 'get_weather', content: 'sunny' },
    ];
    const r = await ok('chat', { messages, return_token_ids: true, max_tokens: 1 });
    const prompt = await detokenize(r.prompt_token_ids);
    expect(prompt).toContain('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>');
    expect(prompt).toContain('<tool_response>\nsunny\n</tool_response>');
    await refused('chat', { function_call: { name: 'x' } }, 'function_call', /needs 'functions'/);
  },
  best_of: async (endpoint) => {
    await ok(endpoint, { n: 2, best_of: 2 });
    await refused(endpoint, { n: 1, best_of: 3 }, 'best_of');
  },
  stream_options: async (endpoint) => {
    await refused(endpoint, { stream_options: { include_usage: true } }, 'stream_options', /only be defined when `stream=True`/);
    await ok(endpoint, { stream_options: {} });
    const res = await app.inject({ method: 'POST', url: ROUTE[endpoint], payload: { model: MODEL, ...(endpoint === 'chat' ? { messages: [{ role: 'user', content: 'x' }] } : { prompt: 'x' }), max_tokens: 2, stream: true, stream_options: { include_usage: true } } });
    expect(res.body).toMatch(/"usage":\{"prompt_tokens"/);
  },
  request_id: async (endpoint) => {
    const r = await ok(endpoint, { request_id: 'my-request-42' });
    expect(r.id).toBe(`${endpoint === 'chat' ? 'chatcmpl' : 'cmpl'}-my-request-42`);
  },
  return_token_ids: async (endpoint) => {
    const r = await ok(endpoint, { return_token_ids: true, max_tokens: 5, ignore_eos: true });
    const promptIds = endpoint === 'chat' ? r.prompt_token_ids : r.choices[0].prompt_token_ids;
    expect(promptIds).toHaveLength(r.usage.prompt_tokens);
    expect(r.choices[0].token_ids).toHaveLength(r.usage.completion_tokens);
    expect(await detokenize(r.choices[0].token_ids)).toBe(textOf(endpoint, r));
    // Streamed: the prompt's ids once, then each chunk's.
    const res = await app.inject({ method: 'POST', url: ROUTE[endpoint], payload: { model: MODEL, ...(endpoint === 'chat' ? { messages: [{ role: 'user', content: 'x' }] } : { prompt: 'x' }), max_tokens: 5, ignore_eos: true, stream: true, return_token_ids: true } });
    const chunks = res.body.split('\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)));
    const streamed = chunks.flatMap((c) => c.choices[0]?.token_ids ?? []);
    expect(streamed).toHaveLength(5);
    expect(chunks.filter((c) => (c.prompt_token_ids ?? c.choices[0]?.prompt_token_ids) !== undefined)).toHaveLength(1);
  },
  skip_special_tokens: async (endpoint) => {
    // Only <|im_start|> (a special token, not EOS) can be sampled: skipped by default, written with false.
    const [start] = await tokenize('<|im_start|>');
    const body = { max_tokens: 2, allowed_token_ids: [start] };
    expect(textOf(endpoint, await ok(endpoint, body))).toBe('');
    expect(textOf(endpoint, await ok(endpoint, { ...body, skip_special_tokens: false }))).toBe('<|im_start|><|im_start|>');
  },
  add_special_tokens: async (endpoint) => {
    // Qwen3's tokenizer adds no special tokens (no BOS), so both values give the same prompt, as in vLLM;
    // the field reaches the tokenizer (tests/unit cover a tokenizer that adds one).
    const a = await ok(endpoint, { add_special_tokens: true, max_tokens: 1 });
    const b = await ok(endpoint, { add_special_tokens: false, max_tokens: 1 });
    expect(a.usage.prompt_tokens).toBe(b.usage.prompt_tokens);
  },
  cache_salt: async (endpoint) => {
    // Only requests with the same salt share cached prefix blocks.
    const long = Array.from({ length: 40 }, (_, i) => `word${i}`).join(' ');
    const body = endpoint === 'chat' ? { messages: [{ role: 'user', content: long }] } : { prompt: long };
    const hits = () => loaded.engine.stats().prefixCacheHits;
    await ok(endpoint, { ...body, max_tokens: 1, cache_salt: `salt-a-${endpoint}` });
    let before = hits();
    await ok(endpoint, { ...body, max_tokens: 1, cache_salt: `salt-a-${endpoint}` });
    expect(hits()).toBeGreaterThan(before);
    before = hits();
    await ok(endpoint, { ...body, max_tokens: 1, cache_salt: `salt-b-${endpoint}` });
    expect(hits()).toBe(before);
    await refused(endpoint, { cache_salt: '' }, 'cache_salt');
  },
};

/** Implemented fields that other suites already prove, and where (the file must name the field). */
const ESTABLISHED: Partial<Record<KnownField, string>> = {
  model: 'tests/e2e/openai-api.test.ts',
  messages: 'tests/e2e/openai-api.test.ts',
  prompt: 'tests/e2e/openai-api.test.ts',
  max_tokens: 'tests/e2e/openai-api.test.ts',
  max_completion_tokens: 'tests/e2e/sampling.test.ts',
  min_tokens: 'tests/e2e/sampling.test.ts',
  temperature: 'tests/e2e/sampling.test.ts',
  top_p: 'tests/e2e/sampling.test.ts',
  top_k: 'tests/e2e/sampling.test.ts',
  min_p: 'tests/e2e/sampling.test.ts',
  seed: 'tests/e2e/sampling.test.ts',
  n: 'tests/e2e/openai-api.test.ts',
  presence_penalty: 'tests/e2e/sampling.test.ts',
  frequency_penalty: 'tests/e2e/sampling.test.ts',
  repetition_penalty: 'tests/e2e/sampling.test.ts',
  logit_bias: 'tests/e2e/sampling.test.ts',
  stop: 'tests/e2e/openai-api.test.ts',
  stop_token_ids: 'tests/e2e/sampling.test.ts',
  ignore_eos: 'tests/e2e/sampling.test.ts',
  include_stop_str_in_output: 'tests/unit/server-routes.test.ts',
  stream: 'tests/e2e/openai-api.test.ts',
  logprobs: 'tests/e2e/openai-api.test.ts',
  top_logprobs: 'tests/e2e/openai-api.test.ts',
  return_tokens_as_token_ids: 'tests/e2e/openai-api.test.ts',
  add_generation_prompt: 'tests/e2e/chat-tools.test.ts',
  chat_template_kwargs: 'tests/e2e/chat-tools.test.ts',
  tools: 'tests/e2e/chat-tools.test.ts',
  tool_choice: 'tests/e2e/chat-tools.test.ts',
  parallel_tool_calls: 'tests/e2e/guided.test.ts',
  response_format: 'tests/e2e/guided.test.ts',
};

/** Refused fields: a value that asks for something (400 naming the field) and, where there is one, a value that asks for nothing. */
const REFUSE: Partial<Record<KnownField, { asks: unknown; neutral?: unknown }>> = {
  use_beam_search: { asks: true, neutral: false },
  length_penalty: { asks: 0.8, neutral: 1 },
  suffix: { asks: 'the end', neutral: '' },
  prompt_embeds: { asks: 'AAAA' },
  guided_whitespace_pattern: { asks: '[ ]*' },
  structural_tag: { asks: '{"structures": [], "triggers": []}' },
  priority: { asks: 1, neutral: 0 },
  logits_processors: { asks: ['my_module.Processor'], neutral: [] },
  logprob_token_ids: { asks: [1, 2], neutral: [] },
  repetition_detection: { asks: { max_pattern_size: 4, min_count: 3 }, neutral: { max_pattern_size: 0 } },
  max_repetition_pattern_size: { asks: 4, neutral: 0 },
  min_repetition_pattern_size: { asks: 2, neutral: 0 },
  repetition_min_count: { asks: 3, neutral: 0 },
  thinking_token_budget: { asks: 64, neutral: -1 },
  modalities: { asks: ['text', 'audio'], neutral: ['text'] },
  audio: { asks: { voice: 'alloy', format: 'mp3' } },
  web_search_options: { asks: {} },
  verbosity: { asks: 'low' },
};

/** Ignored fields: a value that must leave a greedy reply as it is. */
const IGNORED: Partial<Record<KnownField, unknown>> = {
  spaces_between_special_tokens: false,
  mm_processor_kwargs: { num_crops: 4 },
  guided_decoding_backend: 'xgrammar',
  kv_transfer_params: { do_remote_decode: false },
  ec_transfer_params: {},
  vllm_xargs: { my_plugin_arg: 1 },
  return_token_offsets: true,
  user: 'user-1',
  metadata: { purpose: 'test' },
  store: false,
  service_tier: 'auto',
  prompt_cache_key: 'conversation-1',
  safety_identifier: 'hashed-user',
  prediction: { type: 'content', content: 'a predicted reply' },
};

const cases = (table: object) => Object.keys(table).flatMap((field) => on(field as KnownField).map((endpoint) => [field, endpoint] as [KnownField, Endpoint]));

describe('implemented: the effect shows', () => {
  it.each(cases(EFFECTS))('%s (%s)', async (field, endpoint) => {
    await EFFECTS[field]!(endpoint);
  }, 60_000);

  it.each(cases(ESTABLISHED))('%s (%s) is proven elsewhere', (field) => {
    expect(fs.readFileSync(path.join(ROOT, ESTABLISHED[field]!), 'utf8')).toContain(field);
  });

  it('the openai client sends vLLM extras as body fields', async () => {
    const r = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Pick one.' }], max_tokens: 10, guided_choice: ['red', 'green'] } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(['red', 'green']).toContain(r.choices[0].message.content);
  });
});

describe('refused: a 400 naming the field', () => {
  it.each(cases(REFUSE))('%s (%s)', async (field, endpoint) => {
    const { asks, neutral } = REFUSE[field]!;
    await refused(endpoint, { [field]: asks }, field, /not supported/);
    if (neutral !== undefined) await ok(endpoint, { [field]: neutral });
    await ok(endpoint, { [field]: null });
  });
});

describe('ignored: the output does not change', () => {
  it.each(cases(IGNORED))('%s (%s)', async (field, endpoint) => {
    const base = await ok(endpoint, { temperature: 0, max_tokens: 6 });
    const withField = await ok(endpoint, { temperature: 0, max_tokens: 6, [field]: IGNORED[field] });
    expect(textOf(endpoint, withField)).toBe(textOf(endpoint, base));
  });
});
