import { describe, expect, it } from 'vitest';
import { Xoshiro128 } from '../../src/engine/rng.ts';
import { AsyncQueue } from '../../src/engine/async-queue.ts';

describe('Xoshiro128 (xoshiro128**)', () => {
  it('matches the reference output for state {1, 2, 3, 4}', () => {
    // Reference vector from the rand_xoshiro crate's tests of the C reference implementation.
    const g = Xoshiro128.fromState(1, 2, 3, 4);
    const got = Array.from({ length: 10 }, () => g.nextU32());
    expect(got).toEqual([11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034, 3734860849, 3729100597, 4258142804]);
  });

  it('is deterministic per seed, distinct across seeds, and uniform in [0, 1)', () => {
    const draw = (seed: number) => {
      const g = new Xoshiro128(seed);
      return Array.from({ length: 1000 }, () => g.nextFloat());
    };
    expect(draw(42)).toEqual(draw(42));
    expect(draw(42)).not.toEqual(draw(43));
    expect(draw(-1)).not.toEqual(draw(2 ** 32 - 1));
    expect(draw(2 ** 40)).not.toEqual(draw(0));
    const xs = draw(7);
    for (const x of xs) {
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThan(1);
      expect(Math.fround(x)).toBe(x);
    }
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.05);
  });

  it('rejects seeds that are not safe integers', () => {
    expect(() => new Xoshiro128(1.5)).toThrow(/seed/);
  });
});

describe('AsyncQueue', () => {
  it('delivers items pushed before and after the consumer waits, then ends', async () => {
    const q = new AsyncQueue<number>();
    q.push(1);
    const got: number[] = [];
    const done = (async () => {
      for await (const x of q) got.push(x);
    })();
    await new Promise((r) => setImmediate(r));
    q.push(2);
    q.push(3);
    q.end();
    q.push(4);
    await done;
    expect(got).toEqual([1, 2, 3]);
  });

  it('raises a failure after the items before it', async () => {
    const q = new AsyncQueue<number>();
    q.push(1);
    q.fail(new Error('boom'));
    const got: number[] = [];
    await expect(
      (async () => {
        for await (const x of q) got.push(x);
      })(),
    ).rejects.toThrow('boom');
    expect(got).toEqual([1]);
  });

  it('calls onCancel once when the consumer stops early, not after a normal end', async () => {
    let cancels = 0;
    const q = new AsyncQueue<number>(() => cancels++);
    q.push(1);
    q.push(2);
    for await (const x of q) if (x === 1) break;
    expect(cancels).toBe(1);
    await q.return();
    expect(cancels).toBe(1);
    const q2 = new AsyncQueue<number>(() => cancels++);
    q2.push(1);
    q2.end();
    for await (const x of q2) if (x === 1) break;
    expect(cancels).toBe(1);
  });
});
