// The conversation a Responses request continues, from the response store: `previous_response_id` puts the
// stored conversation (its input and output items) before this request's input, and each `item_reference`
// input item is replaced by the stored item it names. Without a store both stay as they are, and the
// translation (responses-request.ts) refuses them with a 400 saying the server stores nothing.
import { ApiError } from './errors.ts';
import type { ResponseStore } from './response-store.ts';
import type { ResponsesBody, ResponsesInputItem } from './responses-schema.ts';

export interface ResolvedInput {
  /** The request with its whole conversation in `input` and no previous_response_id. */
  body: ResponsesBody;
  /** That conversation's items, what a stored response keeps before its output. */
  items: ResponsesInputItem[];
}

export function resolveHistory(body: ResponsesBody, store: ResponseStore | null): ResolvedInput {
  const own: ResponsesInputItem[] = typeof body.input === 'string' ? [{ type: 'message', role: 'user', content: body.input }] : body.input;
  if (store === null) return { body, items: own };
  const before: ResponsesInputItem[] = [];
  const previous = body.previous_response_id;
  if (previous !== undefined && previous !== null) {
    const stored = store.get(previous);
    if (stored === undefined) {
      throw new ApiError(404, `Previous response with id '${previous}' not found (responses are kept in memory, up to --response-store-size).`, 'previous_response_id');
    }
    before.push(...stored.conversation);
  }
  const items = own.map((item, i) => {
    if (item === null || typeof item !== 'object' || item.type !== 'item_reference') return item;
    const id = item.id;
    const found = typeof id === 'string' ? store.item(id) : undefined;
    if (found === undefined) throw new ApiError(404, `Item with id '${String(id)}' not found (responses are kept in memory, up to --response-store-size).`, `input[${i}].id`);
    return found;
  });
  const all = [...before, ...items];
  return { body: { ...body, input: all, previous_response_id: null }, items: all };
}
