// Fetching for the research tools: one deadline (connect, headers and body together) joined with the caller's
// AbortSignal; pages read as a stream and cut at a byte cap; http(s) only; and, unless allowed, no request to a
// loopback, private or link-local address (a page the model reads could otherwise steer it at the user's own
// services or a cloud metadata endpoint). Redirects are followed by hand so every hop passes the same checks.
import dns from 'node:dns/promises';
import net from 'node:net';
import { extractReadable } from './html.ts';
import { errorMessage } from './format.ts';

export type FetchFn = typeof fetch;

class DeadlineError extends Error {}

/**
 * Runs fn with a signal that aborts when the caller's signal does or after timeoutMs; a timeout becomes an Error
 * saying `${what} timed out after N ms`, a caller's abort is rethrown as the signal's reason.
 */
export async function withDeadline<T>(signal: AbortSignal, timeoutMs: number, what: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  signal.throwIfAborted();
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new DeadlineError(`${what} timed out after ${timeoutMs} ms`)), timeoutMs);
  const onAbort = (): void => controller.abort(signal.reason);
  signal.addEventListener('abort', onAbort, { once: true });
  // Raced against the abort too, so a step that does not take a signal (a DNS lookup) cannot outlast the deadline.
  let rejectAborted: (reason: unknown) => void = () => {};
  const aborted = new Promise<never>((_, reject) => (rejectAborted = reject));
  const onInnerAbort = (): void => rejectAborted(controller.signal.reason);
  controller.signal.addEventListener('abort', onInnerAbort, { once: true });
  try {
    const work = fn(controller.signal);
    work.catch(() => {}); // once the race is lost, a late failure has no one to report to
    return await Promise.race([work, aborted]);
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    if (controller.signal.aborted && controller.signal.reason instanceof DeadlineError) throw new Error(controller.signal.reason.message);
    throw err;
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
    controller.signal.removeEventListener('abort', onInnerAbort);
  }
}

const blocked = new net.BlockList();
for (const [net4, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) blocked.addSubnet(net4, prefix, 'ipv4');
// IPv4-mapped IPv6 addresses (::ffff:127.0.0.1) are checked against the IPv4 rules by BlockList itself.
for (const [net6, prefix] of [['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8]] as const) {
  blocked.addSubnet(net6, prefix, 'ipv6');
}

/** Whether an IP address is loopback, private, link-local, multicast or otherwise not a public host. */
export function isPrivateAddress(address: string): boolean {
  const family = net.isIP(address);
  if (family === 0) return false;
  return blocked.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/** Throws unless every address the host resolves to is public. */
async function assertPublicHost(hostname: string): Promise<void> {
  const host = hostname.replace(/^\[|\]$/g, '');
  const addresses = net.isIP(host)
    ? [{ address: host }]
    : await dns.lookup(host, { all: true, verbatim: true }).catch((err: NodeJS.ErrnoException) => {
        throw new Error(`cannot resolve ${hostname} (${err.code ?? err.message})`);
      });
  const inner = addresses.find((a) => isPrivateAddress(a.address));
  if (inner) {
    throw new Error(`refused: ${hostname} is a loopback/private network address (${inner.address}); visit reads public web pages only`);
  }
}

/** Parses a URL the model gave and refuses any scheme but http(s). */
export function parseHttpUrl(url: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`not a valid URL: ${url}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new Error(`refused: ${parsed.protocol} URLs cannot be visited (only http(s) URLs and corpus:// links)`);
  }
  return parsed;
}

export interface FetchPageOptions {
  fetch?: FetchFn;
  /** For the whole request, body included (default 20 s). */
  timeoutMs?: number;
  /** Bytes of body read at most; the rest is dropped and the text says so (default 2 MiB). */
  maxBytes?: number;
  /** Let pages on loopback/private addresses be fetched (default false). */
  allowPrivateNetwork?: boolean;
  maxRedirects?: number;
}

export interface FetchedPage {
  /** After redirects. */
  url: string;
  title: string;
  text: string;
  /** The body was longer than maxBytes and was cut. */
  truncated: boolean;
}

const USER_AGENT = 'Mozilla/5.0 (compatible; moeserve-research/0.1)';

/** Fetches an http(s) page and returns its readable text (HTML through Readability, plain text as it is). */
export async function fetchPage(url: string, signal: AbortSignal, options: FetchPageOptions = {}): Promise<FetchedPage> {
  const fetchFn = options.fetch ?? fetch;
  const timeoutMs = options.timeoutMs ?? 20_000;
  const maxBytes = options.maxBytes ?? 2 * 1024 * 1024;
  const maxRedirects = options.maxRedirects ?? 5;
  let current = parseHttpUrl(url);
  return withDeadline(signal, timeoutMs, `fetching ${url}`, async (inner) => {
    let response: Response;
    for (let hop = 0; ; hop++) {
      if (!options.allowPrivateNetwork) await assertPublicHost(current.hostname);
      try {
        response = await fetchFn(current.href, {
          signal: inner,
          redirect: 'manual',
          headers: { 'user-agent': USER_AGENT, accept: 'text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.1' },
        });
      } catch (err) {
        if (inner.aborted) throw err;
        throw new Error(`fetching ${current.href} failed: ${errorMessage(err)}`);
      }
      const location = response.headers.get('location');
      if (response.status < 300 || response.status >= 400 || !location) break;
      await response.body?.cancel().catch(() => {});
      if (hop >= maxRedirects) throw new Error(`too many redirects fetching ${url}`);
      current = parseHttpUrl(new URL(location, current).href);
    }
    if (!response.ok) {
      await response.body?.cancel().catch(() => {});
      throw new Error(`HTTP ${response.status}${response.statusText ? ' ' + response.statusText : ''} fetching ${current.href}`);
    }
    const contentType = (response.headers.get('content-type') ?? '').toLowerCase();
    const mime = contentType.split(';')[0].trim();
    const kind = mime === 'text/html' || mime === 'application/xhtml+xml' ? 'html'
      : mime.startsWith('text/') || mime === 'application/json' || mime.endsWith('+json') ? 'text'
      : mime === '' ? 'sniff' : null;
    if (!kind) {
      await response.body?.cancel().catch(() => {});
      throw new Error(`${current.href} is ${mime}, which visit cannot read (it reads HTML and plain-text pages)`);
    }
    const { bytes, truncated } = await readCapped(response, maxBytes);
    const charset = /charset\s*=\s*"?([\w.:-]+)/.exec(contentType)?.[1] ?? (kind === 'text' ? undefined : metaCharset(bytes));
    const body = decode(bytes, charset);
    const isHtml = kind === 'html' || (kind === 'sniff' && /^\s*(<!doctype html|<html|<head|<body)/i.test(body));
    if (isHtml) {
      const { title, text } = extractReadable(body);
      return { url: current.href, title, text, truncated };
    }
    if (body.includes('\0')) throw new Error(`${current.href} is binary content, which visit cannot read`);
    return { url: current.href, title: '', text: body.replace(/\r\n?/g, '\n').trim(), truncated };
  });
}

/** Reads a response body up to maxBytes, then cancels the stream instead of downloading the rest. */
async function readCapped(response: Response, maxBytes: number): Promise<{ bytes: Uint8Array; truncated: boolean }> {
  if (!response.body) return { bytes: new Uint8Array(0), truncated: false };
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  let truncated = false;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (total + value.byteLength > maxBytes) {
      chunks.push(value.subarray(0, maxBytes - total));
      total = maxBytes;
      truncated = true;
      await reader.cancel().catch(() => {});
      break;
    }
    chunks.push(value);
    total += value.byteLength;
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return { bytes, truncated };
}

function metaCharset(bytes: Uint8Array): string | undefined {
  const head = new TextDecoder('latin1').decode(bytes.subarray(0, 2048));
  return /<meta[^>]+charset\s*=\s*["']?([\w.:-]+)/i.exec(head)?.[1];
}

function decode(bytes: Uint8Array, charset: string | undefined): string {
  try {
    return new TextDecoder(charset ?? 'utf-8').decode(bytes);
  } catch {
    return new TextDecoder('utf-8').decode(bytes);
  }
}
