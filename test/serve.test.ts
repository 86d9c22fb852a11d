// The inference server over real HTTP, on real photographs: every served format, the awkward variants, the
// 320 crop against PIL's, the logits against onnxruntime run directly on the same tensor, and the API around it.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportInference } from '../src/export/inference.js';
import { resolveConfig } from '../src/models/config.js';
import { type RunningServer, startServer } from '../src/serve/server.js';
import { type Fixture, makeFixtures, photosAvailable, pilCrops } from './fixtures/images/make.js';
import { relDiff, runOnnx, tempDir } from './helpers.js';

const dir = tempDir('resnet-onnx-serve-');
const model = join(dir, 'tiny-imagenet.onnx');
let server: RunningServer;
let fixtures: Record<string, Fixture>;
let pil: Record<string, Buffer>;
const logs: string[] = [];

interface Classification {
  model: string;
  weights: string;
  trained: boolean;
  warning?: string;
  predictions: { index: number; label: string; probability: number }[];
  image: { format: string; width: number; height: number; orientation: number; frames: number; hasAlpha: boolean; space: string };
  preprocessing: { resize: number; crop: number; resizedTo: { width: number; height: number } };
  timings: { decodeMs: number; queueMs: number; inferenceMs: number; totalMs: number; batchSize: number };
  crop?: string;
  logits?: number[];
}

async function classify(name: string, query = ''): Promise<{ status: number; body: Classification; headers: Headers }> {
  const f = fixtures[name];
  const res = await fetch(`${server.url}/classify${query}`, { method: 'POST', headers: { 'Content-Type': f.type }, body: readFileSync(f.path) });
  return { status: res.status, body: (await res.json()) as Classification, headers: res.headers };
}

/** The crop the server returned (PNG data URL) as raw RGB bytes. */
async function cropOf(body: Classification): Promise<Buffer> {
  expect(body.crop, 'crop requested with ?crop=1').toMatch(/^data:image\/png;base64,/);
  const { data, info } = await sharp(Buffer.from((body.crop as string).split(',')[1], 'base64')).raw().toBuffer({ resolveWithObject: true });
  expect([info.width, info.height, info.channels]).toEqual([320, 320, 3]);
  return data;
}

function diffStats(a: Buffer, b: Buffer): { mean: number; p99: number } {
  const d = Array.from(a, (v, i) => Math.abs(v - b[i])).sort((x, y) => x - y);
  return { mean: d.reduce((s, v) => s + v, 0) / d.length, p99: d[Math.floor(d.length * 0.99)] };
}

beforeAll(async () => {
  if (!photosAvailable()) throw new Error('python3-skimage is not installed: apt-get install python3-skimage python3-pil (.ci/run does it)');
  exportInference(resolveConfig({ dataset: 'imagenet', stages: [1, 1, 1, 1], unit: 'basic' }), { output: model });
  fixtures = await makeFixtures(dir);
  pil = pilCrops(dir, fixtures, 320, 320);
  server = await startServer({ model, port: 0, logLevel: 'info', logDestination: { write: (s: string) => void logs.push(s) }, maxDelayMs: 2 });
  await server.ready;
});

afterAll(async () => {
  await server?.close();
});

describe('real photographs in JPEG, PNG, WebP and GIF', () => {
  const photos = ['astronaut', 'coffee', 'chelsea'];
  const formats = ['jpg', 'png', 'webp', 'gif'];

  it.each(photos.flatMap((p) => formats.map((f) => `${p}.${f}`)))('%s: 200, k labelled classes, probabilities sum to <= 1, the crop equals PIL\'s', async (name) => {
    const { status, body } = await classify(name, '?topk=7&crop=1');
    expect(status, JSON.stringify(body)).toBe(200);
    expect(body.predictions).toHaveLength(7);
    const sum = body.predictions.reduce((s, p) => s + p.probability, 0);
    expect(sum).toBeLessThanOrEqual(1 + 1e-12);
    for (const p of body.predictions) {
      expect(p.probability).toBeGreaterThanOrEqual(0);
      expect(Number.isInteger(p.index) && p.index >= 0 && p.index < 1000).toBe(true);
      expect(typeof p.label).toBe('string');
    }
    // Sorted, most probable first.
    for (let i = 1; i < 7; i++) expect(body.predictions[i].probability).toBeLessThanOrEqual(body.predictions[i - 1].probability);
    expect(body.image.format).toBe({ jpg: 'jpeg', png: 'png', webp: 'webp', gif: 'gif' }[name.split('.')[1]]);
    // PIL's shorter-side-320 bilinear resize and centre crop of the same file, within resampling tolerance
    // (different decoders and resamplers: ~0.2 grey levels mean for lossless files, ~1 for lossy WebP).
    const d = diffStats(await cropOf(body), pil[name]);
    expect(d.mean, `${name}: mean |server - PIL| per channel`).toBeLessThan(1.5);
    expect(d.p99, `${name}: 99th percentile |server - PIL|`).toBeLessThanOrEqual(16);
  });

  it("the crop is not just close to anything: PIL's crop of another photo, or shifted, is far", async () => {
    const { body } = await classify('chelsea.png', '?crop=1');
    const crop = await cropOf(body);
    expect(diffStats(crop, pil['coffee.png']).mean).toBeGreaterThan(20);
    // The same photo's crop one pixel to the left: what an off-by-one in the centre offset would give.
    const shifted = Buffer.alloc(crop.length);
    for (let y = 0; y < 320; y++) pil['chelsea.png'].copy(shifted, y * 960 + 3, y * 960, y * 960 + 957);
    expect(diffStats(crop, shifted).mean).toBeGreaterThan(2 * diffStats(crop, pil['chelsea.png']).mean);
  });

  it("the logits equal onnxruntime run directly on the crop's tensor", async () => {
    for (const name of ['coffee.jpg', 'chelsea.webp']) {
      const { body } = await classify(name, '?crop=1&logits=1');
      const crop = await cropOf(body);
      // Normalise as the model's metadata says (ImageNet mean/std on [0,1] pixels), planar RGB.
      const mean = [0.485, 0.456, 0.406];
      const std = [0.229, 0.224, 0.225];
      const x = new Float32Array(3 * 320 * 320);
      for (let c = 0; c < 3; c++) for (let i = 0; i < 320 * 320; i++) x[c * 320 * 320 + i] = (crop[i * 3 + c] / 255 - mean[c]) / std[c];
      const direct = await runOnnx(model, x, [1, 3, 320, 320]);
      expect(body.logits).toHaveLength(1000);
      expect(relDiff(Float32Array.from(body.logits as number[]), direct.data), name).toBeLessThan(1e-5);
      // And the top-5 is the softmax of those logits.
      const order = Array.from(direct.data.keys()).sort((a, b) => direct.data[b] - direct.data[a]);
      expect(body.predictions.map((p) => p.index)).toEqual(order.slice(0, 5));
    }
  });

  it('a 12-megapixel JPEG is resized, not refused', async () => {
    const { status, body } = await classify('coffee-12mp.jpg', '?crop=1');
    expect(status).toBe(200);
    expect(body.image).toMatchObject({ width: 4240, height: 2827 });
    expect(body.preprocessing.resizedTo).toEqual({ width: 480, height: 320 });
    expect(diffStats(await cropOf(body), pil['coffee-12mp.jpg']).mean).toBeLessThan(1.5);
  });

  it('TIFF and AVIF are served too', async () => {
    for (const name of ['astronaut.tiff', 'astronaut.avif']) {
      const { status, body } = await classify(name, '?crop=1');
      expect(status, name).toBe(200);
      expect(body.image.format).toBe(name.endsWith('tiff') ? 'tiff' : 'avif');
      // AVIF is lossy and PIL cannot read it: compare with the PNG's crop, loosely.
      expect(diffStats(await cropOf(body), pil['astronaut.png']).mean, name).toBeLessThan(4);
    }
  });
});

describe('image variants behave as specified', () => {
  it.each([3, 6, 8])('EXIF orientation %i is applied: the upright photo is classified', async (o) => {
    const { status, body } = await classify(`coffee-exif${o}.jpg`, '?crop=1');
    expect(status).toBe(200);
    expect(body.image).toMatchObject({ orientation: o, width: 600, height: 400 });
    const crop = await cropOf(body);
    expect(diffStats(crop, pil[`coffee-exif${o}.jpg`]).mean).toBeLessThan(1.5);
    // ... which is the upright coffee, not the stored (rotated) pixels.
    expect(diffStats(crop, pil['coffee.jpg']).mean).toBeLessThan(2);
  });

  it('greyscale (8 and 16-bit) becomes 8-bit RGB with equal channels', async () => {
    for (const name of ['camera-grey.png', 'camera-grey16.png']) {
      const { status, body } = await classify(name, '?crop=1');
      expect(status, name).toBe(200);
      const crop = await cropOf(body);
      for (let i = 0; i < crop.length; i += 3) if (crop[i] !== crop[i + 1] || crop[i] !== crop[i + 2]) throw new Error(`${name}: pixel ${i / 3} is not grey`);
      expect(diffStats(crop, pil[name]).mean, name).toBeLessThan(1.5);
    }
  });

  it('16-bit RGB becomes 8-bit RGB: the same crop as the 8-bit file', async () => {
    const { status, body } = await classify('astronaut-16bit.png', '?crop=1');
    expect(status).toBe(200);
    expect(body.image.space).toBe('rgb16');
    const crop = await cropOf(body);
    expect(diffStats(crop, pil['astronaut.png']).mean).toBeLessThan(1.5);
  });

  it('CMYK becomes RGB (through a colour profile: close to the RGB original, not inverted)', async () => {
    const { status, body } = await classify('astronaut-cmyk.jpg', '?crop=1');
    expect(status).toBe(200);
    expect(body.image.space).toBe('cmyk');
    const crop = await cropOf(body);
    const d = diffStats(crop, pil['astronaut.png']).mean;
    expect(d).toBeLessThan(25);
    const inverted = Buffer.from(pil['astronaut.png'].map((v) => 255 - v));
    expect(diffStats(crop, inverted).mean).toBeGreaterThan(3 * d);
  });

  it('palette PNG is expanded to RGB', async () => {
    const { status, body } = await classify('coffee-palette.png', '?crop=1');
    expect(status).toBe(200);
    expect(diffStats(await cropOf(body), pil['coffee-palette.png']).mean).toBeLessThan(1.5);
  });

  it('alpha is flattened onto white (PNG and WebP)', async () => {
    for (const name of ['astronaut-alpha.png', 'astronaut-alpha.webp']) {
      const { status, body } = await classify(name, '?crop=1');
      expect(status, name).toBe(200);
      expect(body.image.hasAlpha).toBe(true);
      const crop = await cropOf(body);
      // Source 512 -> 320: the transparent left half is x < 160 in the crop.
      let white = 0;
      for (let y = 0; y < 320; y++) for (let x = 0; x < 150; x++) if (crop[(y * 320 + x) * 3] === 255 && crop[(y * 320 + x) * 3 + 1] === 255 && crop[(y * 320 + x) * 3 + 2] === 255) white++;
      expect(white / (320 * 150), name).toBeGreaterThan(0.99);
      expect(diffStats(crop, pil[name]).mean, name).toBeLessThan(1.5);
    }
  });

  it('animated GIF and WebP: only the first frame is used', async () => {
    const first = (await sharp(join('/usr/lib/python3/dist-packages/skimage/data', 'astronaut.png')).resize(320, 320).raw().toBuffer()) as Buffer;
    for (const name of ['animated.gif', 'animated.webp']) {
      const { status, body } = await classify(name, '?crop=1');
      expect(status, name).toBe(200);
      expect(body.image.frames, name).toBe(3);
      expect(body.image.height).toBe(400);
      const crop = await cropOf(body);
      expect(diffStats(crop, pil[name]).mean, name).toBeLessThan(1.5);
      expect(diffStats(crop, first).mean, `${name}: frame 0 is the astronaut`).toBeLessThan(4);
    }
  });
});

describe('the API', () => {
  it('multipart/form-data field `image` works like a raw body', async () => {
    const form = new FormData();
    form.append('note', 'fields other than image are ignored');
    form.append('image', new Blob([readFileSync(fixtures['coffee.jpg'].path)], { type: 'image/jpeg' }), 'coffee.jpg');
    const res = await fetch(`${server.url}/classify?topk=3&logits=1`, { method: 'POST', body: form });
    expect(res.status).toBe(200);
    const viaForm = (await res.json()) as Classification;
    const raw = (await classify('coffee.jpg', '?topk=3&logits=1')).body;
    expect(viaForm.predictions).toEqual(raw.predictions);
  });

  it('every response says the weights are random-init, read from the model metadata', async () => {
    const { body, headers } = await classify('coffee.png');
    expect(body.weights).toBe('random-init (seed 0)');
    expect(body.trained).toBe(false);
    expect(body.warning).toMatch(/random-init.*not been trained/);
    expect(body.model).toBe('tiny-imagenet');
    expect(headers.get('x-request-id')).toMatch(/^[\w-]+$/);
    expect(body.timings.decodeMs).toBeGreaterThan(0);
    expect(body.timings.inferenceMs).toBeGreaterThan(0);
    expect(body.timings.queueMs).toBeGreaterThanOrEqual(0);
    expect(body.timings.totalMs).toBeGreaterThanOrEqual(body.timings.decodeMs);
    expect(body.predictions).toHaveLength(5);
  });

  it('/healthz, /readyz, /openapi.json', async () => {
    expect(await (await fetch(`${server.url}/healthz`)).json()).toEqual({ status: 'alive' });
    const ready = await fetch(`${server.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'ready', weights: 'random-init (seed 0)', trained: false });
    const api = (await (await fetch(`${server.url}/openapi.json`)).json()) as { openapi: string; paths: Record<string, unknown> };
    expect(api.openapi).toBe('3.1.0');
    expect(Object.keys(api.paths)).toEqual(expect.arrayContaining(['/classify', '/healthz', '/readyz', '/metrics', '/v2/models/{name}/infer']));
  });

  it('/metrics: Prometheus text with requests by route and status, latency, queue depth, batch sizes, inference time', async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    expect(text).toMatch(/^http_requests_total\{route="\/classify",method="POST",status="200"\} \d+/m);
    for (const m of ['http_request_duration_seconds_bucket', 'inference_queue_depth', 'inference_batch_size_bucket', 'inference_duration_seconds_bucket', 'image_decode_seconds_bucket', 'process_resident_memory_bytes'])
      expect(text, m).toContain(m);
    expect(text).toMatch(/model_info\{model="tiny-imagenet",weights="random-init \(seed 0\)"\} 1/);
  });

  it('logs are structured JSON lines with a request id and status', () => {
    const lines = logs.join('').trim().split('\n').map((l) => JSON.parse(l) as { msg: string; req?: { id: string; url: string }; res?: { statusCode: number }; weights?: string });
    expect(lines.some((l) => /RANDOM WEIGHTS/.test(l.msg))).toBe(true);
    const done = lines.find((l) => l.req?.url?.startsWith('/classify') && l.res?.statusCode === 200);
    expect(done?.req?.id).toBeTruthy();
  });

  it('unknown routes are 404 and wrong methods 405, as JSON', async () => {
    const r404 = await fetch(`${server.url}/nope`);
    expect(r404.status).toBe(404);
    expect(await r404.json()).toMatchObject({ error: { code: 'not_found' } });
    const r405 = await fetch(`${server.url}/classify`);
    expect(r405.status).toBe(405);
    expect(r405.headers.get('allow')).toBe('POST');
  });
});

describe('KServe v2 (Open Inference Protocol) endpoints', () => {
  it('health, server and model metadata (with the weights status), readiness', async () => {
    expect((await fetch(`${server.url}/v2/health/live`)).status).toBe(200);
    expect((await fetch(`${server.url}/v2/health/ready`)).status).toBe(200);
    expect((await fetch(`${server.url}/v2/models/tiny-imagenet/ready`)).status).toBe(200);
    const meta = (await (await fetch(`${server.url}/v2/models/tiny-imagenet`)).json()) as Record<string, unknown>;
    expect(meta).toMatchObject({
      name: 'tiny-imagenet',
      versions: ['1'],
      platform: 'onnxruntime_onnx',
      inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, 3, -1, -1] }],
      outputs: [{ name: 'logits', datatype: 'FP32', shape: [-1, 1000] }],
      parameters: { weights: 'random-init (seed 0)', trained: false },
    });
    const unknown = await fetch(`${server.url}/v2/models/resnet50`);
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { error: string }).error).toMatch(/unknown model 'resnet50'/);
  });

  it('infer on JSON tensors (flat or nested) equals onnxruntime directly, batched requests too', async () => {
    const n = 2;
    const x = Float32Array.from({ length: n * 3 * 64 * 64 }, (_, i) => Math.sin(i * 0.37));
    const direct = await runOnnx(model, x, [n, 3, 64, 64]);
    const res = await fetch(`${server.url}/v2/models/tiny-imagenet/infer`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ id: 'req-1', inputs: [{ name: 'input', shape: [n, 3, 64, 64], datatype: 'FP32', data: Array.from(x) }], outputs: [{ name: 'logits' }] }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { model_name: string; id: string; parameters: { weights: string }; outputs: { name: string; shape: number[]; datatype: string; data: number[] }[] };
    expect(body).toMatchObject({ model_name: 'tiny-imagenet', id: 'req-1', parameters: { weights: 'random-init (seed 0)' } });
    expect(body.outputs[0]).toMatchObject({ name: 'logits', shape: [n, 1000], datatype: 'FP32' });
    expect(relDiff(Float32Array.from(body.outputs[0].data), direct.data)).toBeLessThan(1e-5);
    // Nested arrays are accepted too.
    const nested = Array.from({ length: 1 }, () => Array.from({ length: 3 }, (_, c) => Array.from({ length: 64 }, (_, h) => Array.from(x.subarray(c * 4096 + h * 64, c * 4096 + h * 64 + 64)))));
    const res2 = await fetch(`${server.url}/v2/models/tiny-imagenet/infer`, { method: 'POST', body: JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 64, 64], datatype: 'FP32', data: nested }] }) });
    const body2 = (await res2.json()) as { outputs: { data: number[] }[] };
    expect(relDiff(Float32Array.from(body2.outputs[0].data), direct.data.subarray(0, 1000))).toBeLessThan(1e-5);
  });

  it('bad tensors get 400 with the protocol\'s {"error": "..."} body', async () => {
    const bad = [
      { inputs: [{ name: 'x', shape: [1, 3, 64, 64], datatype: 'FP32', data: [] }] },
      { inputs: [{ name: 'input', shape: [1, 3, 64, 64], datatype: 'INT8', data: [] }] },
      { inputs: [{ name: 'input', shape: [1, 3, 64, 64], datatype: 'FP32', data: [1, 2, 3] }] },
      { inputs: [{ name: 'input', shape: [1, 4, 64, 64], datatype: 'FP32', data: [] }] },
      { inputs: [{ name: 'input', shape: [1, 3, 8, 8], datatype: 'FP32', data: new Array(192).fill(0) }] },
      { inputs: [{ name: 'input', shape: [99, 3, 64, 64], datatype: 'FP32', data: [] }] },
      { inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', data: new Array(3072).fill('a') }] },
      { inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', data: new Array(3072).fill(0) }], outputs: [{ name: 'probs' }] },
      { inputs: 'nope' },
    ];
    for (const b of bad) {
      const res = await fetch(`${server.url}/v2/models/tiny-imagenet/infer`, { method: 'POST', body: JSON.stringify(b) });
      const body = (await res.json()) as { error: string; code: string };
      expect(res.status, JSON.stringify(b).slice(0, 120)).toBe(400);
      expect(typeof body.error).toBe('string');
    }
    const notJson = await fetch(`${server.url}/v2/models/tiny-imagenet/infer`, { method: 'POST', body: '{"inputs": [' });
    expect(notJson.status).toBe(400);
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });
});
