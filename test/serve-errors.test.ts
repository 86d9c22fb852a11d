// Bad input to the server: each gets its JSON error with the right status, never a 500, and the server stays
// healthy (answers /healthz and classifies a good image) after every one.
import { join } from 'node:path';
import { request } from 'node:http';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportInference } from '../src/export/inference.js';
import { resolveConfig } from '../src/models/config.js';
import { type RunningServer, startServer } from '../src/serve/server.js';
import { SKIMAGE_DATA } from './fixtures/images/make.js';
import { tempDir } from './helpers.js';

const dir = tempDir('resnet-onnx-serve-err-');
const model = join(dir, 'tiny.onnx');
const MAX_BODY = 2 * 1024 * 1024;
let server: RunningServer;
let jpeg: Buffer;

beforeAll(async () => {
  exportInference(resolveConfig({ dataset: 'imagenet', stages: [1, 1, 1, 1], unit: 'basic' }), { output: model });
  jpeg = await sharp(join(SKIMAGE_DATA, 'coffee.png')).jpeg().toBuffer();
  server = await startServer({ model, port: 0, logLevel: 'silent', maxBodyBytes: MAX_BODY, maxPixels: 20_000_000 });
  await server.ready;
});

afterAll(async () => {
  await server?.close();
});

async function post(body: Buffer | string | FormData | undefined, type: string | undefined, query = ''): Promise<{ status: number; body: { error: { code: string; message: string } } }> {
  const headers: Record<string, string> = {};
  if (type) headers['Content-Type'] = type;
  const res = await fetch(`${server.url}/classify${query}`, { method: 'POST', headers, body: typeof body === 'object' && !(body instanceof FormData) ? new Uint8Array(body) : body });
  const text = await res.text();
  let json: { error: { code: string; message: string } };
  try {
    json = JSON.parse(text) as typeof json;
  } catch {
    throw new Error(`status ${res.status}: body is not JSON: ${text.slice(0, 200)}`);
  }
  return { status: res.status, body: json };
}

async function stillHealthy(): Promise<void> {
  expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  const ok = await post(jpeg, 'image/jpeg');
  expect(ok.status, 'a good image after the bad one').toBe(200);
}

/** A PNG whose header declares width x height but whose data is a few bytes: a decompression bomb's header. */
function declaredPng(width: number, height: number): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (b: Buffer): number => {
    let c = 0xffffffff;
    for (const x of b) c = crcTable[(c ^ x) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer): Buffer => {
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', Buffer.from([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])), chunk('IEND', Buffer.alloc(0))]);
}

describe('bad input: status, code, and a healthy server afterwards', () => {
  const cases: [string, () => Promise<{ status: number; body: { error: { code: string; message: string } } }>, number, string][] = [
    ['empty body (image/jpeg)', () => post(Buffer.alloc(0), 'image/jpeg'), 400, 'empty_body'],
    ['empty body, no Content-Type', () => post(undefined, undefined), 400, 'empty_body'],
    ['text as text/plain', () => post('hello, world', 'text/plain'), 415, 'unsupported_media_type'],
    ['text labelled image/png', () => post('hello, world', 'image/png'), 400, 'undecodable_image'],
    ['truncated JPEG', () => post(jpeg.subarray(0, jpeg.length >> 1), 'image/jpeg'), 400, 'undecodable_image'],
    ['random bytes labelled image/jpeg', () => post(Buffer.from(Array.from({ length: 50_000 }, (_, i) => (i * 2654435761) >>> 24)), 'image/jpeg'), 400, 'undecodable_image'],
    ['JPEG header only', () => post(jpeg.subarray(0, 200), 'image/jpeg'), 400, 'undecodable_image'],
    ['SVG as image/svg+xml', () => post('<svg xmlns="http://www.w3.org/2000/svg" width="400" height="400"><rect width="400" height="400" fill="red"/></svg>', 'image/svg+xml'), 415, 'unsupported_media_type'],
    ['SVG labelled image/png (detected, not trusted)', () => post('<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="400" height="400"><rect width="400" height="400"/></svg>', 'image/png'), 415, 'unsupported_media_type'],
    ['PDF labelled image/jpeg', () => post('%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n', 'image/jpeg'), 415, 'unsupported_media_type'],
    ['HTML as text/html', () => post('<html><body>hi</body></html>', 'text/html'), 415, 'unsupported_media_type'],
    ['text as application/octet-stream (no image in the bytes)', () => post('just some text, no image', 'application/octet-stream'), 415, 'unsupported_media_type'],
    ['a form as application/x-www-form-urlencoded', () => post('a=1&b=2', 'application/x-www-form-urlencoded'), 415, 'unsupported_media_type'],
    ['random bytes without a Content-Type', () => post(Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 2654435761) >>> 24)), undefined), 415, 'unsupported_media_type'],
    ['SVG as application/octet-stream (detected from the bytes)', () => post('<svg xmlns="http://www.w3.org/2000/svg" width="400" height="400"/>', 'application/octet-stream'), 415, 'unsupported_media_type'],
    ['truncated JPEG as application/octet-stream', () => post(jpeg.subarray(0, jpeg.length >> 1), 'application/octet-stream'), 400, 'undecodable_image'],
    ['a decompression bomb header: 60000x60000 PNG in 60 bytes', () => post(declaredPng(60000, 60000), 'image/png'), 413, 'image_too_large'],
    ['a real decompression bomb: 10000x10000 PNG of ~300 KB', async () => post(await sharp({ create: { width: 10000, height: 10000, channels: 3, background: '#000' } }).png({ compressionLevel: 9 }).toBuffer(), 'image/png'), 413, 'image_too_large'],
    ['body over the limit', () => post(Buffer.alloc(MAX_BODY + 1000, 7), 'image/jpeg'), 413, 'body_too_large'],
    ['multipart file over the limit', () => { const f = new FormData(); f.append('image', new Blob([new Uint8Array(MAX_BODY + 1000).fill(7)], { type: 'image/jpeg' }), 'x.jpg'); return post(f, undefined); }, 413, 'body_too_large'],
    ['multipart with the wrong field', () => { const f = new FormData(); f.append('file', new Blob([new Uint8Array(jpeg)], { type: 'image/jpeg' }), 'x.jpg'); return post(f, undefined); }, 400, 'invalid_multipart'],
    ['multipart with no file', () => { const f = new FormData(); f.append('image', 'not a file'); return post(f, undefined); }, 400, 'invalid_multipart'],
    ['multipart with two image files', () => { const f = new FormData(); f.append('image', new Blob([new Uint8Array(jpeg)]), 'a.jpg'); f.append('image', new Blob([new Uint8Array(jpeg)]), 'b.jpg'); return post(f, undefined); }, 400, 'invalid_multipart'],
    ['malformed multipart', () => post('--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\nabc', 'multipart/form-data; boundary=xyz'), 400, 'invalid_multipart'],
    ['multipart without a boundary', () => post('abc', 'multipart/form-data'), 400, 'invalid_multipart'],
    ['topk=0', () => post(jpeg, 'image/jpeg', '?topk=0'), 400, 'invalid_topk'],
    ['topk=100000', () => post(jpeg, 'image/jpeg', '?topk=100000'), 400, 'invalid_topk'],
    ['topk=abc', () => post(jpeg, 'image/jpeg', '?topk=abc'), 400, 'invalid_topk'],
    ['topk=-3', () => post(jpeg, 'image/jpeg', '?topk=-3'), 400, 'invalid_topk'],
    ['topk=2.5', () => post(jpeg, 'image/jpeg', '?topk=2.5'), 400, 'invalid_topk'],
    ['topk given twice', () => post(jpeg, 'image/jpeg', '?topk=1&topk=2'), 400, 'invalid_topk'],
    ['an 8x8 image (too small to mean anything)', async () => post(await sharp({ create: { width: 8, height: 8, channels: 3, background: '#888' } }).png().toBuffer(), 'image/png'), 422, 'image_too_small'],
  ];

  it.each(cases)('%s', async (_name, send, status, code) => {
    const r = await send();
    expect(r.status).toBe(status);
    expect(r.body.error.code).toBe(code);
    expect(r.body.error.message.length).toBeGreaterThan(10);
    await stillHealthy();
  });

  it('the format is read from the bytes whatever the Content-Type: octet-stream, curl\'s form default, none, a wrong image type', async () => {
    const reference = await fetch(`${server.url}/classify?logits=1`, { method: 'POST', headers: { 'Content-Type': 'image/jpeg' }, body: new Uint8Array(jpeg) });
    expect(reference.status).toBe(200);
    const expected = ((await reference.json()) as { logits: number[] }).logits;
    // `curl --data-binary @photo.jpg` without -H sends application/x-www-form-urlencoded; the page sends
    // application/octet-stream for a file without extension; a bare HTTP client sends nothing.
    for (const type of ['application/octet-stream', 'application/x-www-form-urlencoded', undefined, 'image/png', 'text/plain']) {
      const headers: Record<string, string> = type ? { 'Content-Type': type } : {};
      const res = await fetch(`${server.url}/classify?logits=1`, { method: 'POST', headers, body: new Uint8Array(jpeg) });
      const body = (await res.json()) as { logits: number[]; image: { format: string } };
      expect(res.status, `${type ?? '(no Content-Type)'}: ${JSON.stringify(body).slice(0, 200)}`).toBe(200);
      expect(body.image.format).toBe('jpeg');
      expect(body.logits).toEqual(expected);
    }
    // Multipart still works, and the part's own Content-Type does not matter either.
    const form = new FormData();
    form.append('image', new Blob([new Uint8Array(jpeg)], { type: 'application/octet-stream' }), 'photo');
    const viaForm = await fetch(`${server.url}/classify?logits=1`, { method: 'POST', body: form });
    expect(viaForm.status).toBe(200);
    expect(((await viaForm.json()) as { logits: number[] }).logits).toEqual(expected);
  });

  it('a body declared far over the limit is refused before it is read', async () => {
    // Declares 1 GB, sends a few bytes: the answer must come without waiting for the rest.
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(`${server.url}/classify`, { method: 'POST', headers: { 'Content-Type': 'image/jpeg', 'Content-Length': String(1 << 30) } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.write(Buffer.alloc(1000));
    });
    expect(status).toBe(413);
    await stillHealthy();
  });

  it('a client that disconnects mid-upload does not hurt the server', async () => {
    await new Promise<void>((resolve) => {
      const req = request(`${server.url}/classify`, { method: 'POST', headers: { 'Content-Type': 'image/jpeg', 'Content-Length': String(jpeg.length) } });
      req.on('error', () => resolve());
      req.write(jpeg.subarray(0, 1000));
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 50);
    });
    await stillHealthy();
  });

  it('no 500 was answered to any of it', async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    expect(text).not.toMatch(/status="5\d\d"/);
    expect(text).toMatch(/status="415"/);
  });
});
