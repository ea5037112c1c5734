// Every sampling feature end to end where its effect can be observed: a generated checkpoint (the
// real Qwen3 vocabulary), the real native addon and engine, the real server on loopback and the
// official `openai` client.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import type { FastifyInstance } from 'fastify';
import { loadServedModel, type LoadedModel } from '../../src/cli/load-model.ts';
import { buildApp } from '../../src/server/app.ts';
import { testModel } from '../helpers/model-fixtures.ts';
import { listenLoopback } from '../helpers/loopback.ts';

const MODEL = 'tiny-moe';
const EOS = 151645; // <|im_end|>
const TOOL_RESPONSE = 151665; // <tool_response>
const NEWLINE = 198; // "\n"
let loaded: LoadedModel;
let app: FastifyInstance;
let client: OpenAI;
let baseURL: string;

beforeAll(async () => {
  const dir = await testModel({ seed: 11, layers: 2, hidden: 64, heads: 4, kvHeads: 2, headDim: 16, experts: 8, topK: 2, mlpOnlyLayers: [0], maxPositionEmbeddings: 1024 });
  loaded = await loadServedModel({ dir, threads: 2, kvCacheGiB: 0.25, generationConfig: 'vllm' });
  app = buildApp({ engine: loaded.engine, tokenizer: loaded.tokenizer, template: loaded.template, servedModelName: MODEL, vocabSize: loaded.config.native.vocabSize });
  baseURL = await listenLoopback(app);
  client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: 'unused', maxRetries: 0 });
});

afterAll(async () => {
  await app?.close();
  await loaded?.engine.close();
});

type Extra = Record<string, unknown>;
const PROMPT = 'The sampling test prompt says';

/** A completion with its token ids (through return_tokens_as_token_ids) and top logprobs. */
async function complete(fields: Extra, prompt: string | number[] = PROMPT) {
  const res = await client.completions.create({
    model: MODEL, prompt, max_tokens: 8, logprobs: 20, return_tokens_as_token_ids: true, ...fields,
  } as OpenAI.CompletionCreateParamsNonStreaming);
  return res.choices.map((c) => ({
    text: c.text,
    finish: c.finish_reason,
    stopReason: (c as unknown as { stop_reason: string | number | null }).stop_reason,
    ids: c.logprobs!.tokens!.map((t) => Number(t.slice('token_id:'.length))),
    lps: c.logprobs!.token_logprobs! as number[],
    tops: c.logprobs!.top_logprobs!.map((top) => new Map(Object.entries(top!).map(([k, v]) => [Number(k.slice('token_id:'.length)), v]))),
  }));
}

const one = async (fields: Extra, prompt?: string | number[]) => (await complete(fields, prompt))[0];

async function postJson(route: string, body: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(`${baseURL}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return (await res.json()) as Record<string, unknown>;
}

/** The raw model's logprob of `token` after `context` (echo scoring of the context plus the token). */
async function rawLogprob(context: number[], token: number): Promise<number> {
  const res = await client.completions.create({ model: MODEL, prompt: [...context, token], max_tokens: 0, echo: true, logprobs: 0 });
  return res.choices[0].logprobs!.token_logprobs!.at(-1)!;
}

describe('sampling over the real engine', () => {
  it('top_k 1, min_p 1 and a tiny top_p all reduce sampling to greedy', async () => {
    const greedy = await one({ temperature: 0, max_tokens: 10 });
    expect(greedy.ids).toHaveLength(10);
    for (const seed of [1, 2, 3]) {
      for (const cut of [{ top_k: 1 }, { min_p: 1 }, { top_p: 1e-9 }]) {
        expect((await one({ temperature: 1, seed, max_tokens: 10, ...cut })).ids, JSON.stringify(cut)).toEqual(greedy.ids);
      }
    }
    // ...and without a cut, some seed leaves the greedy path.
    const free = await Promise.all([1, 2, 3].map((seed) => one({ temperature: 1.5, seed, max_tokens: 10 })));
    expect(free.some((r) => r.ids.join() !== greedy.ids.join())).toBe(true);
  });

  it('same seed, same output; other seeds, other outputs; top_k bounds every draw', async () => {
    const a = await one({ temperature: 1, seed: 99, max_tokens: 12 });
    const b = await one({ temperature: 1, seed: 99, max_tokens: 12 });
    expect(b.ids).toEqual(a.ids);
    const others = await Promise.all([100, 101, 102].map((seed) => one({ temperature: 1, seed, max_tokens: 12 })));
    expect(others.some((r) => r.ids.join() !== a.ids.join())).toBe(true);
    // top_k 3: each sampled token is among the 3 most likely (raw logprobs are reported).
    const k3 = await one({ temperature: 2, seed: 5, top_k: 3, max_tokens: 12 });
    k3.ids.forEach((id, i) => {
      const best3 = [...k3.tops[i]].sort((x, y) => y[1] - x[1]).slice(0, 3).map(([t]) => t);
      expect(best3).toContain(id);
    });
  });

  it('n = 3 gives three indexed choices; with a seed, choice i is the request with seed + i', async () => {
    const res = await client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 10, temperature: 1, seed: 500, n: 3 });
    expect(res.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    expect(new Set(res.choices.map((c) => c.text)).size).toBeGreaterThan(1);
    expect(res.usage!.completion_tokens).toBe(30);
    for (let i = 0; i < 3; i++) {
      const single = await client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 10, temperature: 1, seed: 500 + i });
      expect(single.choices[0].text).toBe(res.choices[i].text);
    }
    const chat = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 5, temperature: 1, seed: 3, n: 3 });
    expect(chat.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    expect(chat.usage!.completion_tokens).toBe(15);
  });

  it('logit_bias +100 forces a token, -100 bans one; logprobs stay the raw model\'s', async () => {
    const greedy = await one({ temperature: 0, max_tokens: 6 });
    const target = 12345;
    const forced = await one({ temperature: 1, seed: 4, max_tokens: 6, logit_bias: { [target]: 100 } });
    expect(forced.ids).toEqual(Array(6).fill(target));
    // The reported logprob is the unbiased model's: far from 0 for an arbitrary token.
    expect(forced.lps[0]).toBeLessThan(-1);
    const banned = await one({ temperature: 0, max_tokens: 6, logit_bias: { [greedy.ids[0]]: -100 } });
    expect(banned.ids[0]).not.toBe(greedy.ids[0]);
    expect(banned.ids).not.toContain(greedy.ids[0]);
    // Chat too.
    const chat = await client.chat.completions.create({
      model: MODEL, messages: [{ role: 'user', content: 'x' }], max_tokens: 4, logit_bias: { [loaded.tokenizer.encode('Yes')[0]]: 100 },
    });
    expect(chat.choices[0].message.content).toBe('YesYesYesYes');
  });

  // Two tokens biased far above all others: every step picks one of them, so the penalties decide
  // between two candidates whose raw logprobs can be read back exactly (echo scoring).
  const pairIds = () => ['x', 'y'].map((w) => loaded.tokenizer.encode(w)[0]);
  const pairBias = () => Object.fromEntries(pairIds().map((t) => [t, 100]));

  it('presence and frequency penalties: every step picks the pair token with the best raw logprob minus its penalty', async () => {
    const prompt = loaded.tokenizer.encode(PROMPT);
    const pair = pairIds();
    expect(prompt.some((t) => pair.includes(t))).toBe(false);
    const plain = await one({ temperature: 0, max_tokens: 16, logit_bias: pairBias() }, prompt);
    expect(plain.ids.every((t) => pair.includes(t))).toBe(true);
    for (const pen of [{ presence_penalty: 2 }, { frequency_penalty: 2 }, { presence_penalty: 0.5, frequency_penalty: 1.5 }]) {
      const presence = (pen as Extra).presence_penalty as number | undefined ?? 0;
      const frequency = (pen as Extra).frequency_penalty as number | undefined ?? 0;
      const r = await one({ temperature: 0, max_tokens: 16, logit_bias: pairBias(), ...pen }, prompt);
      expect(r.ids.every((t) => pair.includes(t))).toBe(true);
      const counts = new Map<number, number>();
      let decisive = 0;
      for (let i = 0; i < r.ids.length; i++) {
        const ctx = [...prompt, ...r.ids.slice(0, i)];
        const other = pair.find((t) => t !== r.ids[i])!;
        const otherLp = await rawLogprob(ctx, other);
        const penalty = (t: number) => {
          const n = counts.get(t) ?? 0;
          return frequency * n + (n > 0 ? presence : 0);
        };
        expect(r.lps[i] - penalty(r.ids[i]), `step ${i} ${JSON.stringify(pen)}`).toBeGreaterThanOrEqual(otherLp - penalty(other) - 1e-3);
        // The penalty decided this step: the raw model preferred the other token.
        if (otherLp > r.lps[i] + 1e-3) decisive++;
        counts.set(r.ids[i], (counts.get(r.ids[i]) ?? 0) + 1);
      }
      expect(decisive, JSON.stringify(pen)).toBeGreaterThan(0);
    }
  });

  it('repetition_penalty: the reply first leaves the plain one where a used token loses to an unused one', async () => {
    const prompt = loaded.tokenizer.encode(PROMPT);
    const plain = await one({ temperature: 0, max_tokens: 16, logit_bias: pairBias() }, prompt);
    const a = await one({ temperature: 0, max_tokens: 16, logit_bias: pairBias(), repetition_penalty: 1.5 }, prompt);
    const b = await one({ temperature: 0, max_tokens: 16, logit_bias: pairBias(), repetition_penalty: 1.5 }, prompt);
    expect(a.ids).toEqual(b.ids);
    const d = a.ids.findIndex((t, i) => t !== plain.ids[i]);
    expect(d).toBeGreaterThanOrEqual(0);
    // Same context up to d: the raw model prefers the plain pick, which must have been penalised (used before) and the other not.
    const used = new Set([...prompt, ...a.ids.slice(0, d)]);
    expect(plain.lps[d]).toBeGreaterThan(a.lps[d]);
    expect(used.has(plain.ids[d])).toBe(true);
    expect(used.has(a.ids[d])).toBe(false);
  });

  it('stop_token_ids end the reply before the token and report it as stop_reason', async () => {
    const greedy = await one({ temperature: 0, max_tokens: 8 });
    const k = greedy.ids.findIndex((id, i) => i >= 2 && !greedy.ids.slice(0, i).includes(id));
    expect(k).toBeGreaterThanOrEqual(2);
    const r = await one({ temperature: 0, max_tokens: 8, stop_token_ids: [greedy.ids[k]] });
    // The stop token is counted and has its logprob entry, as in vLLM; its text is not returned.
    expect(r.ids).toEqual(greedy.ids.slice(0, k + 1));
    expect(r.finish).toBe('stop');
    expect(r.stopReason).toBe(greedy.ids[k]);
  });

  it('EOS ends the reply unless ignore_eos; min_tokens holds it off', async () => {
    const eos = { logit_bias: { [EOS]: 100 }, temperature: 0, max_tokens: 5 };
    const stopped = await client.completions.create({ model: MODEL, prompt: PROMPT, ...eos });
    expect(stopped.choices[0]).toMatchObject({ text: '', finish_reason: 'stop' });
    const ignored = await one({ ...eos, ignore_eos: true });
    expect(ignored.ids).toEqual(Array(5).fill(EOS));
    expect(ignored.finish).toBe('length');
    const held = await one({ ...eos, min_tokens: 3 });
    // three tokens, then the EOS (counted, with its logprob entry)
    expect(held.ids).toHaveLength(4);
    expect(held.ids.slice(0, 3)).not.toContain(EOS);
    expect(held.ids[3]).toBe(EOS);
    expect(held.finish).toBe('stop');
    // min_tokens holds off user stop_token_ids as well.
    const target = 4242;
    const user = await one({ temperature: 0, max_tokens: 6, logit_bias: { [target]: 100 }, stop_token_ids: [target], min_tokens: 2 });
    expect(user.ids).toHaveLength(3);
    expect(user.ids[2]).toBe(target);
    expect(user.stopReason).toBe(target);
    // ...and stop strings, which count only once more than min_tokens tokens are out (vLLM).
    const yes = { model: MODEL, messages: [{ role: 'user' as const, content: 'x' }], max_tokens: 6, stop: 'Yes', logit_bias: { [loaded.tokenizer.encode('Yes')[0]]: 100 } };
    const early = await client.chat.completions.create(yes);
    expect(early.choices[0]).toMatchObject({ message: { content: '' }, finish_reason: 'stop' });
    const late = await client.chat.completions.create({ ...yes, min_tokens: 2 } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(late.choices[0]).toMatchObject({ message: { content: 'YesYes' }, finish_reason: 'stop' });
  });

  it('max_tokens and max_completion_tokens bound the reply', async () => {
    const c = await client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 3, temperature: 0 });
    expect(c.usage!.completion_tokens).toBe(3);
    const messages = [{ role: 'user' as const, content: 'count' }];
    const a = await client.chat.completions.create({ model: MODEL, messages, max_completion_tokens: 4, temperature: 0, logit_bias: { [EOS]: -100 } });
    expect(a.usage!.completion_tokens).toBe(4);
    expect(a.choices[0].finish_reason).toBe('length');
    const b = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 2, temperature: 0, logit_bias: { [EOS]: -100 } });
    expect(b.usage!.completion_tokens).toBe(2);
  });

  it('chat logprobs with top_logprobs: one entry per token, exactly k alternatives, the greedy pick first', async () => {
    const res = await client.chat.completions.create({
      model: MODEL, messages: [{ role: 'user', content: 'logprobs' }], max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 4,
      logit_bias: { [EOS]: -100 },
    });
    const content = res.choices[0].logprobs!.content!;
    expect(content).toHaveLength(6);
    for (const entry of content) {
      expect(entry.top_logprobs).toHaveLength(4);
      expect(entry.top_logprobs[0].token).toBe(entry.token);
      expect(entry.top_logprobs[0].logprob).toBeCloseTo(entry.logprob, 5);
      expect(entry.logprob).toBeLessThanOrEqual(0);
    }
  });

  it('streams with n = 2 and include_usage: deltas per choice equal the non-streamed choices, usage comes last', async () => {
    const body = { model: MODEL, messages: [{ role: 'user' as const, content: 'stream two' }], max_tokens: 6, temperature: 1, seed: 77, n: 2, logit_bias: { [EOS]: -100 } };
    const full = await client.chat.completions.create(body);
    const stream = await client.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
    const texts = ['', ''];
    let usage: OpenAI.CompletionUsage | null | undefined;
    let usageLast = false;
    for await (const chunk of stream) {
      usageLast = !!chunk.usage;
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) texts[c.index] += c.delta.content ?? '';
    }
    expect(texts).toEqual(full.choices.map((c) => c.message.content ?? ''));
    expect(usageLast).toBe(true);
    expect(usage).toEqual(full.usage);
    expect(usage!.completion_tokens).toBe(12);
  });

  it('chat stop strings across token boundaries, streamed and not, leave the stop text out', async () => {
    const body = { model: MODEL, messages: [{ role: 'user' as const, content: 'stop strings' }], max_tokens: 24, temperature: 0, logit_bias: { [EOS]: -100 } };
    const base = (await client.chat.completions.create(body)).choices[0].message.content!;
    // Every 3-character window that starts mid-token is a stop string spanning a boundary somewhere.
    const k = Math.floor(base.length / 2);
    const stop = base.slice(k, k + 3);
    const expected = base.slice(0, base.indexOf(stop));
    const res = await client.chat.completions.create({ ...body, stop });
    expect(res.choices[0].message.content).toBe(expected);
    expect(res.choices[0].finish_reason).toBe('stop');
    const stream = await client.chat.completions.create({ ...body, stop: [stop, 'never-seen'], stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    expect(text).toBe(expected);
  });
});

describe("the DeepResearch agent's own settings", () => {
  const agent = { temperature: 0.85, top_p: 0.95, presence_penalty: 1.1, stop: ['\n<tool_response>', '<tool_response>'] };
  const messages = [
    { role: 'system' as const, content: 'You are a deep research assistant.' },
    { role: 'user' as const, content: 'Find the population of Lisbon.' },
  ];

  it('work as given, streamed and not, at both ends of the temperature range, reproducibly with a seed', async () => {
    for (const temperature of [0.6, 0.85]) {
      const body = { model: MODEL, messages, max_tokens: 12, seed: 21, ...agent, temperature };
      const a = await client.chat.completions.create(body);
      const b = await client.chat.completions.create(body);
      expect(b.choices[0].message).toEqual(a.choices[0].message);
      expect(['stop', 'length']).toContain(a.choices[0].finish_reason);
      const stream = await client.chat.completions.create({ ...body, stream: true });
      let content = '';
      let reasoning = '';
      for await (const chunk of stream) {
        content += chunk.choices[0]?.delta.content ?? '';
        reasoning += (chunk.choices[0]?.delta as { reasoning_content?: string } | undefined)?.reasoning_content ?? '';
      }
      expect(content).toBe(a.choices[0].message.content ?? '');
      expect(reasoning).toBe((a.choices[0].message as { reasoning_content?: string }).reasoning_content ?? '');
    }
  });

  it('stop at <tool_response>, alone or after a newline, without returning it, streamed or not', async () => {
    // Steer the model between "\n" and <tool_response> only: bias both far above every other token, the
    // newline 0.5 nats ahead at the first step (from the raw logprobs there), so that seeds differ in how
    // many newlines come before the tag; presence_penalty 1.1 then pushes the newline down.
    const prompt = (await postJson('/tokenize', { model: MODEL, messages })).tokens as number[];
    const lead = (await rawLogprob(prompt, NEWLINE)) - (await rawLogprob(prompt, TOOL_RESPONSE));
    const logit_bias = { [NEWLINE]: 100, [TOOL_RESPONSE]: Math.min(100, 100 + lead - 0.5) };
    const stops = new Set<string>();
    for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
      const body = { model: MODEL, messages, max_tokens: 40, seed, ...agent, logit_bias };
      const res = await client.chat.completions.create(body);
      const choice = res.choices[0];
      const message = choice.message as { content: string | null; reasoning_content?: string | null };
      const text = `${message.reasoning_content ?? ''}${message.content ?? ''}`;
      expect(text).toMatch(/^\n*$/);
      expect(choice.finish_reason).toBe('stop');
      const stopReason = (choice as unknown as { stop_reason: string }).stop_reason;
      // The earliest match wins: after a newline it is "\n<tool_response>", and that newline is not returned either.
      const newlines = res.usage!.completion_tokens - 1;
      expect(stopReason).toBe(newlines === 0 ? '<tool_response>' : '\n<tool_response>');
      expect(text).toBe('\n'.repeat(Math.max(0, newlines - 1)));
      stops.add(stopReason);
      const stream = await client.chat.completions.create({ ...body, stream: true });
      let streamed = '';
      for await (const chunk of stream) {
        const d = chunk.choices[0]?.delta as { content?: string | null; reasoning_content?: string | null } | undefined;
        streamed += `${d?.reasoning_content ?? ''}${d?.content ?? ''}`;
      }
      expect(streamed).toBe(text);
    }
    expect([...stops].sort()).toEqual(['\n<tool_response>', '<tool_response>']);
  });
});

describe('/tokenize and /detokenize over the real server', () => {
  it('chat token counts agree with the usage of a chat completion; detokenize inverts tokenize', async () => {
    const messages = [{ role: 'user', content: 'How many tokens is this? 日本語' }];
    const tok = (await postJson('/tokenize', { model: MODEL, messages })) as { count: number; max_model_len: number; tokens: number[] };
    const chat = await client.chat.completions.create({ model: MODEL, messages: messages as OpenAI.ChatCompletionMessageParam[], max_tokens: 1 });
    expect(tok.count).toBe(chat.usage!.prompt_tokens);
    expect(tok.max_model_len).toBe(1024);
    const back = (await postJson('/detokenize', { tokens: tok.tokens })) as { prompt: string };
    expect(back.prompt).toContain('How many tokens is this? 日本語');
    expect(back.prompt.startsWith('<|im_start|>user\n')).toBe(true);
  });
});
