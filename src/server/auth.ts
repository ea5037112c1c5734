// --api-key: the bearer check, attached as a hook to the protected routes themselves (an encapsulated
// Fastify context), so it runs for whatever the router matched, however the request spelled its path
// (percent-encoded, absolute-form, ...). A check on the raw URL can be bypassed by any spelling the
// router decodes and the check does not.
import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { ApiError, toErrorReply } from './errors.ts';

/**
 * True only for exactly `Bearer <apiKey>`: the scheme as RFC 6750 spells it and the whole key, nothing
 * trimmed or case-folded (Node's HTTP parser has already dropped whitespace around the header value).
 * Constant time in the key's content.
 */
export function checkBearer(header: string | undefined, apiKey: string): boolean {
  const expected = Buffer.from(`Bearer ${apiKey}`);
  const given = Buffer.from(header ?? '');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** Every route registered in `scope` (and its children) answers 401 unless the request carries the key. */
export function requireApiKey(scope: FastifyInstance, apiKey: string): void {
  if (apiKey === '') throw new Error('an empty API key would protect nothing');
  scope.addHook('onRequest', async (request, reply) => {
    if (checkBearer(request.headers.authorization, apiKey)) return;
    const { status, body } = toErrorReply(new ApiError(401, 'Unauthorized: a valid API key is required (Authorization: Bearer <key>).'));
    return reply.code(status).header('www-authenticate', 'Bearer').send(body);
  });
}
