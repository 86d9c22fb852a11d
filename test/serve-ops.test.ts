// The server under concurrency and in operation: dynamic batching (answers stay per-request correct),
// overload (503 + Retry-After, no crash, no timeout), deadlines, two workers, the Triton repository, and
// SIGTERM draining in-flight requests of `resnet-onnx serve` on its default model.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { request } from 'node:http';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../src/cli/main.js';
import { exportInference } from '../src/export/inference.js';
import { resolveConfig } from '../src/models/config.js';
import { type RunningServer, type ServeOptions, startServer } from '../src/serve/server.js';
import { PYTHON, SKIMAGE_DATA } from './fixtures/images/make.js';
import { relDiff, tempDir } from './helpers.js';

const dir = tempDir('resnet-onnx-serve-ops-');
const model = join(dir, 'tiny.onnx');
const images: Buffer[] = [];

interface Answer {
  status: number;
  retryAfter: string | null;
  body: { predictions?: { index: number }[]; logits?: number[]; timings?: { batchSize: number }; error?: { code: string } };
}

async function classify(server: RunningServer, image: Buffer, query = ''): Promise<Answer> {
  const res = await fetch(`${server.url}/classify${query}`, { method: 'POST', headers: { 'Content-Type': 'image/jpeg' }, body: new Uint8Array(image) });
  return { status: res.status, retryAfter: res.headers.get('retry-after'), body: (await res.json()) as Answer['body'] };
}

async function withServer<T>(o: Partial<ServeOptions>, fn: (s: RunningServer) => Promise<T>): Promise<T> {
  const s = await startServer({ model, port: 0, logLevel: 'silent', ...o });
  try {
    await s.ready;
    return await fn(s);
  } finally {
    await s.close();
  }
}

function metric(text: string, name: string): number {
  const m = text.match(new RegExp(`^${name} ([0-9.e+-]+)$`, 'm'));
  if (!m) throw new Error(`metric ${name} not found`);
  return Number(m[1]);
}

beforeAll(async () => {
  exportInference(resolveConfig({ dataset: 'imagenet', stages: [1, 1, 1, 1], unit: 'basic' }), { output: model });
  // Twelve different real images: three photos at four crops/flips each.
  for (const photo of ['astronaut', 'coffee', 'chelsea'])
    for (let v = 0; v < 4; v++) {
      let img = sharp(join(SKIMAGE_DATA, `${photo}.png`));
      if (v & 1) img = img.flop();
      if (v & 2) img = img.extract({ left: 0, top: 0, width: 300, height: 300 });
      images.push(await img.jpeg({ quality: 90 }).toBuffer());
    }
});

describe('dynamic batching', () => {
  it('simultaneous requests run in batches (size > 1) and each gets its own answer', async () => {
    await withServer({ maxBatch: 8, maxDelayMs: 200 }, async (s) => {
      // Each image alone first: the reference answers.
      const alone: Answer[] = [];
      for (const img of images) alone.push(await classify(s, img, '?logits=1'));
      for (const a of alone) expect(a.body.timings?.batchSize).toBe(1);
      // Then all at once, three times over (36 requests).
      const all = await Promise.all([...images, ...images, ...images].map((img) => classify(s, img, '?logits=1')));
      expect(all.map((a) => a.status)).toEqual(all.map(() => 200));
      all.forEach((a, i) => {
        const ref = alone[i % images.length];
        expect(relDiff(Float32Array.from(a.body.logits as number[]), Float32Array.from(ref.body.logits as number[])), `request ${i}`).toBeLessThan(1e-4);
        expect(a.body.predictions?.map((p) => p.index)).toEqual(ref.body.predictions?.map((p) => p.index));
      });
      const sizes = all.map((a) => a.body.timings?.batchSize ?? 0);
      expect(Math.max(...sizes)).toBeGreaterThan(1);
      expect(Math.max(...sizes)).toBeLessThanOrEqual(8);
      // /metrics shows the batch sizes actually formed.
      const text = await (await fetch(`${s.url}/metrics`)).text();
      const count = metric(text, 'inference_batch_size_count');
      const sum = metric(text, 'inference_batch_size_sum');
      expect(sum).toBe(images.length + all.length);
      expect(sum / count).toBeGreaterThan(1.5);
      expect(metric(text, 'inference_batch_size_bucket\\{le="1"\\}')).toBeLessThan(count);
    });
  });

  it('two inference workers in one process serve concurrent requests correctly', async () => {
    await withServer({ workers: 2, threads: 1, maxBatch: 4, maxDelayMs: 20 }, async (s) => {
      const ref = await classify(s, images[0], '?logits=1');
      const all = await Promise.all(Array.from({ length: 24 }, (_, i) => classify(s, images[i % images.length], '?logits=1')));
      expect(all.every((a) => a.status === 200)).toBe(true);
      for (let i = 0; i < all.length; i += images.length) expect(relDiff(Float32Array.from(all[i].body.logits as number[]), Float32Array.from(ref.body.logits as number[]))).toBeLessThan(1e-4);
      expect((await fetch(`${s.url}/readyz`)).status).toBe(200);
    });
  });
});

describe('bounded work', () => {
  it('overload gets 503 with Retry-After, not crashes or timeouts; the server recovers', async () => {
    await withServer({ maxBatch: 2, maxQueue: 4, maxDelayMs: 0, decodeConcurrency: 1 }, async (s) => {
      const started = Date.now();
      const all = await Promise.all(Array.from({ length: 60 }, (_, i) => classify(s, images[i % images.length])));
      const statuses = all.map((a) => a.status);
      expect(statuses.every((c) => c === 200 || c === 503), statuses.join(',')).toBe(true);
      const refused = all.filter((a) => a.status === 503);
      expect(refused.length).toBeGreaterThan(0);
      expect(statuses.filter((c) => c === 200).length).toBeGreaterThan(0);
      for (const r of refused) {
        expect(r.body.error?.code).toBe('overloaded');
        expect(Number(r.retryAfter)).toBeGreaterThanOrEqual(1);
      }
      expect(Date.now() - started).toBeLessThan(30_000);
      // Recovered: the queue is empty and a request is served.
      expect((await classify(s, images[0])).status).toBe(200);
      const text = await (await fetch(`${s.url}/metrics`)).text();
      expect(metric(text, 'inference_queue_depth')).toBe(0);
      expect(text).toMatch(/inference_rejected_total\{reason="overloaded"\} [1-9]/);
    });
  });

  it('a request past its deadline gets 503 deadline_exceeded with Retry-After', async () => {
    // A 1 ms deadline: every request expires, queued or running (inference takes longer than that).
    await withServer({ deadlineMs: 1 }, async (s) => {
      const r = await classify(s, images[0]);
      expect(r.status).toBe(503);
      expect(r.body.error?.code).toBe('deadline_exceeded');
      expect(Number(r.retryAfter)).toBeGreaterThanOrEqual(1);
      expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    });
  });

  it('/readyz is 503 until the model is loaded and warmed up', async () => {
    const s = await startServer({ model, port: 0, logLevel: 'silent' });
    try {
      const early = await fetch(`${s.url}/readyz`);
      // Loading takes a few hundred ms; the listener answers before it.
      expect([200, 503]).toContain(early.status);
      if (early.status === 503) {
        expect(((await early.json()) as { error: { code: string } }).error.code).toBe('not_ready');
        const c = await classify(s, images[0]);
        expect(c.status).toBe(503);
        expect(c.body.error?.code).toBe('not_ready');
      }
      expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
      await s.ready;
      expect((await fetch(`${s.url}/readyz`)).status).toBe(200);
    } finally {
      await s.close();
    }
  });
});

describe('a crashed inference worker', () => {
  it('is replaced; readiness drops meanwhile; queued requests are served by the new one', async () => {
    await withServer({}, async (s) => {
      await s.pool.kill(0);
      expect(s.context.state.ready).toBe(false);
      expect((await fetch(`${s.url}/readyz`)).status).toBe(503);
      // Requests are refused with 503 while no worker is ready ...
      const during = await classify(s, images[0]);
      if (during.status !== 200) expect(during.body.error?.code).toBe('not_ready');
      // ... and queued work survives: a request queued while the replacement loads is served by it.
      const queued = s.context.batcher.submit(new Float32Array(3 * 64 * 64), [3, 64, 64], 1);
      expect((await queued).outputs[0].dims).toEqual([1, 1000]);
      expect((await fetch(`${s.url}/readyz`)).status).toBe(200);
      expect((await classify(s, images[1])).status).toBe(200);
    });
  });
});

describe('resnet-onnx triton', () => {
  it('writes a model repository whose config.pbtxt parses as Triton ModelConfig and matches the model', async () => {
    const repo = join(dir, 'triton');
    const out: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void out.push(a.join(' ')));
    const code = await main(['node', 'resnet-onnx', 'triton', '--model', model, '--out', repo, '--max-batch', '16', '--max-delay-ms', '5', '--deadline-ms', '2500']);
    vi.restoreAllMocks();
    expect(code).toBe(0);
    expect(out.join('\n')).toMatch(/random-init/);
    const m = join(repo, 'tiny');
    for (const f of ['config.pbtxt', 'labels.txt', '1/model.onnx']) expect(existsSync(join(m, f)), f).toBe(true);
    const labels = readFileSync(join(m, 'labels.txt'), 'utf8').trim().split('\n');
    expect(labels).toHaveLength(1000);
    expect(labels[0]).toBe('tench');
    // Parse with protobuf's own text-format parser against the fields of Triton's ModelConfig that we write
    // (names and enums as in triton-inference-server/common protobuf/model_config.proto).
    const parsed = JSON.parse(execFileSync(PYTHON, ['-c', TRITON_SUBSET_PARSER, join(m, 'config.pbtxt')], { encoding: 'utf8' })) as Record<string, unknown>;
    expect(parsed).toMatchObject({
      name: 'tiny',
      backend: 'onnxruntime',
      maxBatchSize: 16,
      input: [{ name: 'input', dataType: 'TYPE_FP32', dims: ['3', '320', '320'] }],
      output: [{ name: 'logits', dataType: 'TYPE_FP32', dims: ['1000'], labelFilename: 'labels.txt' }],
      dynamicBatching: { maxQueueDelayMicroseconds: '5000', defaultQueuePolicy: { maxQueueSize: 64, defaultTimeoutMicroseconds: '2500000' } },
      instanceGroup: [{ count: 1, kind: 'KIND_CPU' }],
      parameters: { weights: { stringValue: 'random-init (seed 0)' } },
    });
    // The copied model loads and runs a batch at the declared shapes.
    const session = await ort.InferenceSession.create(join(m, '1', 'model.onnx'));
    try {
      const y = await session.run({ input: new ort.Tensor('float32', new Float32Array(2 * 3 * 320 * 320), [2, 3, 320, 320]) });
      expect(y.logits.dims).toEqual([2, 1000]);
    } finally {
      await session.release();
    }
  });

  it('the largest values the config fields hold are written so that protobuf parses them back exactly', async () => {
    const repo = join(dir, 'triton-max');
    vi.spyOn(console, 'log').mockImplementation(() => {});
    const code = await main(['node', 'resnet-onnx', 'triton', '--model', model, '--out', repo, '--max-batch', '2147483647', '--instances', '2147483647', '--max-queue', '4294967295', '--max-delay-ms', '0.5', '--deadline-ms', '18446744073709551.615']);
    vi.restoreAllMocks();
    expect(code).toBe(0);
    const parsed = JSON.parse(execFileSync(PYTHON, ['-c', TRITON_SUBSET_PARSER, join(repo, 'tiny', 'config.pbtxt')], { encoding: 'utf8' })) as Record<string, unknown>;
    expect(parsed).toMatchObject({
      maxBatchSize: 2147483647,
      dynamicBatching: { maxQueueDelayMicroseconds: '500', defaultQueuePolicy: { maxQueueSize: 4294967295, defaultTimeoutMicroseconds: '18446744073709551615' } },
      instanceGroup: [{ count: 2147483647 }],
    });
  });
});

const TRITON_SUBSET_PARSER = String.raw`
import json, sys
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory, text_format
F = descriptor_pb2.FieldDescriptorProto
f = descriptor_pb2.FileDescriptorProto(name='triton_model_config_subset.proto', package='inference', syntax='proto3')
e = f.enum_type.add(name='DataType')
for i, n in enumerate(['TYPE_INVALID', 'TYPE_BOOL', 'TYPE_UINT8', 'TYPE_UINT16', 'TYPE_UINT32', 'TYPE_UINT64', 'TYPE_INT8', 'TYPE_INT16', 'TYPE_INT32', 'TYPE_INT64', 'TYPE_FP16', 'TYPE_FP32', 'TYPE_FP64', 'TYPE_STRING', 'TYPE_BF16']):
    e.value.add(name=n, number=i)
def message(parent, name, fields):
    m = parent.add(name=name)
    for num, (fname, ftype, label, tname) in enumerate(fields, 1):
        fd = m.field.add(name=fname, number=num, type=ftype, label=label)
        if tname: fd.type_name = tname
    return m
OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
message(f.message_type, 'ModelInput', [('name', F.TYPE_STRING, OPT, ''), ('data_type', F.TYPE_ENUM, OPT, '.inference.DataType'), ('dims', F.TYPE_INT64, REP, '')])
message(f.message_type, 'ModelOutput', [('name', F.TYPE_STRING, OPT, ''), ('data_type', F.TYPE_ENUM, OPT, '.inference.DataType'), ('dims', F.TYPE_INT64, REP, ''), ('label_filename', F.TYPE_STRING, OPT, '')])
q = message(f.message_type, 'ModelQueuePolicy', [('timeout_action', F.TYPE_ENUM, OPT, '.inference.ModelQueuePolicy.TimeoutAction'), ('default_timeout_microseconds', F.TYPE_UINT64, OPT, ''), ('allow_timeout_override', F.TYPE_BOOL, OPT, ''), ('max_queue_size', F.TYPE_UINT32, OPT, '')])
a = q.enum_type.add(name='TimeoutAction'); a.value.add(name='REJECT', number=0); a.value.add(name='DELAY', number=1)
message(f.message_type, 'ModelDynamicBatching', [('preferred_batch_size', F.TYPE_INT32, REP, ''), ('max_queue_delay_microseconds', F.TYPE_UINT64, OPT, ''), ('default_queue_policy', F.TYPE_MESSAGE, OPT, '.inference.ModelQueuePolicy')])
g = message(f.message_type, 'ModelInstanceGroup', [('name', F.TYPE_STRING, OPT, ''), ('kind', F.TYPE_ENUM, OPT, '.inference.ModelInstanceGroup.Kind'), ('count', F.TYPE_INT32, OPT, '')])
k = g.enum_type.add(name='Kind')
for i, n in enumerate(['KIND_AUTO', 'KIND_GPU', 'KIND_CPU', 'KIND_MODEL']): k.value.add(name=n, number=i)
message(f.message_type, 'ModelParameter', [('string_value', F.TYPE_STRING, OPT, '')])
c = message(f.message_type, 'ModelConfig', [('name', F.TYPE_STRING, OPT, ''), ('platform', F.TYPE_STRING, OPT, ''), ('backend', F.TYPE_STRING, OPT, ''), ('max_batch_size', F.TYPE_INT32, OPT, ''), ('input', F.TYPE_MESSAGE, REP, '.inference.ModelInput'), ('output', F.TYPE_MESSAGE, REP, '.inference.ModelOutput'), ('dynamic_batching', F.TYPE_MESSAGE, OPT, '.inference.ModelDynamicBatching'), ('instance_group', F.TYPE_MESSAGE, REP, '.inference.ModelInstanceGroup'), ('parameters', F.TYPE_MESSAGE, REP, '.inference.ModelConfig.ParametersEntry')])
p = message(c.nested_type, 'ParametersEntry', [('key', F.TYPE_STRING, OPT, ''), ('value', F.TYPE_MESSAGE, OPT, '.inference.ModelParameter')])
p.options.map_entry = True
pool = descriptor_pool.DescriptorPool()
pool.Add(f)
desc = pool.FindMessageTypeByName('inference.ModelConfig')
cls = message_factory.GetMessageClass(desc) if hasattr(message_factory, 'GetMessageClass') else message_factory.MessageFactory(pool).GetPrototype(desc)
msg = text_format.Parse(open(sys.argv[1]).read(), cls())
print(json_format.MessageToJson(msg))
`;

describe('resnet-onnx serve (a real process): default model, SIGTERM drains in-flight requests, exit 0', () => {
  let child: ChildProcess | undefined;
  afterAll(() => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
  });

  it('serves models/ ResNet-200 (creating it if absent), says random-init, and drains on SIGTERM', { timeout: 240_000 }, async () => {
    const lines: { msg: string; url?: string; inFlight?: number; clean?: boolean; weights?: string }[] = [];
    let stderr = '';
    // An empty download cache: nothing pulled, so the default is the random-init ResNet-200 (npm start never downloads).
    const env = { ...process.env, RESNET_ONNX_CACHE: mkdtempSync(join(tmpdir(), 'resnet-onnx-empty-cache-')) };
    child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/bin.ts', 'serve', '--port', '0', '--max-batch', '2', '--max-delay-ms', '20'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const proc = child;
    let buf = '';
    const waitFor = (pred: (l: (typeof lines)[number]) => boolean, ms: number): Promise<(typeof lines)[number]> =>
      new Promise((resolve, reject) => {
        const found = lines.find(pred);
        if (found) return resolve(found);
        const timer = setTimeout(() => reject(new Error(`timed out; log so far:\n${lines.map((l) => l.msg).join('\n')}\n${stderr}`)), ms);
        const check = (): void => {
          const l = lines.find(pred);
          if (l) {
            clearTimeout(timer);
            proc.stdout?.off('data', check);
            resolve(l);
          }
        };
        proc.stdout?.on('data', check);
      });
    proc.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.startsWith('{')) lines.push(JSON.parse(line) as (typeof lines)[number]);
      }
    });
    proc.stderr?.on('data', (d: Buffer) => void (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));

    const url = (await waitFor((l) => /^listening on/.test(l.msg), 120_000)).url as string;
    await waitFor((l) => l.msg === 'ready', 120_000);
    expect(lines.some((l) => /RANDOM WEIGHTS/.test(l.msg) && l.weights === 'random-init (seed 0)')).toBe(true);
    // Every place that says so names the command that fetches the paper's trained weights.
    const fetchReal = 'npx resnet-onnx pull resnet200 && npm start';
    expect(lines.some((l) => /RANDOM WEIGHTS/.test(l.msg) && l.msg.includes(fetchReal))).toBe(true);
    expect(await (await fetch(`${url}/`)).text()).toContain('npx resnet-onnx pull resnet200 &#38;&#38; npm start');
    const meta = (await (await fetch(`${url}/v2/models/preact-resnet200-imagenet-seed0`)).json()) as { parameters: { warning: string } };
    expect(meta.parameters.warning).toContain(fetchReal);
    expect(existsSync(join('models', 'preact-resnet200-imagenet-seed0.onnx'))).toBe(true);

    // Four requests in flight (two batches of two at ~0.2-0.6 s per image), then SIGTERM.
    const inflight = images.slice(0, 4).map((img) => fetch(`${url}/classify`, { method: 'POST', headers: { 'Content-Type': 'image/jpeg' }, body: new Uint8Array(img) }).then(async (r) => ({ status: r.status, body: (await r.json()) as { model: string; weights: string; trained: boolean } })));
    await new Promise((r) => setTimeout(r, 300));
    proc.kill('SIGTERM');
    const shutting = await waitFor((l) => /^shutting down/.test(l.msg), 10_000);
    expect(shutting.inFlight).toBeGreaterThan(0);
    // New connections are refused once it has stopped listening.
    await new Promise((r) => setTimeout(r, 100));
    const fresh = new Promise<number>((resolve, reject) => {
      const req = request(`${url}/healthz`, { agent: false }, (res) => resolve(res.statusCode ?? 0));
      req.on('error', reject);
      req.end();
    });
    await expect(fresh).rejects.toThrow(/ECONNREFUSED/);
    const answers = await Promise.all(inflight);
    for (const a of answers) {
      expect(a.status).toBe(200);
      expect(a.body).toMatchObject({ model: 'preact-resnet200-imagenet-seed0', weights: 'random-init (seed 0)', trained: false });
      expect((a.body as { warning?: string }).warning).toContain(fetchReal);
    }
    expect(await exited).toBe(0);
    expect(lines.find((l) => l.msg === 'stopped')?.clean).toBe(true);
  });
});
