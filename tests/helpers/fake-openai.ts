// A scripted OpenAI-compatible server on loopback for the research agent tests: /v1/chat/completions answers
// what the script returns for each request (recorded as received), /v1/models lists the given models, and
// /metrics serves whatever text the test provides (404 without).
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ChatBody {
  model: string;
  messages: { role: string; content: string }[];
  [key: string]: unknown;
}

export interface FakeReplyObject {
  content?: string | null;
  reasoning_content?: string;
  tool_calls?: { id?: string; type: 'function'; function: { name: string; arguments: string } }[];
  finish_reason?: string;
  /** Default: prompt ≈ the messages' characters / 4, completion ≈ the content's / 4. */
  usage?: { prompt_tokens: number; completion_tokens: number };
  /** An HTTP error instead of a reply. */
  status?: number;
  error?: string;
  /** Milliseconds before the reply is sent. */
  delayMs?: number;
}

export type FakeReply = string | FakeReplyObject;
export type Script = (body: ChatBody, index: number) => FakeReply | Promise<FakeReply>;

export interface FakeServer {
  origin: string;
  baseURL: string;
  requests: ChatBody[];
  /** Most chat requests in flight at once. */
  peakInFlight: number;
  setMetrics(text: string | null): void;
  close(): Promise<void>;
}

export function promptChars(body: ChatBody): number {
  return body.messages.reduce((n, m) => n + (m.content?.length ?? 0), 0);
}

export async function startFakeOpenAI(options: {
  script: Script;
  models?: { id: string; max_model_len?: number }[];
  metrics?: string | null;
}): Promise<FakeServer> {
  const requests: ChatBody[] = [];
  let metrics = options.metrics ?? null;
  let inFlight = 0;
  const state = { peakInFlight: 0 };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const send = (status: number, body: unknown, type = 'application/json') => {
          res.writeHead(status, { 'content-type': type });
          res.end(typeof body === 'string' ? body : JSON.stringify(body));
        };
        if (req.method === 'GET' && req.url === '/v1/models') {
          return send(200, { object: 'list', data: (options.models ?? [{ id: 'fake-model' }]).map((m) => ({ object: 'model', owned_by: 'test', ...m })) });
        }
        if (req.method === 'GET' && req.url === '/metrics') {
          return metrics === null ? send(404, 'not found', 'text/plain') : send(200, metrics, 'text/plain; version=0.0.4');
        }
        if (req.method !== 'POST' || req.url !== '/v1/chat/completions') return send(404, { error: { message: 'no route' } });
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as ChatBody;
        const index = requests.length;
        requests.push(body);
        inFlight++;
        state.peakInFlight = Math.max(state.peakInFlight, inFlight);
        try {
          const scripted = await options.script(body, index);
          const reply: FakeReplyObject = typeof scripted === 'string' ? { content: scripted } : scripted;
          if (reply.delayMs) await new Promise((r) => setTimeout(r, reply.delayMs));
          if (reply.status !== undefined) {
            return send(reply.status, { error: { message: reply.error ?? 'scripted error', type: 'BadRequestError', code: reply.status } });
          }
          const content = reply.content === undefined ? '' : reply.content;
          const usage = reply.usage ?? { prompt_tokens: Math.ceil(promptChars(body) / 4), completion_tokens: Math.ceil((content ?? '').length / 4) };
          const message: Record<string, unknown> = { role: 'assistant', content };
          if (reply.reasoning_content !== undefined) message.reasoning_content = reply.reasoning_content;
          if (reply.tool_calls) message.tool_calls = reply.tool_calls.map((c, i) => ({ id: c.id ?? `call_${i}`, ...c }));
          send(200, {
            id: `chatcmpl-${index}`,
            object: 'chat.completion',
            created: 0,
            model: body.model,
            choices: [{ index: 0, message, finish_reason: reply.finish_reason ?? (reply.tool_calls ? 'tool_calls' : 'stop'), logprobs: null }],
            usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens },
          });
        } finally {
          inFlight--;
        }
      })().catch((err: unknown) => {
        res.writeHead(500);
        res.end(String(err));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    origin,
    baseURL: `${origin}/v1`,
    requests,
    get peakInFlight() {
      return state.peakInFlight;
    },
    setMetrics(text) {
      metrics = text;
    },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** A tool for tests: `run` decides the output (or throws); every call's arguments are recorded. */
export function fakeTool(name: string, run: (args: Record<string, unknown>) => string | Promise<string>) {
  const calls: Record<string, unknown>[] = [];
  return {
    calls,
    tool: {
      name,
      description: `The ${name} tool.`,
      parameters: { type: 'object', properties: { query: { type: 'array', items: { type: 'string' } } }, required: ['query'] },
      async run(args: Record<string, unknown>) {
        calls.push(args);
        return run(args);
      },
    },
  };
}

export const toolCall = (name: string, args: Record<string, unknown>) => `<tool_call>\n${JSON.stringify({ name, arguments: args })}\n</tool_call>`;
