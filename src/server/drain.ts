// Shutting down without dropping work: stop accepting, let running requests finish within a grace
// period, then end the rest with an error their clients can see (a 503, or an SSE error event on a
// stream that has started), never a silent "finish_reason: abort" on a 200.
import type { FastifyInstance } from 'fastify';
import type { Engine } from '../engine/types.ts';
import { ApiError, errorBody } from './errors.ts';

/** Kubernetes' default terminationGracePeriodSeconds: a pod's server has that long after SIGTERM. */
export const DEFAULT_SHUTDOWN_TIMEOUT_S = 30;

/** After the engine has failed the last requests, how long their clients get to receive the error. */
const FLUSH_MS = 2000;

/**
 * Resolves when the server is closed and the engine freed. Fastify's close() stops listening, closes
 * idle connections and waits for the running requests (any that still arrive on an open keep-alive
 * connection get a 503: refuseWhileDraining); past `graceMs` the engine ends what still runs with a
 * 503 error, and past that plus FLUSH_MS any connection still open is cut.
 */
export async function drain(app: FastifyInstance, engine: Engine, graceMs: number): Promise<void> {
  app.draining = true;
  const closed = app.close();
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<'expired'>((resolve) => (timer = setTimeout(() => resolve('expired'), graceMs)));
  if ((await Promise.race([closed, expired])) === 'expired') {
    // Armed first: ending the requests waits for the engine's step in flight.
    const cut = setTimeout(() => app.server.closeAllConnections(), FLUSH_MS);
    await engine.close(new ApiError(503, `The server is shutting down: the request did not finish within the ${graceMs / 1000} s grace period (--shutdown-timeout).`));
    await closed;
    clearTimeout(cut);
  }
  clearTimeout(timer);
  await engine.close();
}

/**
 * While draining, a request that still arrives (on a keep-alive connection opened before) gets an
 * OpenAI-shaped 503 and the connection closes; Fastify's own 503 would not be OpenAI-shaped.
 */
export function refuseWhileDraining(app: FastifyInstance): void {
  app.decorate('draining', false);
  app.addHook('onRequest', async (_request, reply) => {
    if (!app.draining) return;
    return reply.code(503).header('connection', 'close').send(errorBody(503, 'The server is shutting down.'));
  });
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Set by drain(): new requests get a 503. */
    draining: boolean;
  }
}
