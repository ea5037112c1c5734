// Shutting down without dropping work: stop accepting, let running requests finish within a grace
// period, then end the rest with an error their clients can see (a 503, or an SSE error event on a
// stream that has started), never a silent "finish_reason: abort" on a 200.
import type { FastifyInstance } from 'fastify';
import type { Engine } from '../engine/types.ts';
import { ApiError } from './errors.ts';

/** As vLLM and Kubernetes' default terminationGracePeriodSeconds. */
export const DEFAULT_SHUTDOWN_TIMEOUT_S = 30;

/** After the engine has failed the last requests, how long their clients get to receive the error. */
const FLUSH_MS = 2000;

/**
 * Resolves when the server is closed and the engine freed. Fastify's close() stops listening, answers
 * requests that still arrive on open keep-alive connections with 503, closes idle connections and
 * waits for the running ones; past `graceMs` the engine ends what still runs with a 503 error, and
 * past that plus FLUSH_MS any connection still open is cut.
 */
export async function drain(app: FastifyInstance, engine: Engine, graceMs: number): Promise<void> {
  const closed = app.close();
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<'expired'>((resolve) => (timer = setTimeout(() => resolve('expired'), graceMs)));
  if ((await Promise.race([closed, expired])) === 'expired') {
    await engine.close(new ApiError(503, `The server is shutting down: the request did not finish within the ${graceMs / 1000} s grace period (--shutdown-timeout).`));
    const cut = setTimeout(() => app.server.closeAllConnections(), FLUSH_MS);
    await closed;
    clearTimeout(cut);
  }
  clearTimeout(timer);
  await engine.close();
}
