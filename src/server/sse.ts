// Server-sent events on the raw response (`data: {...}\n\n`, ending `data: [DONE]\n\n`), and the
// client-disconnect signal every generation request is tied to.
import type { FastifyReply, FastifyRequest } from 'fastify';

/** Aborts when the client goes away before the response is complete (streaming or not). */
export function disconnectSignal(request: FastifyRequest, reply: FastifyReply): AbortController {
  const controller = new AbortController();
  const onClose = () => {
    if (!reply.raw.writableFinished) controller.abort();
  };
  reply.raw.once('close', onClose);
  request.raw.once('aborted', () => controller.abort());
  // The client may have gone while the prompt was being tokenized, before these listeners existed.
  if (request.raw.socket?.destroyed || reply.raw.destroyed) controller.abort();
  return controller;
}

export class SseWriter {
  private opened = false;

  /**
   * `writeTimeoutMs`: how long one write may wait for a congested socket to drain (nginx's send_timeout);
   * past it the connection is destroyed, which aborts the request and frees its KV blocks.
   */
  constructor(
    private readonly reply: FastifyReply,
    private readonly writeTimeoutMs: number,
  ) {}

  /** Takes the response over from Fastify and sends the headers. */
  open(): void {
    if (this.opened) return;
    this.opened = true;
    this.reply.hijack();
    this.reply.raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
  }

  get closed(): boolean {
    return this.reply.raw.destroyed || this.reply.raw.writableEnded;
  }

  /** Writes one event; waits while the socket is congested (until it drains, closes, or the write timeout ends it). */
  async send(data: unknown): Promise<void> {
    await this.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /** Writes one named event (`event: NAME` then `data: {...}`), as the Responses API streams. */
  async sendEvent(name: string, data: unknown): Promise<void> {
    await this.write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  async done(): Promise<void> {
    await this.write('data: [DONE]\n\n');
    this.end();
  }

  end(): void {
    if (!this.closed) this.reply.raw.end();
  }

  private async write(text: string): Promise<void> {
    if (this.closed) return;
    const raw = this.reply.raw;
    if (raw.write(text)) return;
    await new Promise<void>((resolve) => {
      // A client that stopped reading: the connection goes, and with it the request (disconnectSignal).
      const timer = setTimeout(() => raw.destroy(), this.writeTimeoutMs);
      const finish = () => {
        clearTimeout(timer);
        raw.off('drain', finish);
        raw.off('close', finish);
        resolve();
      };
      raw.once('drain', finish);
      raw.once('close', finish);
    });
  }
}
