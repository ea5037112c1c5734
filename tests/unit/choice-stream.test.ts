// The merge of a response's choices (src/server/choice-stream.ts): every event once, in arrival order,
// linear in the events; and however the response ends, no choice runs on for nobody.
import { describe, expect, it } from 'vitest';
import { mergeStreams, streamChoices, type ChoiceSpec } from '../../src/server/choice-stream.ts';
import type { Engine, EngineEvent, GenerateRequest } from '../../src/engine/types.ts';

/** Engine double: each request emits `tokens` tokens, one per tick, until aborted; request `failAt` throws instead. */
function tickingEngine(tokens: number, failAt = -1) {
  const signals: AbortSignal[] = [];
  const engine = {
    maxModelLen: 1000,
    eosTokenIds: [],
    stats: () => { throw new Error('unused'); },
    close: async () => {},
    async *generate(req: GenerateRequest): AsyncGenerator<EngineEvent> {
      const me = signals.push(req.signal!) - 1;
      for (let t = 0; t < tokens; t++) {
        await new Promise((r) => setTimeout(r, 1));
        if (req.signal!.aborted) {
          yield { type: 'finish', reason: 'abort', promptTokens: 1, completionTokens: t };
          return;
        }
        if (me === failAt && t === 2) throw new Error('choice failed');
        yield { type: 'token', token: 65 + t, logprob: null };
      }
      yield { type: 'finish', reason: 'length', promptTokens: 1, completionTokens: tokens };
    },
  } satisfies Engine;
  return { engine, signals };
}

const decoder = { decode: (ids: readonly number[]) => String.fromCharCode(...ids) };
const spec = (index: number): ChoiceSpec => ({
  index, promptTokens: [1], stops: [], includeStop: false, skipSpecialTokens: true, userStopTokenIds: new Set(),
  params: { maxTokens: 100, temperature: 0, topP: 1, topK: 0, stopTokenIds: [], ignoreEos: true, logprobs: null, promptLogprobs: null },
});

describe('choice streams', () => {
  it('merge every event of thousands of sources once, each source in order', async () => {
    const n = 5000;
    const seen: number[][] = Array.from({ length: n }, () => []);
    async function* source(i: number) {
      for (let k = 0; k < 3; k++) {
        if ((i + k) % 7 === 0) await Promise.resolve();
        yield [i, k] as const;
      }
    }
    for await (const [i, k] of mergeStreams(n, source)) seen[i].push(k);
    expect(seen.every((ks) => ks.join() === '0,1,2')).toBe(true);
  });

  it('a choice that fails ends the response and aborts every sibling still running', async () => {
    const { engine, signals } = tickingEngine(50, 1);
    const client = new AbortController();
    const texts: string[] = [];
    await expect((async () => {
      for await (const d of streamChoices(engine, decoder, [0, 1, 2, 3].map(spec), client.signal)) texts.push(d.text);
    })()).rejects.toThrow('choice failed');
    expect(signals).toHaveLength(4);
    expect(signals.map((s) => s.aborted)).toEqual([true, true, true, true]);
    expect(client.signal.aborted).toBe(false);
  });

  it('the client going away aborts them all; finished ones are left alone', async () => {
    const { engine, signals } = tickingEngine(5);
    const client = new AbortController();
    const merged = streamChoices(engine, decoder, [0, 1].map(spec), client.signal);
    const first = await merged.next();
    expect(first.done).toBe(false);
    client.abort();
    const rest: string[] = [];
    for await (const d of merged) if (d.finish) rest.push(d.finish.reason);
    expect(rest).toEqual(['abort', 'abort']);
    expect(signals.every((s) => s.aborted)).toBe(true);
  });
});
