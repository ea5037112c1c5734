// How request bodies are parsed, and limits on their shape that the JSON parser and the schemas do not set.
// JSON.parse accepts any nesting depth, but the code a body flows into does not (the chat template
// engine, JSON.stringify and schema compilers recurse and overflow the stack near a few thousand
// levels): a body nested deeper than MAX_BODY_DEPTH is a 400 before any of that runs.
import type { FastifyInstance } from 'fastify';
import { badRequest } from './errors.ts';

/** Far above any real request (a tool's JSON schema nests a few dozen levels at most). */
export const MAX_BODY_DEPTH = 256;

/** The top-level field under which `value` nests deeper than `maxDepth`, '' for the body itself, or null when it does not. */
export function tooDeep(value: unknown, maxDepth = MAX_BODY_DEPTH): string | null {
  if (value === null || typeof value !== 'object') return null;
  // Iterative, so that checking cannot overflow the stack either.
  const stack: [unknown, number, string][] = [[value, 0, '']];
  while (stack.length > 0) {
    const [node, depth, top] = stack.pop()!;
    if (depth > maxDepth) return top;
    if (Array.isArray(node)) {
      for (const child of node) if (child !== null && typeof child === 'object') stack.push([child, depth + 1, top]);
    } else {
      for (const [key, child] of Object.entries(node as Record<string, unknown>)) {
        if (child !== null && typeof child === 'object') stack.push([child, depth + 1, depth === 0 ? key : top]);
      }
    }
  }
  return null;
}

export function installBodyGuard(app: FastifyInstance, maxDepth = MAX_BODY_DEPTH): void {
  app.addHook('preValidation', async (request) => {
    const where = tooDeep(request.body, maxDepth);
    if (where !== null) throw badRequest(`The request body nests more than ${maxDepth} levels deep${where ? ` (in '${where}')` : ''}.`, where || null);
  });
}

/** Bodies from this size on are parsed on a turn of the event loop of their own. */
const YIELD_BODY_BYTES = 64 * 1024;

/**
 * Large bodies waiting to be parsed, one per turn of the event loop: immediates queued together run
 * back to back in one check phase, so each parse queues the next only once it has run, and the loop
 * polls I/O (answers /health, writes streams) between them.
 */
const largeBodies: (() => void)[] = [];

function parseNext(): void {
  try {
    largeBodies.shift()!();
  } finally {
    if (largeBodies.length > 0) setImmediate(parseNext);
  }
}

/**
 * Fastify's own JSON parser (prototype and constructor poisoning refused, as by default), but large
 * bodies are parsed one per turn of the event loop: when several finish arriving together, Node would
 * run their handlers back to back in one phase (four 1 MB bodies: about 60 ms with nothing else served).
 */
export function installJsonParser(app: FastifyInstance): void {
  const parse = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = body as string; // parseAs 'string'
    if (text.length < YIELD_BODY_BYTES) return parse(request, text, done);
    largeBodies.push(() => parse(request, text, done));
    if (largeBodies.length === 1) setImmediate(parseNext);
  });
}
