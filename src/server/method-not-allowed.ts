// A known path asked with a method it does not serve gets 405 with an Allow header (RFC 9110), not a
// 404 that says the path does not exist. Registered as routes in the same Fastify context as the real
// ones, so the router's own matching (and that context's hooks, e.g. the API key) apply.
import type { FastifyInstance, HTTPMethods } from 'fastify';
import { errorBody } from './errors.ts';

const METHODS: HTTPMethods[] = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'];

/** For each path → the methods it serves (GET implies HEAD, as Fastify exposes it), answer every other method with 405. */
export function refuseOtherMethods(scope: FastifyInstance, routes: Record<string, HTTPMethods[]>): void {
  for (const [url, served] of Object.entries(routes)) {
    const allowed = served.includes('GET') && !served.includes('HEAD') ? [...served, 'HEAD' as const] : served;
    const others = METHODS.filter((m) => !allowed.includes(m));
    if (others.length === 0) continue;
    const allow = allowed.join(', ');
    scope.route({
      method: others,
      url,
      handler: async (request, reply) =>
        reply.code(405).header('allow', allow).send(errorBody(405, `Method ${request.method} is not allowed on ${url}; allowed: ${allow}.`)),
    });
  }
}
