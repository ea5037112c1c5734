// The Responses API store is bounded by bytes whatever clients send: least recently used responses leave first,
// a response larger than the whole budget is not kept, and items are found through the latest response holding them.
import { describe, expect, it } from 'vitest';
import { ResponseStore, type StoredResponse } from '../../src/server/response-store.ts';

const stored = (id: string, text: string, itemIds: string[] = []): StoredResponse => ({
  response: { id, text },
  conversation: itemIds.map((item) => ({ id: item, type: 'message', content: text })),
});
const bytes = (v: StoredResponse) => 2 * JSON.stringify(v).length;

describe('ResponseStore', () => {
  it('keeps within its budget, evicting the least recently used first', () => {
    const one = stored('r1', 'x'.repeat(100));
    const store = new ResponseStore(3 * bytes(one));
    for (const id of ['r1', 'r2', 'r3']) expect(store.put(id, stored(id, 'x'.repeat(100)))).toBe(true);
    expect(store.get('r1')).toBeDefined(); // r1 is now the most recently used
    store.put('r4', stored('r4', 'x'.repeat(100)));
    expect(store.get('r2')).toBeUndefined();
    expect(['r1', 'r3', 'r4'].every((id) => store.get(id) !== undefined)).toBe(true);
    expect(store.bytes).toBeLessThanOrEqual(store.maxBytes);
    for (let i = 0; i < 1000; i++) store.put(`s${i}`, stored(`s${i}`, 'y'.repeat(i % 150)));
    expect(store.bytes).toBeLessThanOrEqual(store.maxBytes);
    expect(store.size).toBeGreaterThan(0);
  });

  it('does not keep a response larger than the whole budget, and drops nothing for it', () => {
    const store = new ResponseStore(1000);
    store.put('small', stored('small', 'a'));
    expect(store.put('huge', stored('huge', 'z'.repeat(1000)))).toBe(false);
    expect(store.get('huge')).toBeUndefined();
    expect(store.get('small')).toBeDefined();
  });

  it('finds items through the latest response that holds them, and forgets them with it', () => {
    const store = new ResponseStore(1 << 20);
    store.put('r1', stored('r1', 'first', ['msg_a']));
    store.put('r2', stored('r2', 'second', ['msg_a', 'msg_b']));
    expect(store.item('msg_a')?.content).toBe('second');
    store.delete('r2');
    expect(store.item('msg_a')).toBeUndefined();
    expect(store.item('msg_b')).toBeUndefined();
    expect(store.get('r1')).toBeDefined();
    expect(store.bytes).toBe(bytes(stored('r1', 'first', ['msg_a'])));
  });
});
