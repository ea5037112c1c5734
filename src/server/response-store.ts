// Stored responses of the Responses API (`store`, true by OpenAI's default): what `previous_response_id`,
// `item_reference` input items and GET /v1/responses/{id} read back. In memory only (a restart forgets), bounded
// by bytes with the least recently used response out first, so no client can grow it past its budget. Ids are
// random 128-bit UUIDs: a response is found only by whoever was given its id.

export interface StoredResponse {
  /** The Response object as returned. */
  response: Record<string, unknown>;
  /** The conversation through this response: the effective input items, then the output items. */
  conversation: Record<string, unknown>[];
}

interface Entry {
  value: StoredResponse;
  bytes: number;
}

/** Ids of items a response carries (input items that had one, and every output item). */
function itemIds(value: StoredResponse): string[] {
  return value.conversation.flatMap((item) => (typeof item.id === 'string' ? [item.id] : []));
}

export class ResponseStore {
  private readonly responses = new Map<string, Entry>();
  /** Item id → the latest stored response whose conversation holds it. */
  private readonly owners = new Map<string, string>();
  private used = 0;

  constructor(readonly maxBytes: number) {}

  get bytes(): number {
    return this.used;
  }

  get size(): number {
    return this.responses.size;
  }

  /** Keeps a finished response; one larger than the whole budget is not kept (false). */
  put(id: string, value: StoredResponse): boolean {
    // UTF-16 code units, an upper bound of what the strings hold in memory.
    const bytes = 2 * JSON.stringify(value).length;
    if (bytes > this.maxBytes) return false;
    this.delete(id);
    while (this.used + bytes > this.maxBytes) {
      const oldest = this.responses.keys().next().value as string;
      this.delete(oldest);
    }
    this.responses.set(id, { value, bytes });
    this.used += bytes;
    for (const item of itemIds(value)) this.owners.set(item, id);
    return true;
  }

  /** The stored response (now the most recently used), or undefined. */
  get(id: string): StoredResponse | undefined {
    const entry = this.responses.get(id);
    if (entry === undefined) return undefined;
    this.responses.delete(id);
    this.responses.set(id, entry);
    return entry.value;
  }

  /** A stored item by its id (from the latest response that holds it), or undefined. */
  item(id: string): Record<string, unknown> | undefined {
    const owner = this.owners.get(id);
    if (owner === undefined) return undefined;
    return this.get(owner)?.conversation.find((item) => item.id === id);
  }

  delete(id: string): boolean {
    const entry = this.responses.get(id);
    if (entry === undefined) return false;
    this.responses.delete(id);
    this.used -= entry.bytes;
    for (const item of itemIds(entry.value)) if (this.owners.get(item) === id) this.owners.delete(item);
    return true;
  }
}
