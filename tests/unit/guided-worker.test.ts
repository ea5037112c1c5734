// Guided decoding through its grammar worker: guides proxy the worker's matchers (masks, tokens,
// disposal, one round trip for the guides of a turn), no matcher outlives its guide, a worker that
// dies fails its guides clearly and is replaced, and close() stops it.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { RequestError } from '../../src/engine/types.ts';
import { GuidedDecoding, type GuideSpec } from '../../src/guided/guided-decoding.ts';
import { WorkerThread } from '../../src/worker/rpc.ts';
import { allowedIds, EOS, guidedDecoding, TOKENIZER_JSON, tokenId, VOCAB_SIZE } from './guided-helpers.ts';

const PARAM = 'response_format.json_schema.schema';
const yesNo: GuideSpec = { kind: 'json', schema: { enum: ['yes', 'no'] }, param: PARAM };
const words = Math.ceil(VOCAB_SIZE / 32);

beforeAll(async () => {
  await guidedDecoding().warmup();
}, 60_000);

afterAll(async () => {
  await guidedDecoding().close();
});

describe('guided decoding in its worker', () => {
  it('frees a matcher in the worker for every guide disposed, used or not, once', async () => {
    const gd = guidedDecoding();
    const before = (await gd.stats()).matchers;
    const guides = await gd.guides(yesNo, 3);
    expect((await gd.stats()).matchers).toBe(before + 3);
    const row = new Uint32Array(words);
    expect(await guides[0].next(row)).toBe('masked');
    expect(guides[0].accept(tokenId('"'))).toBe(true);
    await guides[0].next(row);
    for (const g of guides) g.dispose();
    guides[0].dispose();
    expect((await gd.stats()).matchers).toBe(before);
    await expect(guides[1].next(row)).rejects.toThrow('used after dispose');
  });

  it('answers the guides whose next() starts in one turn with one round trip, as each alone would', async () => {
    const gd = guidedDecoding();
    const spec: GuideSpec = { kind: 'json', schema: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'boolean' } }, required: ['a', 'b'] }, param: PARAM };
    const script = ['{"', 'a', '":', ' ', '1', ','].map(tokenId);
    const [alone] = await gd.guides(spec, 1);
    const expected: number[][] = [];
    const row = new Uint32Array(words);
    for (const t of script) {
      await alone.next(row);
      expected.push(allowedIds(row));
      expect(alone.accept(t)).toBe(true);
    }
    alone.dispose();

    const guides = await gd.guides(spec, 3);
    const rows = guides.map(() => new Uint32Array(words));
    const call = vi.spyOn(WorkerThread.prototype, 'call');
    try {
      for (let step = 0; step < script.length; step++) {
        const statuses = await Promise.all(guides.map((g, i) => g.next(rows[i])));
        expect(statuses).toEqual(['masked', 'masked', 'masked']);
        for (const r of rows) expect(allowedIds(r)).toEqual(expected[step]);
        for (const g of guides) expect(g.accept(script[step])).toBe(true);
      }
      expect(call.mock.calls.filter(([method]) => method === 'step')).toHaveLength(script.length);
    } finally {
      call.mockRestore();
      for (const g of guides) g.dispose();
    }
  });

  it('accept() refuses a token outside the last mask at once; one taken on trust and rejected fails the next next()', async () => {
    const gd = guidedDecoding();
    const [checked, trusted] = await gd.guides(yesNo, 2);
    const row = new Uint32Array(words);
    await checked.next(row);
    expect(checked.accept(tokenId('maybe'))).toBe(false);
    // Two accepts in a row: the second has no mask to answer from.
    expect(trusted.accept(tokenId('"'))).toBe(true);
    expect(trusted.accept(tokenId('maybe'))).toBe(true);
    await expect(trusted.next(row)).rejects.toThrow(`the grammar rejects token ${tokenId('maybe')}`);
    await expect(trusted.next(row)).rejects.toThrow('the grammar rejects token');
    checked.dispose();
    trusted.dispose();
    expect((await gd.stats()).matchers).toBe(0);
  });

  it('refuses a bad or absurd schema with a RequestError naming the parameter', async () => {
    const gd = guidedDecoding();
    const huge: GuideSpec = { kind: 'json', schema: { enum: Array.from({ length: 60_000 }, (_, i) => `v${i}`) }, param: PARAM };
    const t0 = performance.now();
    const err = await gd.guides(huge, 1).catch((e: unknown) => e);
    expect(performance.now() - t0).toBeLessThan(2_000);
    expect(err).toBeInstanceOf(RequestError);
    expect(err).toMatchObject({ param: PARAM, message: expect.stringContaining("schema at '/enum' makes the constraint too large") });
    const bad = await gd.compile({ kind: 'json', schema: { type: 'string', pattern: '(?=x)' }, param: PARAM }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(RequestError);
    expect((bad as RequestError).param).toBe(PARAM);
  });

  it('a dead worker fails its guides and calls clearly; the next call starts a fresh one', async () => {
    const gd = new GuidedDecoding({
      tokenizerFile: TOKENIZER_JSON,
      vocabSize: VOCAB_SIZE,
      stopTokenIds: EOS,
      maxHeapMb: 128,
      workerModule: new URL('./guided-crash-worker.ts', import.meta.url),
    });
    try {
      const [busy, idle] = await gd.guides(yesNo, 2);
      const row = new Uint32Array(words);
      expect(await busy.next(row)).toBe('masked');
      expect(busy.accept(tokenId('"'))).toBe(true);
      // The crash is handled first, so the step posted after it never gets an answer.
      const crash = gd.compile({ kind: 'json', schema: null, param: 'crash' });
      const inFlight = busy.next(row);
      await expect(crash).rejects.toThrow(/^grammar worker failed: .*memory/);
      await expect(inFlight).rejects.toThrow(/^grammar worker failed/);
      await expect(idle.next(row)).rejects.toThrow(/^grammar worker failed: .*\(this guide's grammar state was lost with it\)$/);
      busy.dispose();
      idle.dispose();

      const [fresh] = await gd.guides(yesNo, 1);
      expect(await fresh.next(row)).toBe('masked');
      expect(allowedIds(row)).toContain(tokenId('"'));
      expect(await gd.stats()).toEqual({ matchers: 1, grammars: 1 });
      fresh.dispose();
      expect((await gd.stats()).matchers).toBe(0);
    } finally {
      await gd.close();
    }
  });

  it('close() stops the worker: guides and calls fail from then on', async () => {
    const gd = new GuidedDecoding({ tokenizerFile: TOKENIZER_JSON, vocabSize: VOCAB_SIZE, stopTokenIds: EOS });
    const [guide] = await gd.guides(yesNo, 1);
    await gd.close();
    await expect(guide.next(new Uint32Array(words))).rejects.toThrow('guided decoding is closed');
    guide.dispose();
    await expect(gd.guides(yesNo, 1)).rejects.toThrow('grammar worker is closed');
  });
});
