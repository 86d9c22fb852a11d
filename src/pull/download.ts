// Streams one URL into a file: redirects followed, HTTPS_PROXY / HTTP_PROXY / NO_PROXY honoured, connect and
// stall timeouts, bounded retries with backoff, a cut connection resumed with a Range request, the size checked
// against Content-Length and the expected size, and the sha256 computed on the way. The bytes go to a tracked
// temporary beside the destination (`<dest>.<pid>.tmp`, removed on failure or interrupt) and are renamed into
// place only when complete and checked, so a partial download is never taken for a file.

import { createHash, type Hash } from 'node:crypto';
import { closeSync, fsyncSync, ftruncateSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, type Dispatcher, ProxyAgent, request } from 'undici';
import { removeStaleTemps, tempPathFor, trackTemp, untrackTemp } from '../util/files.js';

/** A download that failed: HTTP status, network, timeout, a size that does not fit, a hash that does not match. */
export class DownloadError extends Error {
  override name = 'DownloadError';
  constructor(
    message: string,
    /** The HTTP status, where the server answered with one. */
    readonly status?: number,
  ) {
    super(message);
  }
}

/** The downloaded bytes are not the pinned ones (the file has been deleted). */
export class IntegrityError extends Error {
  override name = 'IntegrityError';
}

export interface DownloadProgress {
  /** Bytes in the file so far (resumed bytes included). */
  received: number;
  /** The full size, when the server announced it. */
  total?: number;
  /** Average rate of this download so far. */
  bytesPerSecond: number;
  /** Seconds left at that rate, when the total is known. */
  etaSeconds?: number;
}

export type ProxyEnv = Readonly<Record<string, string | undefined>>;

export interface DownloadOptions {
  /** The size the file must have (a catalogue's), checked against Content-Length and the bytes received. */
  expectedBytes?: number;
  /** The sha256 (hex) the file must have; on a mismatch nothing is kept and an IntegrityError names both. */
  sha256?: string;
  /** Longest wait to connect, for the response headers, and between two pieces of the body (default 30 s). */
  timeoutMs?: number;
  /** Retries in a row without progress before giving up (default 4); a retry that brought bytes resets it. */
  retries?: number;
  /** The first wait before a retry, doubled each time up to 30 s (default 1 s); a 429/503 Retry-After wins. */
  retryDelayMs?: number;
  /** Where HTTPS_PROXY / HTTP_PROXY / NO_PROXY (and lower-case forms) are read (default process.env). */
  env?: ProxyEnv;
  /** Called as bytes arrive (at most every 100 ms, and once at the end). */
  onProgress?: (p: DownloadProgress) => void;
  /** Notes for the user: retries, resumes, restarts, the proxy used. */
  log?: (message: string) => void;
  signal?: AbortSignal;
}

export interface Downloaded {
  path: string;
  bytes: number;
  sha256: string;
  /** The URL after redirects (of the last request). */
  finalUrl: string;
  /** Requests made (1 when nothing went wrong). */
  requests: number;
  /** How many times a cut download continued with a Range request. */
  resumes: number;
  /** The proxy the requests went through, if any. */
  proxy?: string;
}

export const DOWNLOAD_DEFAULTS = { timeoutMs: 30_000, retries: 4, retryDelayMs: 1000 } as const;
const MAX_REDIRECTS = 10;
const MAX_BACKOFF_MS = 30_000;

// ---------------------------------------------------------------------------------------------------------
// Proxies, as curl and most tools read them: lower-case names win over upper-case; https:// URLs use
// HTTPS_PROXY, http:// ones HTTP_PROXY; NO_PROXY lists hosts (and subdomains), `.domain`, `*.domain`,
// `host:port`, IP addresses, or `*` for all.

function envValue(env: ProxyEnv, name: string): string | undefined {
  const v = env[name.toLowerCase()] ?? env[name.toUpperCase()];
  return v && v.trim() ? v.trim() : undefined;
}

/** True when NO_PROXY says `url` is to be reached directly. */
export function bypassesProxy(url: URL, noProxy: string | undefined): boolean {
  if (!noProxy) return false;
  const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  for (const raw of noProxy.split(/[\s,]+/)) {
    let entry = raw.trim().toLowerCase();
    if (!entry) continue;
    if (entry === '*') return true;
    let entryPort: string | undefined;
    const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry) ?? /^([^:]+):(\d+)$/.exec(entry);
    if (m) [entry, entryPort] = [m[1], m[2]];
    if (entryPort && entryPort !== port) continue;
    entry = entry.replace(/^\*?\./, '');
    if (host === entry || host.endsWith(`.${entry}`)) return true;
  }
  return false;
}

/** The proxy a request for `url` goes through under `env`, or undefined for a direct connection. */
export function proxyFor(url: string, env: ProxyEnv = process.env): string | undefined {
  const u = new URL(url);
  const proxy = envValue(env, u.protocol === 'https:' ? 'HTTPS_PROXY' : 'HTTP_PROXY');
  if (!proxy || bypassesProxy(u, envValue(env, 'NO_PROXY'))) return undefined;
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(proxy) ? proxy : `http://${proxy}`;
}

/** One connection pool for direct requests and one per proxy, closed together. */
class Dispatchers {
  private readonly pools = new Map<string, Dispatcher>();
  constructor(
    private readonly env: ProxyEnv,
    private readonly timeoutMs: number,
  ) {}

  for(url: string): { dispatcher: Dispatcher; proxy?: string } {
    const proxy = proxyFor(url, this.env);
    const tunnel = new URL(url).protocol === 'https:';
    const key = proxy ? `${proxy} ${tunnel}` : '';
    let d = this.pools.get(key);
    if (!d) {
      const connect = { timeout: this.timeoutMs };
      // https:// is tunnelled with CONNECT; plain http:// goes to the proxy as an absolute-URI request, which
      // is what forward proxies (squid and the like) expect for it.
      d = proxy ? new ProxyAgent({ uri: proxy, proxyTunnel: tunnel, connect, proxyTls: connect }) : new Agent({ connect });
      this.pools.set(key, d);
    }
    return { dispatcher: d, proxy };
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((d) => d.destroy().catch(() => {})));
  }
}

// ---------------------------------------------------------------------------------------------------------

/** A failure worth another try (network, timeout, 5xx, 408, 429), with the server's Retry-After if any. */
class Retryable extends Error {
  constructor(
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** Drops a response body we will not read (without an unhandled 'error' event). */
function discard(body: Dispatcher.ResponseData['body']): void {
  body.on('error', () => {});
  body.destroy();
}

function header(h: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

function retryAfter(h: Record<string, string | string[] | undefined>): number | undefined {
  const v = header(h, 'retry-after');
  if (!v) return undefined;
  const secs = Number(v);
  const ms = Number.isFinite(secs) ? secs * 1000 : Date.parse(v) - Date.now();
  return Number.isFinite(ms) && ms >= 0 ? Math.min(ms, 120_000) : undefined;
}

export function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} bytes`;
}

function describeNetworkError(e: unknown, timeoutMs: number): string {
  const err = e as Error & { code?: string; cause?: Error & { code?: string } };
  const code = err.code ?? err.cause?.code;
  switch (code) {
    case 'UND_ERR_CONNECT_TIMEOUT':
      return `could not connect within ${timeoutMs} ms (--timeout-ms)`;
    case 'UND_ERR_HEADERS_TIMEOUT':
      return `no response within ${timeoutMs} ms (--timeout-ms)`;
    case 'UND_ERR_BODY_TIMEOUT':
      return `the server sent nothing for ${timeoutMs} ms (--timeout-ms)`;
    case 'ECONNREFUSED':
      return `connection refused (${err.cause?.message ?? err.message})`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `host not found (${err.cause?.message ?? err.message})`;
    default:
      return `${err.message}${err.cause?.message && err.cause.message !== err.message ? ` (${err.cause.message})` : ''}`;
  }
}

/** Downloads `url` to `dest` (replacing it only when the download is complete and checked). */
export async function download(url: string, dest: string, o: DownloadOptions = {}): Promise<Downloaded> {
  const timeoutMs = o.timeoutMs ?? DOWNLOAD_DEFAULTS.timeoutMs;
  const retries = o.retries ?? DOWNLOAD_DEFAULTS.retries;
  const retryDelayMs = o.retryDelayMs ?? DOWNLOAD_DEFAULTS.retryDelayMs;
  const log = o.log ?? (() => {});
  const pools = new Dispatchers(o.env ?? process.env, timeoutMs);
  const tmp = tempPathFor(dest);
  removeStaleTemps(dest);
  const fd = openSync(tmp, 'w');
  let open = true;
  trackTemp(tmp);

  let received = 0;
  let hash: Hash = createHash('sha256');
  let total: number | undefined;
  /** ETag (strong) or Last-Modified of the first response: a Range request only continues the same file. */
  let validator: string | undefined;
  let finalUrl = url;
  let requests = 0;
  let resumes = 0;
  let proxyUsed: string | undefined;
  const started = Date.now();
  let fetched = 0; // bytes that came over the network in this call, restarts included (for the rate)
  let lastReport = 0;
  const report = (force = false): void => {
    if (!o.onProgress) return;
    const now = Date.now();
    if (!force && now - lastReport < 100) return;
    lastReport = now;
    const secs = Math.max((now - started) / 1000, 1e-3);
    const bytesPerSecond = fetched / secs;
    const etaSeconds = total !== undefined && bytesPerSecond > 0 ? (total - received) / bytesPerSecond : undefined;
    o.onProgress({ received, total, bytesPerSecond, etaSeconds });
  };
  const restart = (): void => {
    ftruncateSync(fd, 0);
    received = 0;
    hash = createHash('sha256');
  };
  const tooLarge = (n: number, what: string): DownloadError | undefined => {
    if (o.expectedBytes !== undefined && n > o.expectedBytes)
      return new DownloadError(`${url}: ${what} ${n} bytes, more than the ${o.expectedBytes} bytes expected (the catalogue's size): not the expected file`);
    if (total !== undefined && n > total) return new DownloadError(`${url}: the server sent more than the ${total} bytes it announced`);
    return undefined;
  };

  /** One request (redirects followed); resolves when the body has been written, or throws. */
  const attempt = async (): Promise<void> => {
    let current = url;
    let res: Dispatcher.ResponseData | undefined;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { 'user-agent': 'resnet-onnx', 'accept-encoding': 'identity' };
      if (received > 0) {
        headers.range = `bytes=${received}-`;
        if (validator) headers['if-range'] = validator;
      }
      const { dispatcher, proxy } = pools.for(current);
      if (proxy && proxy !== proxyUsed) log(`connecting through proxy ${new URL(proxy).host} (${new URL(current).protocol === 'https:' ? 'HTTPS_PROXY' : 'HTTP_PROXY'})`);
      proxyUsed = proxy ?? proxyUsed;
      requests++;
      try {
        res = await request(current, { method: 'GET', headers, dispatcher, headersTimeout: timeoutMs, bodyTimeout: timeoutMs, signal: o.signal });
      } catch (e) {
        if (o.signal?.aborted) throw e;
        throw new Retryable(describeNetworkError(e, timeoutMs));
      }
      const location = header(res.headers, 'location');
      if ([301, 302, 303, 307, 308].includes(res.statusCode) && location) {
        await res.body.dump().catch(() => {});
        if (hop >= MAX_REDIRECTS) throw new DownloadError(`${url}: more than ${MAX_REDIRECTS} redirects (last to ${location})`);
        current = new URL(location, current).href;
        continue;
      }
      break;
    }
    finalUrl = current;
    const status = res.statusCode;
    const where = current === url ? url : `${url} (redirected to ${current})`;
    if (status === 416 && received > 0) {
      // We may already hold every byte (a cut right at the end); otherwise start again.
      await res.body.dump().catch(() => {});
      const size = /^bytes \*\/(\d+)$/.exec(header(res.headers, 'content-range') ?? '')?.[1];
      if (size !== undefined && Number(size) === received) return;
      log(`the server refused to resume at byte ${received} (416): starting over`);
      restart();
      throw new Retryable('range not satisfiable', 0);
    }
    if (status !== 200 && status !== 206) {
      await res.body.dump().catch(() => {});
      const text = `HTTP ${status}${status === 404 ? ' Not Found' : ''}`;
      if (status >= 500 || status === 408 || status === 429) throw new Retryable(current === url ? text : `${text} from ${current}`, retryAfter(res.headers));
      throw new DownloadError(`${where}: ${text}`, status);
    }
    const length = header(res.headers, 'content-length');
    if (status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header(res.headers, 'content-range') ?? '');
      if (!m || Number(m[1]) !== received) {
        await res.body.dump().catch(() => {});
        log(`the server answered the resume at byte ${received} with ${m ? `bytes ${m[1]}-${m[2]}` : 'no usable Content-Range'}: starting over`);
        restart();
        throw new Retryable('unusable partial response', 0);
      }
      if (m[3] !== '*') total = Number(m[3]);
      resumes++;
      log(`resumed at ${formatBytes(received)}${total !== undefined ? ` of ${formatBytes(total)}` : ''}`);
    } else {
      if (received > 0) {
        log(`the server sent the whole file again (no Range support${validator ? ', or it changed' : ''}): starting over`);
        restart();
      }
      total = length !== undefined && /^\d+$/.test(length) ? Number(length) : undefined;
      const etag = header(res.headers, 'etag');
      validator = etag && !etag.startsWith('W/') ? etag : header(res.headers, 'last-modified');
    }
    if (total !== undefined) {
      const big = tooLarge(total, 'the server announces');
      if (big) {
        discard(res.body);
        throw big;
      }
      if (o.expectedBytes !== undefined && total < o.expectedBytes) {
        discard(res.body);
        throw new DownloadError(`${where}: the server announces ${total} bytes, fewer than the ${o.expectedBytes} bytes expected (the catalogue's size): not the expected file`);
      }
    }
    report(true);
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        const over = tooLarge(received + chunk.length, 'the body reaches');
        if (over) {
          discard(res.body);
          throw over;
        }
        writeSync(fd, chunk, 0, chunk.length, received);
        hash.update(chunk);
        received += chunk.length;
        fetched += chunk.length;
        report();
      }
    } catch (e) {
      if (e instanceof DownloadError || o.signal?.aborted) throw e;
      throw new Retryable(`connection lost after ${formatBytes(received)}${total !== undefined ? ` of ${formatBytes(total)}` : ''}: ${describeNetworkError(e, timeoutMs)}`);
    }
    if (total !== undefined && received < total) throw new Retryable(`the connection closed after ${received} of ${total} bytes`);
  };

  try {
    let failures = 0;
    for (;;) {
      const before = received;
      try {
        await attempt();
        break;
      } catch (e) {
        if (!(e instanceof Retryable)) throw e;
        failures = received > before ? 1 : failures + 1;
        if (failures > retries)
          throw new DownloadError(`${url}: ${e.message} (gave up after ${requests} request${requests === 1 ? '' : 's'}; --retries ${retries})`);
        const wait = e.retryAfterMs ?? Math.min(retryDelayMs * 2 ** (failures - 1), MAX_BACKOFF_MS);
        log(`${e.message}; retry ${failures} of ${retries} in ${(wait / 1000).toFixed(1)} s${received > 0 ? `, resuming at byte ${received}` : ''}`);
        await sleep(wait, undefined, { signal: o.signal });
      }
    }
    report(true);
    if (o.expectedBytes !== undefined && received !== o.expectedBytes)
      throw new DownloadError(`${url}: the body has ${received} bytes, the catalogue expects ${o.expectedBytes}: not the expected file`);
    const sha256 = hash.digest('hex');
    if (o.sha256 && sha256 !== o.sha256.toLowerCase())
      throw new IntegrityError(`${url}: sha256 mismatch: expected ${o.sha256.toLowerCase()} (--sha256), got ${sha256}; the download has been deleted`);
    fsyncSync(fd);
    closeSync(fd);
    open = false;
    renameSync(tmp, dest);
    untrackTemp(tmp);
    return { path: dest, bytes: received, sha256, finalUrl, requests, resumes, proxy: proxyUsed };
  } catch (e) {
    if (open) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      /* never created or already gone */
    }
    untrackTemp(tmp);
    throw e;
  } finally {
    await pools.close();
  }
}
