// Draining an engine request's event stream in tests.
import type { EngineEvent } from '../../src/engine/types.ts';

/** All events, the generated token ids and the final 'finish' event (throws if the stream did not end with one). */
export async function collect(it: AsyncIterable<EngineEvent>) {
  const events: EngineEvent[] = [];
  for await (const e of it) events.push(e);
  const tokens = events.flatMap((e) => (e.type === 'token' ? [e.token] : []));
  const finish = events.at(-1);
  if (finish?.type !== 'finish') throw new Error('stream did not end with finish');
  return { events, tokens, finish };
}
