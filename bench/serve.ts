// Load benchmark of `resnet-onnx serve`: throughput and p50/p99 latency of POST /classify (a real photograph,
// JPEG) at several concurrencies, driven by autocannon over loopback, against the raw onnxruntime throughput of
// the same model without HTTP measured in this run (server / raw as a ratio); then the server's memory before
// and after a fixed-length soak. Bounded: roughly (levels x duration + soak + 2 x raw) seconds.
// The server runs from the sources through tsx (as the tests do), in its own process.
// Usage: npx tsx bench/serve.ts [--depth 200] [--duration 20] [--concurrency 1,4,16] [--soak 60] [--max-batch 8]

import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { exportInference } from '../src/export/inference.js';
import { resolveConfig } from '../src/models/config.js';

const { values } = parseArgs({
  options: {
    depth: { type: 'string', default: '200' },
    duration: { type: 'string', default: '20' },
    concurrency: { type: 'string', default: '1,4,16' },
    soak: { type: 'string', default: '60' },
    'soak-concurrency': { type: 'string', default: '8' },
    'max-batch': { type: 'string', default: '8' },
    'raw-seconds': { type: 'string', default: '10' },
  },
});
const depth = Number(values.depth);
const duration = Number(values.duration);
const levels = values.concurrency.split(',').map(Number);
const soakS = Number(values.soak);
const soakC = Number(values['soak-concurrency']);
const maxBatch = Number(values['max-batch']);
const rawS = Number(values['raw-seconds']);
const threads = availableParallelism();
const out = join('bench', 'out');
mkdirSync(out, { recursive: true });

// The model: the served default for ResNet-200, else an export into bench/out.
const cfg = resolveConfig({ depth, dataset: 'imagenet' });
const model = depth === 200 ? join('models', 'preact-resnet200-imagenet-seed0.onnx') : join(out, `serve-resnet${depth}.onnx`);
if (!existsSync(model)) exportInference(cfg, { output: model });
const photo = await sharp('/usr/lib/python3/dist-packages/skimage/data/coffee.png').jpeg({ quality: 90 }).toBuffer();

/**
 * Images per second of onnxruntime alone at batch 1 and at the max batch, same threads as the server's single
 * worker, with thread spinning on and off (the server turns it off); the best of each counts.
 */
async function rawThroughput(): Promise<{ n: number; imgPerS: number; msPerBatch: number; spinning: boolean }[]> {
  const best = new Map<number, { n: number; imgPerS: number; msPerBatch: number; spinning: boolean }>();
  for (const spinning of [true, false]) {
    const session = await ort.InferenceSession.create(model, {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      extra: { session: { intra_op: { allow_spinning: spinning ? '1' : '0' } } },
    });
    for (const n of [...new Set([1, maxBatch])]) {
      const x = new ort.Tensor('float32', Float32Array.from({ length: n * 3 * 320 * 320 }, () => Math.random() * 2 - 1), [n, 3, 320, 320]);
      await session.run({ input: x });
      let runs = 0;
      const t0 = performance.now();
      while (performance.now() - t0 < rawS * 1000 || runs < 3) {
        await session.run({ input: x });
        runs++;
      }
      const s = (performance.now() - t0) / 1000;
      const r = { n, imgPerS: (runs * n) / s, msPerBatch: (1000 * s) / runs, spinning };
      if (!best.has(n) || (best.get(n)?.imgPerS ?? 0) < r.imgPerS) best.set(n, r);
    }
    await session.release();
  }
  return [...best.values()];
}

async function startServer(): Promise<{ child: ChildProcess; url: string }> {
  const logPath = join(out, `serve-${depth}.log`);
  const log = openSync(logPath, 'w');
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/bin.ts', 'serve', '--model', model, '--port', '0', '--max-batch', String(maxBatch), '--max-queue', '256', '--deadline-ms', '120000'], { stdio: ['ignore', log, 'inherit'] });
  for (let i = 0; i < 600; i++) {
    await new Promise((r) => setTimeout(r, 200));
    const text = readFileSync(logPath, 'utf8');
    const url = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(text)?.[1];
    if (url && text.includes('"msg":"ready"')) return { child, url };
    if (child.exitCode !== null) throw new Error(`server exited: ${text}`);
  }
  throw new Error('server did not become ready in 120 s');
}

async function memory(url: string): Promise<{ rssMb: number; heapMb: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const get = (name: string): number => Number(new RegExp(`^${name} ([0-9.e+]+)`, 'm').exec(text)?.[1] ?? NaN) / 1e6;
  return { rssMb: get('process_resident_memory_bytes'), heapMb: get('nodejs_heap_size_used_bytes') };
}

async function batchSizes(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const get = (name: string): number => Number(new RegExp(`^${name} ([0-9.e+]+)`, 'm').exec(text)?.[1] ?? NaN);
  return get('inference_batch_size_sum') / get('inference_batch_size_count');
}

function load(url: string, connections: number, seconds: number): Promise<autocannon.Result> {
  return autocannon({ url: `${url}/classify`, method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: photo, connections, duration: seconds, timeout: 120 });
}

console.error(`raw onnxruntime: ${model}, ${threads} threads ...`);
const loadBefore = loadavg()[0];
const [raw1, rawB = raw1] = await rawThroughput();
const raw = Math.max(raw1.imgPerS, rawB.imgPerS);

const { child, url } = await startServer();
const rows: { c: number; rps: number; p50: number; p99: number; ok: number; non2xx: number; errors: number; meanBatch: number; decodeMs: number; inferMsPerImage: number }[] = [];
try {
  await load(url, 1, Math.min(5, duration)); // warm-up
  const start = await memory(url);
  for (const c of levels) {
    console.error(`load: ${c} connections for ${duration} s ...`);
    const b0 = await (await fetch(`${url}/metrics`)).text();
    const r = await load(url, c, duration);
    const b1 = await (await fetch(`${url}/metrics`)).text();
    const delta = (name: string): number => {
      const get = (t: string): number => Number(new RegExp(`^${name} ([0-9.e+]+)`, 'm').exec(t)?.[1] ?? 0);
      return get(b1) - get(b0);
    };
    rows.push({
      c,
      rps: r['2xx'] / r.duration,
      p50: r.latency.p50,
      p99: r.latency.p99,
      ok: r['2xx'],
      non2xx: r.non2xx,
      errors: r.errors,
      meanBatch: delta('inference_batch_size_sum') / delta('inference_batch_size_count'),
      decodeMs: (1000 * delta('image_decode_seconds_sum')) / delta('image_decode_seconds_count'),
      inferMsPerImage: (1000 * delta('inference_duration_seconds_sum')) / delta('inference_batch_size_sum'),
    });
  }
  // Memory before the soak is taken after the levels above, so onnxruntime's arena has already grown to the
  // largest batch: what changes during the soak is what a leak would show.
  const before = await memory(url);
  console.error(`soak: ${soakC} connections for ${soakS} s ...`);
  const soak = await load(url, soakC, soakS);
  const after = await memory(url);
  const overallBatch = await batchSizes(url);

  const label = depth === 200 ? 'ResNet-200 (the served default, random-init)' : `ResNet-${depth} (random-init)`;
  const lines = [
    `${label}, POST /classify of a 600x400 JPEG (skimage coffee) -> 320x320 crop; ${threads} cores; server: 1 worker x ${threads} onnxruntime threads, max batch ${maxBatch}, max delay 10 ms; autocannon ${duration} s per level over loopback; onnxruntime-node ${ort.env.versions.common}`,
    '',
    `Raw onnxruntime, same model and threads, no HTTP: batch 1 ${raw1.imgPerS.toFixed(2)} img/s (${raw1.msPerBatch.toFixed(0)} ms), batch ${maxBatch} ${rawB.imgPerS.toFixed(2)} img/s (${rawB.msPerBatch.toFixed(0)} ms per batch), each the better of thread spinning on/off. Baseline = the better batch: ${raw.toFixed(2)} img/s.`,
    `Machine load average (1 min) at the start ${loadBefore.toFixed(2)}, at the end ${loadavg()[0].toFixed(2)} (2 cores; other work on the machine skews both sides).`,
    '',
    '| connections | throughput | vs raw onnxruntime | p50 latency | p99 latency | mean batch formed | server: decode per image | server: inference per image | 2xx | non-2xx | errors |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows.map(
      (r) =>
        `| ${r.c} | ${r.rps.toFixed(2)} req/s | ${(r.rps / raw).toFixed(2)}x | ${r.p50.toFixed(0)} ms | ${r.p99.toFixed(0)} ms | ${r.meanBatch.toFixed(2)} | ${r.decodeMs.toFixed(1)} ms | ${r.inferMsPerImage.toFixed(1)} ms | ${r.ok} | ${r.non2xx} | ${r.errors} |`,
    ),
    '',
    `Soak: ${soakC} connections for ${soakS} s, ${soak['2xx']} answered (${(soak['2xx'] / soak.duration).toFixed(2)} req/s, p99 ${soak.latency.p99.toFixed(0)} ms, ${soak.non2xx} non-2xx, ${soak.errors} errors). Server RSS ${start.rssMb.toFixed(0)} MB after warm-up at 1 connection; ${before.rssMb.toFixed(0)} MB before the soak -> ${after.rssMb.toFixed(0)} MB after it (JS heap ${before.heapMb.toFixed(1)} -> ${after.heapMb.toFixed(1)} MB). Mean batch over the whole run: ${overallBatch.toFixed(2)}.`,
  ];
  console.log(lines.join('\n'));
  writeFileSync(join(out, `serve-${depth}.json`), JSON.stringify({ depth, threads, raw1, rawB, rows, soak: { s: soakS, c: soakC, ok: soak['2xx'], p99: soak.latency.p99, non2xx: soak.non2xx }, start, before, after }, null, 2));
} finally {
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
}
