// Tongyi DeepResearch's own ReAct agent (Alibaba-NLP/DeepResearch, inference/react_agent.py) against a
// real server over a generated model, through the official `openai` client, with the agent's exact
// request shape: the tools listed inside the system prompt (not the `tools` field), the question, an
// assistant turn with <think> and a <tool_call>{json}</tool_call>, the tool's result sent back as a user
// turn <tool_response>…</tool_response>; temperature 0.6, top_p 0.95, presence_penalty 1.1,
// logprobs: true, max_tokens 10000, stop ["\n<tool_response>", "<tool_response>"]. The agent reads
// nothing but message.content (vLLM launched without a reasoning parser): here too, by default.
//
// A random model would run to 10000 tokens: the engine under the server is the real one behind a thin
// wrapper that records each request as the server hands it over (max_tokens 10000 and all) and then
// caps its length at CAP tokens, so that the replies end with 'length' quickly, the way a real reply
// cut off while thinking does.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/server/app.ts';
import { createChatTemplate } from '../../src/chat/template.ts';
import { loadServedModel, type LoadedModel } from '../../src/cli/load-model.ts';
import type { Engine, GenerateRequest } from '../../src/engine/types.ts';
import { tinyModelDir } from '../helpers/tiny-server.ts';
import { listenLoopback } from '../helpers/loopback.ts';

const MODEL = 'tongyi-deepresearch';
/** Room for the agent's max_tokens 10000 beside its prompt. */
const MAX_MODEL_LEN = 16384;
const CAP = 24;

/** The real engine, each request recorded as received and its length capped at CAP tokens. */
class CappedEngine implements Engine {
  readonly requests: GenerateRequest[] = [];
  constructor(private readonly inner: Engine) {}
  get maxModelLen() { return this.inner.maxModelLen; }
  get eosTokenIds() { return this.inner.eosTokenIds; }
  generate(request: GenerateRequest) {
    this.requests.push(request);
    return this.inner.generate({ ...request, params: { ...request.params, maxTokens: Math.min(CAP, request.params.maxTokens) } });
  }
  stats() { return this.inner.stats(); }
  close(reason?: Error) { return this.inner.close(reason); }
}

// The agent's system prompt has this shape: instructions, then the tools as JSON lines inside <tools>,
// the <tool_call> format, and today's date (the wording here is ours).
const tool = (name: string, description: string, properties: Record<string, unknown>, required: string[]) =>
  JSON.stringify({ type: 'function', function: { name, description, parameters: { type: 'object', properties, required } } });
const SYSTEM_PROMPT =
  'You are a research assistant. Investigate the question thoroughly, using several sources, and give a well-founded answer.\n' +
  'When you are done, write your final reasoning in <think></think> and the answer in <answer></answer>.\n\n' +
  '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' +
  'You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n' +
  [
    tool('search', 'Web search: returns the top results for each query.', { query: { type: 'array', items: { type: 'string' }, minItems: 1, description: 'Queries.' } }, ['query']),
    tool('visit', 'Reads web pages and summarises what they say about a goal.', { url: { type: 'array', items: { type: 'string' } }, goal: { type: 'string' } }, ['url', 'goal']),
    tool('PythonInterpreter', 'Runs Python code.', {}, []),
    tool('google_scholar', 'Searches academic publications.', { query: { type: 'array', items: { type: 'string' }, minItems: 1 } }, ['query']),
    tool('parse_file', 'Parses uploaded files.', { files: { type: 'array', items: { type: 'string' } } }, ['files']),
  ].join('\n') +
  '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n' +
  '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>\n\nCurrent date: 2025-09-16';

const QUESTION = 'In which year did the architect of the Lisbon Oriente station complete his first bridge?';
/** What the agent sends after one round: its messages as it builds them (assistant content stripped). */
const AGENT_MESSAGES: OpenAI.ChatCompletionMessageParam[] = [
  { role: 'system', content: SYSTEM_PROMPT },
  { role: 'user', content: QUESTION },
  {
    role: 'assistant',
    content: '<think>\nThe station was designed by Santiago Calatrava. I should search for his first bridge.\n</think>\n' +
      '<tool_call>\n{"name": "search", "arguments": {"query": ["Santiago Calatrava first bridge", "Calatrava earliest bridge year"]}}\n</tool_call>',
  },
  { role: 'user', content: '<tool_response>\nA search for \'Santiago Calatrava first bridge\' found 2 results:\n\n1. [Calatrava bridges](https://example.org/calatrava)\nAn overview of his bridges, from the 1980s on.\n\n2. [Bach de Roda Bridge](https://example.org/bach-de-roda)\nCompleted 1987 in Barcelona.\n</tool_response>' },
];
const STOP = ['\n<tool_response>', '<tool_response>'];
/** react_agent.py's call_server, field for field. */
const agentRequest = (messages = AGENT_MESSAGES) => ({
  model: MODEL,
  messages,
  stop: STOP,
  temperature: 0.6,
  top_p: 0.95,
  logprobs: true,
  max_tokens: 10000,
  presence_penalty: 1.1,
});

type Message = OpenAI.ChatCompletionMessage & { reasoning_content?: string | null; reasoning?: string | null };

let loaded: LoadedModel;
let engine: CappedEngine;
const apps: FastifyInstance[] = [];
/** The model's own template (Qwen3's, as models/tongyi-deepresearch-30b-a3b ships): without and with --reasoning-parser qwen3. */
let plain: OpenAI;
let parsed: OpenAI;
/** A thinking template (its generation prompt opens <think>): every reply starts inside the reasoning. */
let thinkingPlain: OpenAI;
let thinkingParsed: OpenAI;

beforeAll(async () => {
  loaded = await loadServedModel({ dir: await tinyModelDir(MAX_MODEL_LEN), threads: 2, kvCacheGiB: 0.05, maxModelLen: MAX_MODEL_LEN });
  engine = new CappedEngine(loaded.engine);
  const config = loaded.tokenizer.config as Record<string, unknown>;
  const thinking = createChatTemplate({
    ...config,
    chat_template: (config.chat_template as string).replace("{{- '<|im_start|>assistant\\n' }}", "{{- '<|im_start|>assistant\\n<think>\\n' }}"),
  })!;
  const serve = async (template: typeof thinking, reasoningParser?: 'qwen3') => {
    const app = buildApp({ engine, tokenizer: loaded.tokenizer, template, servedModelName: MODEL, vocabSize: loaded.config.native.vocabSize, reasoningParser, tokenizerWorkers: 1 });
    apps.push(app);
    return new OpenAI({ baseURL: `${await listenLoopback(app)}/v1`, apiKey: 'EMPTY', maxRetries: 0, timeout: 60_000 });
  };
  [plain, parsed, thinkingPlain, thinkingParsed] = await Promise.all([
    serve(loaded.template!),
    serve(loaded.template!, 'qwen3'),
    serve(thinking),
    serve(thinking, 'qwen3'),
  ]);
}, 120_000);

afterAll(async () => {
  for (const app of apps) await app.close();
  await loaded?.engine.close();
});

/** A streamed reply put back together: content, reasoning_content and reasoning, each null if never sent. */
async function streamed(client: OpenAI, body: ReturnType<typeof agentRequest>) {
  let content: string | null = null;
  let reasoningContent: string | null = null;
  let reasoning: string | null = null;
  let finish: string | null = null;
  const stream = await client.chat.completions.create({ ...body, stream: true });
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      const d = c.delta as { content?: string | null; reasoning_content?: string; reasoning?: string };
      if (typeof d.content === 'string' && d.content !== '') content = (content ?? '') + d.content;
      if (d.reasoning_content !== undefined) reasoningContent = (reasoningContent ?? '') + d.reasoning_content;
      if (d.reasoning !== undefined) reasoning = (reasoning ?? '') + d.reasoning;
      expect(d.reasoning).toBe(d.reasoning_content);
      finish = c.finish_reason ?? finish;
    }
  }
  return { content, reasoningContent, reasoning, finish };
}

describe("the DeepResearch agent's requests, unchanged", () => {
  it('are accepted as sent and answered in content (no reasoning parser, as the agent launches vLLM)', async () => {
    const before = engine.requests.length;
    const res = await plain.chat.completions.create(agentRequest());
    const choice = res.choices[0];
    const message = choice.message as Message;
    // what the agent does with it: (content or "").strip(), and it must not be empty
    expect(typeof message.content).toBe('string');
    expect((message.content ?? '').trim()).not.toBe('');
    expect('reasoning_content' in message).toBe(false);
    expect('reasoning' in message).toBe(false);
    expect(message.tool_calls).toBeUndefined();
    expect(['length', 'stop']).toContain(choice.finish_reason);
    expect(res.usage!.completion_tokens).toBeLessThanOrEqual(CAP);
    expect(choice.logprobs!.content).toHaveLength(res.usage!.completion_tokens);

    // The engine got the request as sent: the prompt the model's template renders, the agent's sampling.
    const req = engine.requests[before];
    expect(req.promptTokens).toEqual(loaded.tokenizer.encode(loaded.template!.render(AGENT_MESSAGES as never)));
    expect(res.usage!.prompt_tokens).toBe(req.promptTokens.length);
    expect(req.params).toMatchObject({ maxTokens: 10000, temperature: 0.6, topP: 0.95, presencePenalty: 1.1, logprobs: 0 });
    const prompt = loaded.tokenizer.decode(req.promptTokens);
    expect(prompt.startsWith(`<|im_start|>system\n${SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n${QUESTION}<|im_end|>\n`)).toBe(true);
    expect(prompt).toContain('<tool_call>\n{"name": "search", "arguments": {"query": ["Santiago Calatrava first bridge", "Calatrava earliest bridge year"]}}\n</tool_call><|im_end|>\n');
    expect(prompt.endsWith("<|im_start|>user\n<tool_response>\nA search for 'Santiago Calatrava first bridge' found 2 results:\n\n1. [Calatrava bridges](https://example.org/calatrava)\nAn overview of his bridges, from the 1980s on.\n\n2. [Bach de Roda Bridge](https://example.org/bach-de-roda)\nCompleted 1987 in Barcelona.\n</tool_response><|im_end|>\n<|im_start|>assistant\n")).toBe(true);
  });

  it('a reply cut off while thinking is content, never null; with --reasoning-parser qwen3 it is reasoning_content and reasoning alike', async () => {
    const res = await thinkingPlain.chat.completions.create(agentRequest());
    const message = res.choices[0].message as Message;
    expect(res.choices[0].finish_reason).toBe('length');
    expect(typeof message.content).toBe('string');
    expect(message.content!.trim()).not.toBe('');
    expect('reasoning_content' in message).toBe(false);
    expect('reasoning' in message).toBe(false);
    const plainStream = await streamed(thinkingPlain, agentRequest());
    expect(plainStream.reasoningContent).toBeNull();
    expect(plainStream.reasoning).toBeNull();
    expect(plainStream.finish).toBe('length');
    expect(typeof plainStream.content).toBe('string');

    // The same with the parser on: the whole cut-off reply is reasoning, under both names; content null.
    const withParser = await thinkingParsed.chat.completions.create(agentRequest());
    const m = withParser.choices[0].message as Message;
    expect(withParser.choices[0].finish_reason).toBe('length');
    expect(typeof m.reasoning_content).toBe('string');
    expect(m.reasoning_content!.length).toBeGreaterThan(0);
    expect(m.reasoning).toBe(m.reasoning_content);
    expect(m.content).toBeNull();
    const parsedStream = await streamed(thinkingParsed, agentRequest());
    expect(parsedStream.reasoningContent).not.toBeNull();
    expect(parsedStream.reasoning).toBe(parsedStream.reasoningContent);
    expect(parsedStream.content).toBeNull();
  });

  it("with --reasoning-parser qwen3 and the model's own template, reasoning_content and reasoning are both there", async () => {
    const res = await parsed.chat.completions.create(agentRequest());
    const message = res.choices[0].message as Message;
    expect('reasoning_content' in message).toBe(true);
    expect('reasoning' in message).toBe(true);
    expect(message.reasoning).toBe(message.reasoning_content);
    expect(res.choices[0].logprobs!.content).toHaveLength(res.usage!.completion_tokens);
  });

  it('honours the stop strings: the reply ends before <tool_response>, which is not returned', async () => {
    // Steered onto <tool_response> (a random model would not write it by itself), else the agent's request.
    const toolResponse = loaded.tokenizer.addedTokens.get('<tool_response>')!;
    for (const client of [plain, thinkingPlain, parsed]) {
      const res = await client.chat.completions.create({ ...agentRequest(), logit_bias: { [toolResponse]: 100 } });
      const choice = res.choices[0];
      expect(choice.finish_reason).toBe('stop');
      expect((choice as unknown as { stop_reason: string }).stop_reason).toBe('<tool_response>');
      expect(choice.message.content).toBe('');
      expect(res.usage!.completion_tokens).toBe(1);
      expect(choice.logprobs!.content).toHaveLength(1);
    }
  });

  it('max_tokens 10000 must fit beside the prompt: past max-model-len − 10000 it is a 400 naming max_tokens, as from vLLM', async () => {
    const long = `<tool_response>\n${'Calatrava designed many bridges. '.repeat(1100)}\n</tool_response>`;
    const messages = [...AGENT_MESSAGES, { role: 'assistant' as const, content: '<tool_call>\n{"name": "visit", "arguments": {"url": ["https://example.org"], "goal": "dates"}}\n</tool_call>' }, { role: 'user' as const, content: long }];
    const err = await plain.chat.completions.create(agentRequest(messages)).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).param).toBe('max_tokens');
    expect((err as Error).message).toContain(String(MAX_MODEL_LEN));
  });
});
