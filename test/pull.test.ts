// `resnet-onnx pull` against HTTP servers the tests start on 127.0.0.1 (nothing else is ever contacted): the
// download (progress, resume after a cut, 404, 500, short/long bodies, stalls, sha256 pins, proxies and
// NO_PROXY, redirects), the cache (reuse with the server stopped, --list, --file), the catalogue (refused and
// unknown names, mirrors) and the import (metadata naming URL, sha256 and accuracy; a bad file leaves the cache).
// Catalogue URLs in a test use the reserved `.invalid` domain and are only ever fetched through --mirror.
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { type IncomingMessage, type Server, type ServerResponse, createServer, request as httpRequest } from 'node:http';
import { type AddressInfo, type Socket, connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DownloadError, IntegrityError, type DownloadProgress, download, proxyFor } from '../src/pull/download.js';
import { bypassesProxy } from '../src/pull/download.js';
import { CATALOGUE, type CatalogueEntry, PRETRAINED_KEY, PullRequestError, cacheDir, cachedModelPath, ensurePulled, findEntry, mirroredUrl, pull } from '../src/pull/index.js';
import { metadataOf, runCli, tempDir } from './helpers.js';
import { writeFbResNetT7, writeTimmResNetV2 } from './pull-fixtures.js';

// ---------------------------------------------------------------------------------------------------------
// A local server whose every path is a handler the test writes; it records each request.

type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void;
interface Local {
  base: string;
  port: number;
  requests: { path: string; range?: string; via?: string }[];
  close: () => Promise<void>;
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

function closer(server: Server, sockets: Set<Socket>): () => Promise<void> {
  return () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
}

async function localServer(routes: Record<string, Handler>): Promise<Local> {
  const requests: Local['requests'] = [];
  const counts = new Map<string, number>();
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    requests.push({ path, range: req.headers.range, via: req.headers['x-via'] as string | undefined });
    const n = (counts.get(path) ?? 0) + 1;
    counts.set(path, n);
    const h = routes[path];
    if (!h) {
      res.writeHead(404).end('not found');
      return;
    }
    h(req, res, n);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  const port = await listen(server);
  return { base: `http://127.0.0.1:${port}`, port, requests, close: closer(server, sockets) };
}

/** A tiny forward proxy: absolute-URI requests (plain http) and CONNECT tunnels; it records what it forwarded. */
async function forwardProxy(): Promise<{ url: string; seen: string[]; close: () => Promise<void> }> {
  const seen: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    seen.push(req.url ?? '');
    const u = new URL(req.url ?? '');
    const up = httpRequest({ host: u.hostname, port: u.port, path: `${u.pathname}${u.search}`, method: req.method, headers: { ...req.headers, 'x-via': 'test-proxy' } }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
      r.on('close', () => r.complete || res.destroy()); // the origin cut the body: cut the client too
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.on('connect', (req: IncomingMessage, sock: Socket, head: Buffer) => {
    seen.push(`CONNECT ${req.url}`);
    const [host, port] = (req.url ?? '').split(':');
    const up = netConnect(Number(port), host, () => {
      sock.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      up.write(head);
      up.pipe(sock);
      sock.pipe(up);
    });
    up.on('error', () => sock.destroy());
    sock.on('error', () => up.destroy());
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  const port = await listen(server);
  return { url: `http://127.0.0.1:${port}`, seen, close: closer(server, sockets) };
}

/** A port nothing listens on. */
async function deadPort(): Promise<number> {
  const s = createServer();
  const port = await listen(s);
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Serves `body` honouring `Range: bytes=N-` (206 + Content-Range), with a strong ETag. */
function sendRange(req: IncomingMessage, res: ServerResponse, body: Buffer, o: { cutAt?: number; stallAt?: number; ignoreRange?: boolean } = {}): void {
  const m = o.ignoreRange ? null : /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  const start = m ? Number(m[1]) : 0;
  if (m && start >= body.length) {
    res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
    return;
  }
  const headers: Record<string, string | number> = { 'content-length': body.length - start, etag: '"v1"', 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' };
  if (m) headers['content-range'] = `bytes ${start}-${body.length - 1}/${body.length}`;
  res.writeHead(m ? 206 : 200, headers);
  if (o.stallAt !== undefined) {
    res.flushHeaders();
    res.write(body.subarray(start, Math.max(start, o.stallAt))); // then nothing, connection held open
    return;
  }
  if (o.cutAt !== undefined && o.cutAt > start) {
    res.write(body.subarray(start, o.cutAt), () => res.socket?.destroy());
    return;
  }
  res.end(body.subarray(start));
}

const sha = (b: Buffer | Uint8Array): string => createHash('sha256').update(b).digest('hex');
// No proxy variables of the machine running the tests: each test says which it wants.
const fast = { retryDelayMs: 5, timeoutMs: 2000, env: {} };

let dir: string;
let t7Path: string;
let timmPath: string;
let t7: Buffer;
let timm: Buffer;
const blob = randomBytes(300_000);
let n = 0;
const fresh = (name = 'f'): string => join(dir, `${name}-${++n}`);
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c()));
});

beforeAll(() => {
  dir = tempDir('resnet-onnx-pull-');
  t7Path = join(dir, 'resnet-tiny.t7');
  timmPath = join(dir, 'tiny.safetensors');
  writeFbResNetT7(t7Path);
  writeTimmResNetV2(timmPath);
  t7 = readFileSync(t7Path);
  timm = readFileSync(timmPath);
}, 60_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function server(routes: Record<string, Handler>): Promise<Local> {
  const s = await localServer(routes);
  closers.push(s.close);
  return s;
}

/** No `<file>.<pid>.tmp` anywhere under `d`. */
function tempsIn(d: string): string[] {
  if (!existsSync(d)) return [];
  return readdirSync(d, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.tmp'));
}

// ---------------------------------------------------------------------------------------------------------

describe('download(): streaming, progress, resume, failures', () => {
  it('streams to the destination with progress reports and the sha256 of the bytes', async () => {
    const s = await server({ '/f': (req, res) => sendRange(req, res, blob) });
    const dest = fresh();
    const seen: DownloadProgress[] = [];
    const d = await download(`${s.base}/f`, dest, { ...fast, onProgress: (p) => seen.push({ ...p }) });
    expect(readFileSync(dest).equals(blob)).toBe(true);
    expect(d).toMatchObject({ bytes: blob.length, sha256: sha(blob), requests: 1, resumes: 0 });
    expect(seen.length).toBeGreaterThanOrEqual(2);
    expect(seen.at(-1)).toMatchObject({ received: blob.length, total: blob.length });
    expect(seen.every((p, i) => i === 0 || p.received >= seen[i - 1].received)).toBe(true);
    expect(seen.at(-1)!.bytesPerSecond).toBeGreaterThan(0);
    expect(tempsIn(dir)).toEqual([]);
  });

  it('a connection cut mid-body is resumed with a Range request (206 + Content-Range)', async () => {
    const s = await server({ '/f': (req, res, k) => sendRange(req, res, blob, k === 1 ? { cutAt: 100_000 } : {}) });
    const dest = fresh();
    const notes: string[] = [];
    const d = await download(`${s.base}/f`, dest, { ...fast, log: (m) => notes.push(m) });
    expect(readFileSync(dest).equals(blob)).toBe(true);
    expect(d.sha256).toBe(sha(blob));
    expect(d.resumes).toBe(1);
    expect(s.requests.map((r) => r.range)).toEqual([undefined, 'bytes=100000-']);
    expect(notes.join('\n')).toMatch(/resumed at 100\.0 kB of 300\.0 kB/);
  });

  it('a server that answers the Range request with 200 (whole file) is taken from the start again', async () => {
    const s = await server({ '/f': (req, res, k) => sendRange(req, res, blob, k === 1 ? { cutAt: 50_000 } : { ignoreRange: true }) });
    const dest = fresh();
    const notes: string[] = [];
    const d = await download(`${s.base}/f`, dest, { ...fast, log: (m) => notes.push(m) });
    expect(readFileSync(dest).equals(blob)).toBe(true);
    expect(d.sha256).toBe(sha(blob));
    expect(d.resumes).toBe(0);
    expect(notes.join('\n')).toMatch(/whole file again.*starting over/);
  });

  it('redirects are followed, and a resume goes through them again', async () => {
    const s = await server({
      '/r': (_req, res) => void res.writeHead(302, { location: '/cdn/f' }).end(),
      '/cdn/f': (req, res, k) => sendRange(req, res, blob, k === 1 ? { cutAt: 1000 } : {}),
    });
    const d = await download(`${s.base}/r`, fresh(), fast);
    expect(d.finalUrl).toBe(`${s.base}/cdn/f`);
    expect(d.sha256).toBe(sha(blob));
    expect(s.requests.map((r) => r.path)).toEqual(['/r', '/cdn/f', '/r', '/cdn/f']);
  });

  it('404: fails at once (no retry), nothing left behind', async () => {
    const s = await server({});
    const dest = fresh();
    const err = await download(`${s.base}/missing`, dest, fast).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect((err as DownloadError).status).toBe(404);
    expect((err as Error).message).toContain('HTTP 404');
    expect(s.requests.length).toBe(1);
    expect(existsSync(dest)).toBe(false);
    expect(tempsIn(dir)).toEqual([]);
  });

  it('500: retried with backoff up to --retries, then fails naming the status', async () => {
    const s = await server({ '/f': (_req, res) => void res.writeHead(500).end('boom') });
    const dest = fresh();
    const notes: string[] = [];
    const err = await download(`${s.base}/f`, dest, { ...fast, retries: 3, log: (m) => notes.push(m) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect((err as Error).message).toMatch(/HTTP 500.*gave up after 4 requests; --retries 3/);
    expect(s.requests.length).toBe(4);
    expect(notes.filter((m) => /retry \d of 3/.test(m)).length).toBe(3);
    expect(existsSync(dest)).toBe(false);
  });

  it('a 500 that passes is only a delay', async () => {
    const s = await server({ '/f': (req, res, k) => (k <= 2 ? void res.writeHead(503, { 'retry-after': '0' }).end() : sendRange(req, res, blob)) });
    const d = await download(`${s.base}/f`, fresh(), fast);
    expect(d.sha256).toBe(sha(blob));
    expect(d.requests).toBe(3);
  });

  it('a body shorter than its Content-Length (every time) fails after the retries; nothing is kept', async () => {
    // The server always stops at byte 1000, also when asked to resume beyond it.
    const s = await server({
      '/f': (req, res) => {
        const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
        res.writeHead(start ? 206 : 200, { 'content-length': blob.length - start, ...(start ? { 'content-range': `bytes ${start}-${blob.length - 1}/${blob.length}` } : {}) });
        res.write(blob.subarray(start, Math.max(start, 1000)), () => res.socket?.destroy());
      },
    });
    const dest = fresh();
    const err = await download(`${s.base}/f`, dest, { ...fast, retries: 2 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect((err as Error).message).toMatch(/after 1\.0 kB of 300\.0 kB|closed after 1000 of 300000 bytes/);
    expect(s.requests.length).toBe(3); // the first (1000 bytes), then 2 resumes at byte 1000 that bring nothing
    expect(existsSync(dest)).toBe(false);
    expect(tempsIn(dir)).toEqual([]);
  });

  it('a body longer than the expected size is cut off and refused (no Content-Length: chunked)', async () => {
    const s = await server({ '/f': (_req, res) => void res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(blob) });
    const dest = fresh();
    const err = await download(`${s.base}/f`, dest, { ...fast, expectedBytes: 1000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect((err as Error).message).toMatch(/more than the 1000 bytes expected/);
    expect(s.requests.length).toBe(1);
    expect(existsSync(dest)).toBe(false);
  });

  it('a Content-Length that differs from the expected size is refused before the body is read', async () => {
    const s = await server({ '/f': (req, res) => sendRange(req, res, blob) });
    const more = await download(`${s.base}/f`, fresh(), { ...fast, expectedBytes: blob.length - 1 }).catch((e: unknown) => e);
    expect((more as Error).message).toMatch(/announces 300000 bytes, more than the 299999 bytes expected/);
    const fewer = await download(`${s.base}/f`, fresh(), { ...fast, expectedBytes: blob.length + 1 }).catch((e: unknown) => e);
    expect((fewer as Error).message).toMatch(/announces 300000 bytes, fewer than the 300001 bytes expected/);
    expect(s.requests.length).toBe(2);
  });

  it('a stalled server times out (--timeout-ms), is retried, then fails; a stall once is resumed', async () => {
    const stalls = await server({ '/f': (req, res) => sendRange(req, res, blob, { stallAt: 5000 }) });
    const started = Date.now();
    const err = await download(`${stalls.base}/f`, fresh(), { ...fast, timeoutMs: 200, retries: 1 }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/sent nothing for 200 ms \(--timeout-ms\)/);
    expect(stalls.requests.map((r) => r.range)).toEqual([undefined, 'bytes=5000-']);
    expect(Date.now() - started).toBeLessThan(5000);

    const once = await server({ '/f': (req, res, k) => sendRange(req, res, blob, k === 1 ? { stallAt: 5000 } : {}) });
    const d = await download(`${once.base}/f`, fresh(), { ...fast, timeoutMs: 200 });
    expect(d).toMatchObject({ sha256: sha(blob), resumes: 1 });
  });

  it('a server that never answers times out waiting for the headers', async () => {
    const s = await server({ '/f': () => {} });
    const err = await download(`${s.base}/f`, fresh(), { ...fast, timeoutMs: 200, retries: 0 }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/no response within 200 ms/);
  });

  it('a sha256 pin that does not match deletes the file and names both hashes', async () => {
    const s = await server({ '/f': (req, res) => sendRange(req, res, blob) });
    const dest = fresh();
    const wrong = 'ab'.repeat(32);
    const err = await download(`${s.base}/f`, dest, { ...fast, sha256: wrong }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IntegrityError);
    expect((err as Error).message).toContain(`expected ${wrong}`);
    expect((err as Error).message).toContain(`got ${sha(blob)}`);
    expect(existsSync(dest)).toBe(false);
    expect(tempsIn(dir)).toEqual([]);
    const ok = await download(`${s.base}/f`, dest, { ...fast, sha256: sha(blob).toUpperCase() });
    expect(ok.sha256).toBe(sha(blob));
  });
});

describe('proxies: HTTP_PROXY / HTTPS_PROXY / NO_PROXY', () => {
  it('NO_PROXY covering 127.0.0.1 goes direct although HTTP_PROXY points at a dead port', async () => {
    const s = await server({ '/f': (req, res) => sendRange(req, res, blob) });
    const dead = `http://127.0.0.1:${await deadPort()}`;
    const d = await download(`${s.base}/f`, fresh(), { ...fast, retries: 0, env: { HTTP_PROXY: dead, NO_PROXY: 'localhost,127.0.0.1' } });
    expect(d.sha256).toBe(sha(blob));
    expect(d.proxy).toBeUndefined();
    // Without NO_PROXY the dead proxy is used, and fails: HTTP_PROXY is honoured.
    const err = await download(`${s.base}/f`, fresh(), { ...fast, retries: 0, env: { HTTP_PROXY: dead } }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/refused|ECONNREFUSED/);
  });

  it('a proxy not bypassed by NO_PROXY carries the request (and the resume after a cut)', async () => {
    const s = await server({ '/f': (req, res, k) => sendRange(req, res, blob, k === 1 ? { cutAt: 70_000 } : {}) });
    const p = await forwardProxy();
    closers.push(p.close);
    const notes: string[] = [];
    const d = await download(`${s.base}/f`, fresh(), { ...fast, env: { http_proxy: p.url, NO_PROXY: 'weights.invalid' }, log: (m) => notes.push(m) });
    expect(d.sha256).toBe(sha(blob));
    expect(d.proxy).toBe(p.url);
    expect(p.seen).toEqual([`${s.base}/f`, `${s.base}/f`]);
    expect(s.requests.map((r) => [r.via, r.range])).toEqual([
      ['test-proxy', undefined],
      ['test-proxy', 'bytes=70000-'],
    ]);
    expect(notes.join('\n')).toMatch(/through proxy 127\.0\.0\.1:\d+ \(HTTP_PROXY\)/);
  });

  it('which variable applies: https uses HTTPS_PROXY, lower case wins, NO_PROXY forms', () => {
    const env = { HTTPS_PROXY: 'sp:3128', HTTP_PROXY: 'http://UP:1', http_proxy: 'http://low:2' };
    expect(proxyFor('https://huggingface.co/x', env)).toBe('http://sp:3128');
    expect(proxyFor('http://mirror.lan/x', env)).toBe('http://low:2');
    expect(proxyFor('https://huggingface.co/x', { HTTP_PROXY: 'http://p:1' })).toBeUndefined();
    const u = (s: string): URL => new URL(s);
    expect(bypassesProxy(u('https://cdn.huggingface.co/x'), 'example.com, .huggingface.co')).toBe(true);
    expect(bypassesProxy(u('https://huggingface.co/x'), '*.huggingface.co')).toBe(true);
    expect(bypassesProxy(u('https://nothuggingface.co/x'), 'huggingface.co')).toBe(false);
    expect(bypassesProxy(u('http://127.0.0.1:8080/x'), '127.0.0.1:9090')).toBe(false);
    expect(bypassesProxy(u('http://127.0.0.1:8080/x'), '127.0.0.1:8080')).toBe(true);
    expect(bypassesProxy(u('http://[::1]:8080/x'), '::1')).toBe(true);
    expect(bypassesProxy(u('http://anything/x'), '*')).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------------------
// The catalogue, and the command end to end

const TEST_CATALOGUE: CatalogueEntry[] = [
  {
    name: 'test/fb-tiny',
    aliases: ['fb-tiny'],
    title: 'a released-ResNet-200-layout pre-act net, one bottleneck unit per stage',
    url: 'https://weights.invalid/fb/resnet-tiny.t7',
    format: 't7',
    licence: 'test',
    preprocessing: 'as resnet200',
    reported: [{ top1: 78.34, top5: 94.21, resolution: 224, crop: 0.875, by: 'test' }],
  },
  {
    name: 'test/timm-tiny',
    aliases: [],
    title: 'a timm ResNetV2 state dict, one basic block per stage',
    url: 'https://hub.invalid/timm/timm-tiny/resolve/main/model.safetensors',
    format: 'timm-safetensors',
    licence: 'test',
    preprocessing: 'timm',
    reported: [{ top1: 73.57, resolution: 224, crop: 0.9, by: 'test' }],
  },
  {
    name: 'test/sized',
    aliases: [],
    title: 'an entry whose size is known (and wrong for what the server has)',
    url: 'https://weights.invalid/sized/resnet-tiny.t7',
    format: 't7',
    bytes: 1234,
    licence: 'test',
    preprocessing: '',
    reported: [],
  },
  {
    name: 'test/broken',
    aliases: [],
    title: 'an entry whose file is not a model',
    url: 'https://weights.invalid/broken/resnet-broken.t7',
    format: 't7',
    licence: 'test',
    preprocessing: '',
    reported: [],
  },
];

describe('pull: catalogue names', () => {
  it('fb.resnet.torch 18..152 are refused as not pre-activation (exit 2), pointing to a pre-act network', async () => {
    for (const name of ['fb/resnet-50', 'resnet50', 'fb/resnet-18', 'resnet-152', 'resnet101']) {
      const r = await runCli('pull', name, '--cache-dir', fresh('cache'));
      expect(r.code, name).toBe(2);
      expect(r.err).toMatch(/not a pre-activation network; of that release only ResNet-200 is pre-activation/);
    }
    const r = await runCli('pull', 'fb/resnet-50', '--cache-dir', fresh('cache'));
    expect(r.err).toContain('timm/resnetv2_50.a1h_in1k');
  });

  it('an unknown name lists the catalogue (exit 2)', async () => {
    const r = await runCli('pull', 'resnet9000', '--cache-dir', fresh('cache'));
    expect(r.code).toBe(2);
    expect(r.err).toContain("unknown model 'resnet9000'");
    for (const e of CATALOGUE) expect(r.err).toContain(e.name);
  });

  it('aliases and timm names with or without timm/ find the entry', () => {
    expect(findEntry('fb/resnet-200').name).toBe('resnet200');
    expect(findEntry('RESNET200').name).toBe('resnet200');
    expect(findEntry('resnetv2_50.a1h_in1k').name).toBe('timm/resnetv2_50.a1h_in1k');
    expect(findEntry('timm/resnetv2_101.a1h_in1k').name).toBe('timm/resnetv2_101.a1h_in1k');
    expect(findEntry('timm/resnetv2_18').name).toBe('timm/resnetv2_18.ra4_e3600_r224_in1k');
    expect(() => findEntry('resnet34')).toThrow(PullRequestError);
  });

  it('the mirror replaces scheme and host and keeps the path', () => {
    const r200 = findEntry('resnet200');
    const r50 = findEntry('resnetv2_50');
    expect(mirroredUrl(r200.url, 'http://mirror.lan:8080')).toBe('http://mirror.lan:8080/resnet-200.t7');
    expect(mirroredUrl(r50.url, 'https://m.lan/weights/')).toBe('https://m.lan/weights/timm/resnetv2_50.a1h_in1k/resolve/main/model.safetensors');
    expect(() => mirroredUrl(r200.url, 'mirror.lan')).toThrow(/not a URL/);
  });

  it('the cache folder: --cache-dir, else RESNET_ONNX_CACHE, else XDG_CACHE_HOME/resnet-onnx, else ~/.cache/resnet-onnx', () => {
    expect(cacheDir({ cacheDir: '/c', env: { RESNET_ONNX_CACHE: '/r' } })).toBe('/c');
    expect(cacheDir({ env: { RESNET_ONNX_CACHE: '/r', XDG_CACHE_HOME: '/x' } })).toBe('/r');
    expect(cacheDir({ env: { XDG_CACHE_HOME: '/x' } })).toBe('/x/resnet-onnx');
    expect(cacheDir({ env: {} })).toMatch(/\.cache\/resnet-onnx$/);
  });

  it('the real catalogue: five pre-activation entries with their sources, and no invented hash', () => {
    expect(CATALOGUE.map((e) => e.name)).toEqual(['resnet200', 'timm/resnetv2_50.a1h_in1k', 'timm/resnetv2_101.a1h_in1k', 'timm/resnetv2_18.ra4_e3600_r224_in1k', 'timm/resnetv2_34.ra4_e3600_r224_in1k']);
    expect(findEntry('resnet200').url).toBe('https://d2j0dndfm35trm.cloudfront.net/resnet-200.t7');
    for (const e of CATALOGUE.slice(1)) expect(e.url).toBe(`https://huggingface.co/${e.name}/resolve/main/model.safetensors`);
    expect(JSON.stringify(CATALOGUE)).not.toMatch(/sha256|[0-9a-f]{64}/);
  });
});

describe('pull: the command', () => {
  let catalogueFile: string;
  const saved: Record<string, string | undefined> = {};
  const setEnv = (vars: Record<string, string | undefined>): void => {
    for (const [k, v] of Object.entries(vars)) {
      if (!(k in saved)) saved[k] = process.env[k];
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  beforeAll(() => {
    catalogueFile = join(dir, 'catalogue.json');
    writeFileSync(catalogueFile, JSON.stringify(TEST_CATALOGUE));
  });
  beforeEach(() => setEnv({ http_proxy: undefined, HTTP_PROXY: undefined, https_proxy: undefined, HTTPS_PROXY: undefined, RESNET_ONNX_MIRROR: undefined, HF_ENDPOINT: undefined }));
  afterEach(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
      delete saved[k];
    }
  });
  const weightsServer = (): Promise<Local> =>
    server({
      '/fb/resnet-tiny.t7': (req, res) => sendRange(req, res, t7),
      '/timm/timm-tiny/resolve/main/model.safetensors': (req, res) => sendRange(req, res, timm),
      '/sized/resnet-tiny.t7': (req, res) => sendRange(req, res, t7),
      '/broken/resnet-broken.t7': (req, res) => sendRange(req, res, blob),
      '/resnet-200.t7': (req, res) => sendRange(req, res, t7),
    });

  it('downloads through --mirror, imports, and the model metadata names URL, sha256 and reported accuracy; quiet off a TTY', async () => {
    setEnv({ RESNET_ONNX_CATALOGUE: catalogueFile });
    const s = await weightsServer();
    const cache = fresh('cache');
    const out = `${fresh('m')}.onnx`;
    const r = await runCli('pull', 'fb-tiny', '--mirror', s.base, '--cache-dir', cache, '-o', out);
    expect(r.code, r.err).toBe(0);
    expect(s.requests.map((q) => q.path)).toEqual(['/fb/resnet-tiny.t7']);
    const cached = join(cache, 'test', 'fb-tiny', 'resnet-tiny.t7');
    expect(readFileSync(cached).equals(t7)).toBe(true);
    const record = JSON.parse(readFileSync(`${cached}.json`, 'utf8'));
    expect(record).toMatchObject({ name: 'test/fb-tiny', url: TEST_CATALOGUE[0].url, fetchedFrom: `${s.base}/fb/resnet-tiny.t7`, bytes: t7.length, sha256: sha(t7) });
    const md = metadataOf(out);
    expect(md.weights).toContain(`pulled: test/fb-tiny from ${TEST_CATALOGUE[0].url} (sha256 ${sha(t7)})`);
    expect(md.weights).toContain('top-1 78.34% / top-5 94.21% at 224 (crop 0.875)');
    expect(md.weights).not.toMatch(/^random-init/);
    expect(JSON.parse(md[PRETRAINED_KEY])).toMatchObject({ name: 'test/fb-tiny', url: TEST_CATALOGUE[0].url, sha256: sha(t7), bytes: t7.length, reported: TEST_CATALOGUE[0].reported });
    expect(md.source).toContain(`pulled from ${s.base}/fb/resnet-tiny.t7`);
    expect(r.out).toContain(`wrote ${out}`);
    expect(r.out).toContain(`next: npx resnet-onnx serve --model ${out}`);
    // Not a terminal: no bar (no ETA, no bar characters); notes only.
    expect(r.err).not.toMatch(/ETA|\u2588/);
    expect(r.err).toContain('downloading');
    expect(tempsIn(cache)).toEqual([]);
  });

  it('on a terminal a bar shows bytes, rate and ETA on stderr; -q shows nothing', async () => {
    setEnv({ RESNET_ONNX_CATALOGUE: catalogueFile });
    const s = await weightsServer();
    const tty = Object.getOwnPropertyDescriptor(process.stderr, 'isTTY');
    Object.defineProperty(process.stderr, 'isTTY', { value: true, configurable: true });
    let r;
    try {
      r = await runCli('pull', 'test/timm-tiny', '--mirror', s.base, '--cache-dir', fresh('cache'), '-o', `${fresh('m')}.onnx`);
    } finally {
      if (tty) Object.defineProperty(process.stderr, 'isTTY', tty);
      else delete (process.stderr as { isTTY?: boolean }).isTTY;
    }
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/downloading .*\d+% \| [\d.]+ (kB|MB) \/ 19\.7 MB \| [\d.]+ (bytes|kB|MB|GB)\/s \| ETA/);
    const q = await runCli('pull', 'test/timm-tiny', '-q', '--mirror', s.base, '--cache-dir', fresh('cache'), '-o', `${fresh('m')}.onnx`);
    expect(q.code, q.err).toBe(0);
    expect(q.err).toBe('');
  });

  it('a second pull of a cached name needs no network (server stopped); --list shows it cached', async () => {
    setEnv({ RESNET_ONNX_CATALOGUE: catalogueFile });
    const s = await weightsServer();
    const cache = fresh('cache');
    const first = await runCli('pull', 'test/timm-tiny', '--mirror', s.base, '--cache-dir', cache, '-o', `${fresh('m')}.onnx`);
    expect(first.code, first.err).toBe(0);
    await s.close();
    const out = `${fresh('m')}.onnx`;
    const again = await runCli('pull', 'test/timm-tiny', '--mirror', s.base, '--cache-dir', cache, '-o', out, '--timeout-ms', '500', '--retries', '0');
    expect(again.code, again.err).toBe(0);
    expect(again.out).toContain('from the cache');
    expect(metadataOf(out).weights).toContain(`sha256 ${sha(timm)}`);
    // The library answers without network too: the recorded model, and ensurePulled returning it.
    const o = { catalogue: TEST_CATALOGUE, cacheDir: cache, output: out };
    expect(cachedModelPath('test/timm-tiny', o)).toBe(out);
    expect(await ensurePulled('test/timm-tiny', { ...o, offline: true })).toBe(out);
    expect(cachedModelPath('test/fb-tiny', o)).toBeUndefined();

    const list = await runCli('pull', '--list', '--json', '--cache-dir', cache);
    expect(list.code, list.err).toBe(0);
    const parsed = JSON.parse(list.out) as { cacheDir: string; catalogue: { name: string; cached?: { sha256: string; bytes: number }; bytes?: number; reported: unknown[] }[] };
    expect(parsed.cacheDir).toBe(cache);
    const byName = Object.fromEntries(parsed.catalogue.map((m) => [m.name, m]));
    expect(byName['test/timm-tiny'].cached).toMatchObject({ sha256: sha(timm), bytes: timm.length });
    expect(byName['test/fb-tiny'].cached).toBeUndefined();
    expect(byName.resnet200.reported).toEqual(findEntry('resnet200').reported); // the built-in entries stay
    const text = await runCli('pull', '--list', '--cache-dir', cache);
    expect(text.out).toMatch(/test\/timm-tiny\s+timm-safetensors\s+19\.7 MB\s+yes\s+73\.57 at 224 \(0\.9\)/);
    expect(text.out).toMatch(/resnet200\s+t7\s+~259 MB\s+no\s+78\.34 \/ 94\.21 at 224 \(0\.875\); 79\.9 \/ 95\.2 at 320 \(1\)/);
  });

  it('--file takes a local file through the same checks and import; a wrong --sha256 deletes the cached copy only', async () => {
    setEnv({ RESNET_ONNX_CATALOGUE: catalogueFile });
    const cache = fresh('cache');
    const out = `${fresh('m')}.onnx`;
    const bad = await runCli('pull', 'test/timm-tiny', '--file', timmPath, '--sha256', '0'.repeat(64), '--cache-dir', cache, '-o', out);
    expect(bad.code).toBe(1);
    expect(bad.err).toContain(`expected ${'0'.repeat(64)} (--sha256), got ${sha(timm)}`);
    expect(existsSync(timmPath)).toBe(true);
    expect(existsSync(join(cache, 'test', 'timm-tiny', 'model.safetensors'))).toBe(false);
    expect(existsSync(out)).toBe(false);
    const ok = await runCli('pull', 'test/timm-tiny', '--file', timmPath, '--sha256', sha(timm), '--cache-dir', cache, '-o', out);
    expect(ok.code, ok.err).toBe(0);
    expect(JSON.parse(metadataOf(out)[PRETRAINED_KEY])).toMatchObject({ sha256: sha(timm), fetchedFrom: `file:${timmPath}` });
    const sized = await runCli('pull', 'test/sized', '--file', t7Path, '--cache-dir', cache, '-o', `${fresh('m')}.onnx`);
    expect(sized.code).toBe(2);
    expect(sized.err).toMatch(/has \d+ bytes; the catalogue's test\/sized has 1234: not the published file/);
  });

  it('a downloaded sha256 mismatch: exit 1, both hashes, the file deleted and no model written', async () => {
    setEnv({ RESNET_ONNX_CATALOGUE: catalogueFile });
    const s = await weightsServer();
    const cache = fresh('cache');
    const out = `${fresh('m')}.onnx`;
    const r = await runCli('pull', 'test/fb-tiny', '--mirror', s.base, '--cache-dir', cache, '-o', out, '--sha256', 'f'.repeat(64));
    expect(r.code).toBe(1);
    expect(r.err).toContain(`expected ${'f'.repeat(64)} (--sha256), got ${sha(t7)}; the download has been deleted`);
    expect(existsSync(join(cache, 'test', 'fb-tiny', 'resnet-tiny.t7'))).toBe(false);
    expect(tempsIn(cache)).toEqual([]);
    expect(existsSync(out)).toBe(false);
  });

  it('a catalogue size that the server contradicts: exit 1, nothing cached', async () => {
    setEnv({ RESNET_ONNX_CATALOGUE: catalogueFile });
    const s = await weightsServer();
    const cache = fresh('cache');
    const r = await runCli('pull', 'test/sized', '--mirror', s.base, '--cache-dir', cache, '-o', `${fresh('m')}.onnx`);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/announces \d+ bytes, more than the 1234 bytes expected/);
    expect(tempsIn(cache)).toEqual([]);
    expect(existsSync(join(cache, 'test', 'sized', 'resnet-tiny.t7'))).toBe(false);
  });

  it('a file that fails to import is removed from the cache with the importer\'s message (exit 1)', async () => {
    setEnv({ RESNET_ONNX_CATALOGUE: catalogueFile });
    const s = await weightsServer();
    const cache = fresh('cache');
    const r = await runCli('pull', 'test/broken', '--mirror', s.base, '--cache-dir', cache, '-o', `${fresh('m')}.onnx`);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/resnet-broken\.t7 \(from http:\/\/127\.0\.0\.1:\d+\/broken\/resnet-broken\.t7\) could not be imported: .*not a format resnet-onnx imports.*removed from the cache/);
    expect(existsSync(join(cache, 'test', 'broken', 'resnet-broken.t7'))).toBe(false);
    expect(existsSync(join(cache, 'test', 'broken', 'resnet-broken.t7.json'))).toBe(false);
  });

  it('the real catalogue through RESNET_ONNX_MIRROR (or HF_ENDPOINT): BASE/<path>; a file that is not the named network is removed', async () => {
    const s = await weightsServer();
    setEnv({ RESNET_ONNX_MIRROR: s.base, RESNET_ONNX_CATALOGUE: undefined, HF_ENDPOINT: undefined });
    const cache = fresh('cache');
    const r = await runCli('pull', 'fb/resnet-200', '--cache-dir', cache, '-o', `${fresh('m')}.onnx`);
    expect(s.requests.map((q) => q.path)).toEqual(['/resnet-200.t7']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/holds a custom 1-1-1-1 network, but the catalogue's resnet200 has depth 200; it was removed from the cache/);
    expect(existsSync(join(cache, 'resnet200', 'resnet-200.t7'))).toBe(false);
    const timmName = await runCli('pull', 'resnetv2_50', '--cache-dir', cache, '-o', `${fresh('m')}.onnx`, '--retries', '0');
    expect(timmName.code).toBe(1);
    expect(s.requests.at(-1)!.path).toBe('/timm/resnetv2_50.a1h_in1k/resolve/main/model.safetensors');
    expect(timmName.err).toContain('HTTP 404');
    // HF_ENDPOINT (the hub's mirror variable) applies to the Hugging Face entries when no mirror is given.
    setEnv({ RESNET_ONNX_MIRROR: undefined, HF_ENDPOINT: `${s.base}/hf` });
    const hf = await runCli('pull', 'timm/resnetv2_34', '--cache-dir', cache, '-o', `${fresh('m')}.onnx`, '--retries', '0');
    expect(hf.code).toBe(1);
    expect(s.requests.at(-1)!.path).toBe('/hf/timm/resnetv2_34.ra4_e3600_r224_in1k/resolve/main/model.safetensors');
  });

  it('NO_PROXY covering 127.0.0.1 with HTTP_PROXY at a dead port: the command still downloads', async () => {
    const s = await weightsServer();
    setEnv({ RESNET_ONNX_CATALOGUE: catalogueFile, HTTP_PROXY: `http://127.0.0.1:${await deadPort()}`, http_proxy: undefined, NO_PROXY: '127.0.0.1', no_proxy: undefined });
    const r = await runCli('pull', 'test/fb-tiny', '--mirror', s.base, '--cache-dir', fresh('cache'), '-o', `${fresh('m')}.onnx`, '--retries', '0');
    expect(r.code, r.err).toBe(0);
    expect(r.err).not.toContain('proxy');
  });

  it('an existing output is refused before any download (exit 2); --force replaces it', async () => {
    setEnv({ RESNET_ONNX_CATALOGUE: catalogueFile });
    const s = await weightsServer();
    const out = `${fresh('m')}.onnx`;
    writeFileSync(out, 'mine');
    const cache = fresh('cache');
    const r = await runCli('pull', 'test/fb-tiny', '--mirror', s.base, '--cache-dir', cache, '-o', out);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/already exists.*--force/);
    expect(s.requests).toEqual([]);
    expect(readFileSync(out, 'utf8')).toBe('mine');
    const f = await runCli('pull', 'test/fb-tiny', '--mirror', s.base, '--cache-dir', cache, '-o', out, '--force', '--json');
    expect(f.code, f.err).toBe(0);
    expect(JSON.parse(f.out)).toMatchObject({ name: 'test/fb-tiny', model: out, sha256: sha(t7), obtained: 'downloaded' });
  });

  it('a 404 from the mirror exits 1 with the URL; bad --sha256 and --mirror values exit 2', async () => {
    setEnv({ RESNET_ONNX_CATALOGUE: catalogueFile });
    const s = await server({});
    const r = await runCli('pull', 'test/fb-tiny', '--mirror', s.base, '--cache-dir', fresh('cache'), '-o', `${fresh('m')}.onnx`);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${s.base}/fb/resnet-tiny.t7: HTTP 404`);
    const sha = await runCli('pull', 'test/fb-tiny', '--sha256', 'xyz', '--cache-dir', fresh('cache'), '-o', `${fresh('m')}.onnx`);
    expect([sha.code, sha.err]).toEqual([2, expect.stringContaining('--sha256 must be 64 hexadecimal digits')]);
    const mirror = await runCli('pull', 'test/fb-tiny', '--mirror', 'ftp://x', '--cache-dir', fresh('cache'), '-o', `${fresh('m')}.onnx`);
    expect([mirror.code, mirror.err]).toEqual([2, expect.stringContaining('must be an http:// or https:// URL')]);
  });

  it('pull() as a library reports progress through a callback and returns what it did', async () => {
    const s = await weightsServer();
    const seen: DownloadProgress[] = [];
    const r = await pull('test/timm-tiny', { catalogue: TEST_CATALOGUE, mirror: s.base, cacheDir: fresh('cache'), output: `${fresh('m')}.onnx`, download: { onProgress: (p) => seen.push(p) } });
    expect(r).toMatchObject({ obtained: 'downloaded', bytes: timm.length, sha256: sha(timm) });
    expect(seen.at(-1)).toMatchObject({ received: timm.length, total: timm.length });
    expect(r.network).toMatch(/pre-act ResNet-\d+ \(ImageNet, 10 classes, timm layout\)/);
    await expect(pull('resnet-34', { catalogue: TEST_CATALOGUE })).rejects.toThrow(PullRequestError);
  });
});

// ---------------------------------------------------------------------------------------------------------
// `serve --pretrained NAME` (issue 10, section 2): pulled through the same code, then served; and the default
// model's hint when it is random-init is covered in serve-ops.test.ts.

describe('serve --pretrained', () => {
  it('pulls a catalogue model into the cache, serves it as trained, and a second start needs no network', { timeout: 180_000 }, async () => {
    const catalogueFile = join(dir, 'serve-catalogue.json');
    writeFileSync(catalogueFile, JSON.stringify(TEST_CATALOGUE));
    const s = await server({ '/fb/resnet-tiny.t7': (req, res) => sendRange(req, res, t7) });
    const cache = fresh('serve-cache');
    // The pulled model goes where `pull` puts it by default: the package's models/ (removed afterwards).
    const model = join('models', 'test-fb-tiny.onnx');
    rmSync(model, { force: true });
    const env = { ...process.env, RESNET_ONNX_CATALOGUE: catalogueFile, RESNET_ONNX_CACHE: cache, RESNET_ONNX_MIRROR: s.base, HTTP_PROXY: '', HTTPS_PROXY: '', http_proxy: '', https_proxy: '' };
    const start = async (): Promise<{ url: string; log: string; stop: () => Promise<number | null> }> => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/bin.ts', 'serve', '--pretrained', 'fb-tiny', '--port', '0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let log = '';
      child.stdout.on('data', (d: Buffer) => void (log += d.toString()));
      child.stderr.on('data', (d: Buffer) => void (log += d.toString()));
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      const deadline = Date.now() + 120_000;
      while (!/"msg":"ready"/.test(log)) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`serve did not get ready:\n${log}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const url = /"url":"([^"]+)"/.exec(log)?.[1] ?? '';
      return { url, log, stop: () => (child.kill('SIGTERM'), exited) };
    };
    try {
      const first = await start();
      const meta = (await (await fetch(`${first.url}/v2/models/test-fb-tiny`)).json()) as { parameters: { weights: string; trained: boolean; warning?: string } };
      expect(meta.parameters.trained).toBe(true);
      expect(meta.parameters.weights).toContain('pulled: test/fb-tiny');
      expect(meta.parameters.warning).toBeUndefined();
      expect(await first.stop()).toBe(0);
      expect(s.requests.map((q) => q.path)).toEqual(['/fb/resnet-tiny.t7']);
      // Second start: the model is recorded in the cache; the server is not asked again.
      await s.close();
      const second = await start();
      expect(second.log).toContain('test-fb-tiny');
      expect(await second.stop()).toBe(0);
    } finally {
      rmSync(model, { force: true });
    }
  });

  it('npm start (serve, no --model) serves the pulled resnet200 from the cache without network, else random-init', { timeout: 180_000 }, async (ctx) => {
    const model = join('models', 'resnet200.onnx');
    // Never touch a real pulled model of the person running the tests.
    if (existsSync(model)) ctx.skip();
    // `resnet200` replaced by the tiny .t7 (no depth check), its file put in a fresh cache by `pull --file`.
    const catalogueFile = join(dir, 'start-catalogue.json');
    writeFileSync(catalogueFile, JSON.stringify([{ ...TEST_CATALOGUE[0], name: 'resnet200', aliases: [] }]));
    const cache = fresh('start-cache');
    const env = { ...process.env, RESNET_ONNX_CATALOGUE: catalogueFile, RESNET_ONNX_CACHE: cache, RESNET_ONNX_MIRROR: 'http://127.0.0.1:9', HTTP_PROXY: '', HTTPS_PROXY: '' };
    const pulled = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/bin.ts', 'pull', 'resnet200', '--file', t7Path, '-o', `${fresh('elsewhere')}.onnx`, '-q'], { env, encoding: 'utf8' });
    expect(pulled.status, pulled.stderr).toBe(0);
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/bin.ts', 'serve', '--port', '0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout.on('data', (d: Buffer) => void (log += d.toString()));
    child.stderr.on('data', (d: Buffer) => void (log += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      const deadline = Date.now() + 120_000;
      while (!/"msg":"ready"/.test(log)) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`serve did not get ready:\n${log}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(log).toContain('serving resnet200');
      expect(log).not.toContain('RANDOM WEIGHTS');
      expect(metadataOf(model).weights).toContain('pulled: resnet200');
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
      rmSync(model, { force: true });
    }
  });

  it('--model and --pretrained conflict; an unknown name is a bad request', async () => {
    expect((await runCli('serve', '--model', 'x.onnx', '--pretrained', 'resnet200')).code).toBe(2);
    const r = await runCli('serve', '--pretrained', 'resnet9000', '--port', '0');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/resnet200/);
  });
});
