// int8 against float, measured in one run (issue 12's targets), in four parts:
//  latency  ResNet-200 @1x3x320x320: float, ours (`resnet-onnx quantize`) and onnxruntime's own Python quantiser
//           (quantize_static: QDQ, per-channel, u8/s8, MinMax) on the same calibration tensors, run alternately
//           (float, ours, theirs, float, ...), medians; file sizes. Also the arrangements of the pre-activation
//           structure (--residual / --preact float or int8) with --arrangements.
//  serve    the server's throughput (POST /classify, one photo, autocannon) with the float and the int8 ResNet-200,
//           alternating windows, images/s over all windows of each.
//  accuracy the Fashion-MNIST model in models/ quantised with 512 training images (ours: percentile and minmax;
//           onnxruntime's: MinMax with and without reduce_range) on the 10,000 test images: top-1, and how often
//           the int8 top-1 is the float top-1. --write-model writes ours as models/<name>-int8.onnx with its figures.
//  roof     this CPU's conv kernels alone, float against int8 (also printed after the latency table).
// onnxruntime's quantiser needs Python onnxruntime 1.30 and onnx 1.23 (a venv, see BENCHMARKS.md; --python).
// Usage: npx tsx bench/int8.ts [--part latency,serve,accuracy,roof] [--runs 15] [--calibration-images 16]
//        [--python bench/out/venv-ort/bin/python] [--serve-seconds 60] [--serve-rounds 3] [--arrangements] [--write-model]

import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, statSync, writeSync, closeSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { evaluateModel } from '../src/eval/evaluate.js';
import { exportInference } from '../src/export/inference.js';
import { resolveConfig } from '../src/models/config.js';
import { openCalibrationSet } from '../src/quantize/calibration-data.js';
import { quantizeModel } from '../src/quantize/index.js';
import { DTYPE, type ModelProto, type NodeProto, attrs, encodeModel, readModel, tensor, writeModel } from '../src/quantize/onnx-model.js';
import { type OnnxTypes, onnx } from '../src/export/proto.js';
import { type Arrangement, activationParams, calibrationTargets, planQuantisation, rewriteQdq } from '../src/quantize/qdq.js';
import { readModelInfo } from '../src/serve/model-info.js';
import { DEBIAN_FASHION_MNIST } from '../src/train/datasets.js';

const { values } = parseArgs({
  options: {
    part: { type: 'string', default: 'latency,serve,accuracy' },
    runs: { type: 'string', default: '15' },
    threads: { type: 'string', default: '2' },
    'calibration-images': { type: 'string', default: '16' },
    python: { type: 'string', default: process.env.RESNET_ONNX_ORT_PYTHON ?? join('bench', 'out', 'venv-ort', 'bin', 'python') },
    'serve-seconds': { type: 'string', default: '60' },
    'serve-rounds': { type: 'string', default: '3' },
    arrangements: { type: 'boolean', default: false },
    'write-model': { type: 'boolean', default: false },
  },
});
const parts = new Set(values.part.split(','));
const runs = Number(values.runs);
const threads = Number(values.threads);
const out = join('bench', 'out', 'int8');
mkdirSync(out, { recursive: true });
const SKIMAGE = '/usr/lib/python3/dist-packages/skimage/data';
const python = existsSync(values.python) ? values.python : undefined;
const median = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const mb = (path: string): number => statSync(path).size / 1e6;
const log = (s: string): boolean => process.stderr.write(`${s}\n`);
console.log(`bench/int8.ts: onnxruntime-node ${ort.env.versions.common}, ${threads} threads, load average at start ${loadavg()[0].toFixed(2)}`);
if (!python) console.log(`note: no Python with onnxruntime at ${values.python} (--python): onnxruntime's quantiser is left out`);

/** The same preprocessed calibration tensors our quantiser used, as raw float32 for the Python quantiser. */
async function dumpCalibration(model: string, data: string, images: number, file: string): Promise<string> {
  const info = readModelInfo(model);
  const set = await openCalibrationSet({ data, images, seed: 0, pre: info.preprocessing, modelDataset: info.metadata.dataset });
  const fd = openSync(file, 'w');
  let n = 0;
  let dims: number[] = [];
  for await (const b of set.batches(64)) {
    writeSync(fd, new Uint8Array(b.data.buffer, b.data.byteOffset, b.data.byteLength));
    n += b.dims[0];
    dims = b.dims;
  }
  closeSync(fd);
  return [n, ...dims.slice(1)].join(',');
}

/** onnxruntime's quantize_static on `model` (bench/ort_quantize.py); undefined without the Python wheels. */
function ortQuantize(model: string, output: string, calib: string, shape: string, extra: string[] = []): string | undefined {
  if (!python) return undefined;
  const t = performance.now();
  // Its warnings (pre-processing advice, BN weights it cannot quantise per channel) go to a log; a failure throws with them.
  execFileSync(python, ['bench/ort_quantize.py', '--model', model, '--out', output, '--calib', calib, '--shape', shape, ...extra], { stdio: ['ignore', 'ignore', openSync(join(out, 'ort_quantize.log'), 'a')] });
  log(`onnxruntime quantize_static ${extra.join(' ')}: ${((performance.now() - t) / 1000).toFixed(1)} s`);
  return output;
}

/**
 * What this CPU's conv kernels give int8 at best, without the rest of a network: a chain of eight 3x3 convs with
 * ReLU, 128 -> 128 channels at 40x40 (ResNet-200's stage-2 conv2), in float and through our QDQ rewrite, alternating.
 * x86 without VNNI multiplies u8 x s8 with vpmaddubsw: about twice float32 at best, not VNNI's 3.5x.
 */
async function convRoof(): Promise<{ float: number; int8: number }> {
  const c = 128;
  const size = 40;
  const layers = 8;
  const nodes: NodeProto[] = [];
  const inits = [];
  let x = 'input';
  for (let k = 0; k < layers; k++) {
    const w = Float32Array.from({ length: c * c * 9 }, (_, i) => (((i * 2654435761) >>> 0) / 2 ** 32 - 0.5) * 0.1);
    inits.push(tensor(`w${k}`, DTYPE.float, [c, c, 3, 3], w), tensor(`b${k}`, DTYPE.float, [c], new Float32Array(c)));
    nodes.push({ name: `conv${k}`, opType: 'Conv', input: [x, `w${k}`, `b${k}`], output: [`c${k}`], attribute: attrs({ kernel_shape: [3, 3], pads: [1, 1, 1, 1] }) });
    nodes.push({ name: `relu${k}`, opType: 'Relu', input: [`c${k}`], output: [`r${k}`], attribute: [] });
    x = `r${k}`;
  }
  const T = onnx.TensorProto.DataType;
  const valueInfo = (name: string): OnnxTypes.IValueInfoProto => ({ name, type: { tensorType: { elemType: T.FLOAT, shape: { dim: [{ dimValue: 1 }, { dimValue: c }, { dimValue: size }, { dimValue: size }] } } } });
  const float = { irVersion: 8, opsetImport: [{ domain: '', version: 17 }], graph: { name: 'roof', node: nodes, input: [valueInfo('input')], output: [valueInfo(x)], initializer: inits } } as ModelProto;
  const a: Arrangement = { residual: 'int8', preact: 'int8', fc: 'int8' };
  const plan = planQuantisation(float, a);
  const ranges = new Map(calibrationTargets(plan).map((t) => [t, { min: t === 'input' ? -1 : 0, max: 4 }]));
  const int8 = rewriteQdq(float, plan, activationParams(plan, ranges), { weightBits: 7 });
  const opts = { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' as const };
  const [sf, si] = [await ort.InferenceSession.create(encodeModel(float), opts), await ort.InferenceSession.create(encodeModel(int8), opts)];
  const input = new ort.Tensor('float32', Float32Array.from({ length: c * size * size }, (_, i) => (i % 17) / 17), [1, c, size, size]);
  const tf: number[] = [];
  const ti: number[] = [];
  for (let r = 0; r < 3 + runs; r++)
    for (const [s, t] of [[sf, tf], [si, ti]] as const) {
      const t0 = performance.now();
      await s.run({ input });
      if (r >= 3) t.push(performance.now() - t0);
    }
  await sf.release();
  await si.release();
  const ops = 2 * layers * c * c * 9 * size * size;
  return { float: ops / (median(tf) / 1000) / 1e9, int8: ops / (median(ti) / 1000) / 1e9 };
}

async function latency(): Promise<void> {
  const float = join('models', 'preact-resnet200-imagenet-seed0.onnx');
  if (!existsSync(float)) exportInference(resolveConfig({ depth: 200 }), { output: float });
  const photos = join(out, 'photos');
  mkdirSync(photos, { recursive: true });
  for (const f of readdirSync(SKIMAGE).filter((n) => /\.(png|jpg)$/.test(n))) copyFileSync(join(SKIMAGE, f), join(photos, f));
  const images = Number(values['calibration-images']);
  const arrangements: [string, Partial<Arrangement>][] = [['int8 residuals, BN as depthwise int8 (default)', {}]];
  if (values.arrangements)
    arrangements.push(
      ['float residuals, BN as depthwise int8', { residual: 'float' }],
      ['int8 residuals (QLinearAdd), float BN', { preact: 'float' }],
      ['float residuals, float BN', { residual: 'float', preact: 'float' }],
      ['default, float classifier', { fc: 'float' }],
    );
  const models: [string, string][] = [['float', float]];
  for (const [k, [name, a]] of arrangements.entries()) {
    const output = join(out, `r200-int8-${k}.onnx`);
    const t = performance.now();
    await quantizeModel({ model: float, output, calibrate: photos, images, arrangement: a });
    log(`ours (${name}): ${((performance.now() - t) / 1000).toFixed(1)} s`);
    models.push([`ours: ${name}`, output]);
  }
  const calib = join(out, 'r200-calibration.f32');
  const theirs = ortQuantize(float, join(out, 'r200-ort.onnx'), calib, await dumpCalibration(float, photos, images, calib));
  if (theirs) models.push(["onnxruntime's quantize_static (QDQ, per-channel, u8/s8, MinMax)", theirs]);

  const sessions = await Promise.all(models.map(([, p]) => ort.InferenceSession.create(p, { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' })));
  const x = new ort.Tensor('float32', Float32Array.from({ length: 3 * 320 * 320 }, () => Math.random() * 2 - 1), [1, 3, 320, 320]);
  const times = models.map(() => [] as number[]);
  for (let i = 0; i < 2 + runs; i++)
    for (const [k, s] of sessions.entries()) {
      const t = performance.now();
      await s.run({ input: x });
      if (i >= 2) times[k].push(performance.now() - t);
    }
  for (const s of sessions) await s.release();
  const f = median(times[0]);
  const ourMs = median(times[1]);
  const roof = await convRoof();
  console.log(`\nResNet-200 @1x3x320x320, ${threads} threads, ${runs} alternating runs each, medians; calibration: ${images} photos (skimage), seed 0`);
  console.log('| model | median latency | vs float | vs ours (default) | file |');
  console.log('| --- | --- | --- | --- | --- |');
  for (const [k, [name, path]] of models.entries()) {
    const m = median(times[k]);
    console.log(`| ${name} | ${m.toFixed(1)} ms | ${(m / f).toFixed(3)}x | ${(m / ourMs).toFixed(2)}x | ${mb(path).toFixed(1)} MB (${(mb(path) / mb(float)).toFixed(3)}x) |`);
  }
  console.log(`\nthis CPU's conv kernels alone, same run (8 x conv 3x3 128->128 at 40x40 + ReLU): float32 ${roof.float.toFixed(0)} GFLOP/s, int8 (QLinearConv) ${roof.int8.toFixed(0)} GOP/s: int8 takes ${(roof.float / roof.int8).toFixed(3)}x the float time`);
}

async function serveThroughput(): Promise<void> {
  const float = join('models', 'preact-resnet200-imagenet-seed0.onnx');
  const int8 = join(out, 'r200-int8-0.onnx');
  if (!existsSync(int8)) throw new Error(`${int8} is missing: run --part latency first`);
  const photo = await sharp(join(SKIMAGE, 'coffee.png')).jpeg({ quality: 90 }).toBuffer();
  const seconds = Number(values['serve-seconds']);
  const rounds = Number(values['serve-rounds']);
  const start = async (model: string): Promise<{ stop: () => void; url: string }> => {
    const logPath = join(out, 'serve.log');
    const fd = openSync(logPath, 'w');
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/bin.ts', 'serve', '--model', model, '--port', '0', '--max-batch', '8', '--max-queue', '256', '--deadline-ms', '600000'], { stdio: ['ignore', fd, 'inherit'] });
    for (let i = 0; i < 1200; i++) {
      await new Promise((r) => setTimeout(r, 200));
      const text = readFileSync(logPath, 'utf8');
      const url = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(text)?.[1];
      if (url && text.includes('"msg":"ready"')) return { url, stop: () => child.kill('SIGTERM') };
      if (child.exitCode !== null) throw new Error(`server exited: ${text}`);
    }
    throw new Error('server did not become ready');
  };
  const rates: Record<string, number[]> = { float: [], int8: [] };
  for (let r = 0; r < rounds; r++)
    for (const [name, model] of [['float', float], ['int8', int8]] as const) {
      const s = await start(model);
      try {
        await autocannon({ url: `${s.url}/classify`, method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: photo, connections: 8, duration: Math.min(10, seconds), timeout: 600 });
        const res = await autocannon({ url: `${s.url}/classify`, method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: photo, connections: 8, duration: seconds, timeout: 600 });
        rates[name].push(res.requests.total / seconds);
        log(`serve ${name} round ${r + 1}: ${res.requests.total} answers in ${seconds} s (${res.non2xx} non-2xx)`);
      } finally {
        s.stop();
      }
    }
  // Over all windows together: with a few answers per window, a median of two or three would be mostly noise.
  const mean = (a: number[]): number => a.reduce((x, y) => x + y, 0) / a.length;
  const [f, q] = [mean(rates.float), mean(rates.int8)];
  console.log(`\nserver throughput, ResNet-200 @320, POST /classify (coffee.png as JPEG), 8 connections, --max-batch 8, ${rounds} alternating windows of ${seconds} s each`);
  console.log('| model | images/s (all windows) | per window | vs float |');
  console.log('| --- | --- | --- | --- |');
  console.log(`| float | ${f.toFixed(2)} | ${rates.float.map((v) => v.toFixed(2)).join(', ')} | 1.00x |`);
  console.log(`| int8 (ours) | ${q.toFixed(2)} | ${rates.int8.map((v) => v.toFixed(2)).join(', ')} | ${(q / f).toFixed(2)}x |`);
}

async function accuracy(): Promise<void> {
  const float = join('models', 'preact-resnet20-fashion-mnist.onnx');
  const images = 512;
  const ours: [string, string, () => Promise<unknown>][] = [
    ['ours, percentile 99.99 (default)', join(out, 'fm-int8-percentile.onnx'), () => quantizeModel({ model: float, output: join(out, 'fm-int8-percentile.onnx'), calibrate: DEBIAN_FASHION_MNIST, images })],
    ['ours, minmax', join(out, 'fm-int8-minmax.onnx'), () => quantizeModel({ model: float, output: join(out, 'fm-int8-minmax.onnx'), calibrate: DEBIAN_FASHION_MNIST, images, method: { kind: 'minmax' } })],
    ['ours, minmax, 8-bit weights', join(out, 'fm-int8-minmax-w8.onnx'), () => quantizeModel({ model: float, output: join(out, 'fm-int8-minmax-w8.onnx'), calibrate: DEBIAN_FASHION_MNIST, images, method: { kind: 'minmax' }, weightBits: 8 })],
  ];
  const rows: [string, string][] = [];
  for (const [name, path, make] of ours) {
    await make();
    rows.push([name, path]);
  }
  const calib = join(out, 'fm-calibration.f32');
  const shape = await dumpCalibration(float, DEBIAN_FASHION_MNIST, images, calib);
  for (const [name, file, extra] of [
    ["onnxruntime's quantize_static, MinMax", 'fm-ort-minmax.onnx', []],
    ["onnxruntime's quantize_static, MinMax, reduce_range", 'fm-ort-minmax-rr.onnx', ['--reduce-range']],
  ] as [string, string, string[]][]) {
    const p = ortQuantize(float, join(out, file), calib, shape, extra);
    if (p) rows.push([name, p]);
  }
  const f = await evaluateModel({ model: float });
  console.log(`\nFashion-MNIST pre-act ResNet-20 (models/), calibrated on ${images} training images (seed 0), 10,000 test images`);
  console.log('| model | top-1 | vs float | same top-1 as float | file |');
  console.log('| --- | --- | --- | --- | --- |');
  console.log(`| float | ${(100 * f.top1).toFixed(2)}% | | | ${mb(float).toFixed(2)} MB |`);
  const figures = new Map<string, { top1: number; top5: number; same: number }>();
  for (const [name, path] of rows) {
    const r = await evaluateModel({ model: path });
    let same = 0;
    for (let i = 0; i < r.predictions.length; i++) if (r.predictions[i] >= 0 && r.predictions[i] === f.predictions[i]) same++;
    figures.set(path, { top1: r.top1, top5: r.top5, same: same / r.images });
    console.log(`| ${name} | ${(100 * r.top1).toFixed(2)}% | ${(100 * (r.top1 - f.top1)).toFixed(2)} points | ${((100 * same) / r.images).toFixed(2)}% | ${mb(path).toFixed(2)} MB |`);
  }
  if (values['write-model']) {
    const path = rows[0][1];
    const fig = figures.get(path)!;
    const target = join('models', 'preact-resnet20-fashion-mnist-int8.onnx');
    const m = readModel(path);
    const evaluation = { data: 'fashion-mnist test split (10,000 images)', top1: fig.top1, top5: fig.top5, floatTop1: f.top1, sameTop1AsFloat: Number(fig.same.toFixed(4)), by: 'bench/int8.ts' };
    m.metadataProps = [
      ...(m.metadataProps ?? []).filter((p) => p.key !== 'reported_accuracy' && p.key !== 'quantization_evaluation'),
      { key: 'reported_accuracy', value: JSON.stringify({ top1: fig.top1, top5: fig.top5 }) },
      { key: 'quantization_evaluation', value: JSON.stringify(evaluation) },
    ] as typeof m.metadataProps;
    writeModel(m, target);
    console.log(`\nwrote ${target} (${mb(target).toFixed(2)} MB) with its figures in its metadata (reported_accuracy, quantization_evaluation)`);
  }
}

if (parts.has('roof')) {
  const roof = await convRoof();
  console.log(`conv roof: float32 ${roof.float.toFixed(0)} GFLOP/s, int8 ${roof.int8.toFixed(0)} GOP/s: ${(roof.float / roof.int8).toFixed(3)}x`);
}
if (parts.has('latency')) await latency();
if (parts.has('serve')) await serveThroughput();
if (parts.has('accuracy')) await accuracy();
console.log(`\nload average at the end ${loadavg()[0].toFixed(2)} (the machine's 2 cores are shared with other work: compare ratios within this run)`);
