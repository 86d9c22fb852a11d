// `resnet-onnx quantize` (issue 12): the calibrated QDQ model onnxruntime fuses into QLinearConv, its accuracy
// against the float model, the SQNR report, its metadata (and how info, eval and serve show it), onnx's checker
// and OpenCV, the `export --int8` shorthand, and clear errors for calibration data and models it cannot use.
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { evaluateModel } from '../src/eval/evaluate.js';
import { exportInference } from '../src/export/inference.js';
import { onnx } from '../src/export/proto.js';
import { resolveConfig } from '../src/models/config.js';
import { openCalibrationSet } from '../src/quantize/calibration-data.js';
import { quantizeModel } from '../src/quantize/index.js';
import { Histogram, MinMax, quantiseBias, quantiseWeights, u8Params } from '../src/quantize/params.js';
import { readModelInfo } from '../src/serve/model-info.js';
import { startServer } from '../src/serve/server.js';
import { DEBIAN_FASHION_MNIST, openDataset } from '../src/train/datasets.js';
import { writeCifar10 } from './data-writers.js';
import { SKIMAGE_DATA } from './fixtures/images/make.js';
import { PYTHON, metadataOf, runCli, runOnnx, tempDir } from './helpers.js';

const FLOAT = fileURLToPath(new URL('../models/preact-resnet20-fashion-mnist.onnx', import.meta.url));
const ONNX_CHECK = fileURLToPath(new URL('./reference/onnx_check.py', import.meta.url));
const dir = tempDir('resnet-onnx-quantize-');
const int8 = join(dir, 'fm-int8.onnx');
const CALIBRATION = 128;

type Model = ReturnType<typeof onnx.ModelProto.decode>;
const decode = (path: string): Model => onnx.ModelProto.decode(readFileSync(path));
const count = (m: Model, op: string): number => (m.graph?.node ?? []).filter((n) => n.opType === op).length;
const initializer = (m: Model, name: string) => (m.graph?.initializer ?? []).find((t) => t.name === name)!;

/** The graph onnxruntime runs after its optimisations (QDQ fusion), as it saves it. */
async function optimised(path: string): Promise<Model> {
  const out = `${path}.optimised.onnx`;
  const s = await ort.InferenceSession.create(path, { graphOptimizationLevel: 'all', optimizedModelFilePath: out, logSeverityLevel: 3 });
  await s.release();
  return decode(out);
}

function run(cmd: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => execFile(cmd, args, (e, out, err) => resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out, err })));
}

/** Fashion-MNIST test images as PNG files (for the server and image folders). */
async function testImagesAsPng(folder: string, n: number): Promise<string[]> {
  mkdirSync(folder, { recursive: true });
  const d = await openDataset({ kind: 'fashion-mnist', dir: DEBIAN_FASHION_MNIST }, 'test');
  const files: string[] = [];
  for (let i = 0; i < n; i++) {
    const s = await d.read(i);
    const f = join(folder, `img${i}.png`);
    await sharp(Buffer.from(s.pixels), { raw: { width: s.width, height: s.height, channels: 1 } }).png().toFile(f);
    files.push(f);
  }
  return files;
}

beforeAll(async () => {
  const r = await runCli('quantize', FLOAT, '--calibrate', DEBIAN_FASHION_MNIST, '--calibration-images', String(CALIBRATION), '-o', int8, '-q');
  expect(r.code, r.err).toBe(0);
});

describe('the QDQ model', () => {
  it('onnxruntime fuses every convolution into QLinearConv: no float Conv is left in its optimised graph', async () => {
    const float = decode(FLOAT);
    const q = decode(int8);
    const opt = await optimised(int8);
    const ops = (opt.graph?.node ?? []).map((n) => n.opType);
    // Every float conv and every unit-opening BatchNorm (as a depthwise 1x1 conv) runs as QLinearConv.
    expect(count(q, 'Conv')).toBe(count(float, 'Conv') + count(float, 'BatchNormalization'));
    expect(ops.filter((o) => o === 'QLinearConv').length, ops.join(' ')).toBe(count(q, 'Conv'));
    expect(ops).not.toContain('Conv');
    expect(ops).not.toContain('BatchNormalization');
    // The residual additions run as QLinearAdd and the classifier as QGemm: no float tensor between the stem and the pool.
    expect(ops.filter((o) => o === 'QLinearAdd').length).toBe(count(float, 'Add'));
    expect(ops).toContain('QGemm');
  });

  it('is standard QDQ: per-channel s8 weights, u8 activations, int32 biases at input x weight scale, one DequantizeLinear per reader', () => {
    const q = decode(int8);
    const opset = (q.opsetImport ?? []).find((o) => !o.domain)!;
    expect(Number(opset.version)).toBeGreaterThanOrEqual(13);
    const nodes = q.graph?.node ?? [];
    expect(nodes.every((n) => !n.domain)).toBe(true);
    const producer = new Map(nodes.flatMap((n) => (n.output ?? []).map((o) => [o, n] as const)));
    const readers = (v: string): number => nodes.filter((n) => (n.input ?? []).includes(v)).length;
    const T = onnx.TensorProto.DataType;
    const scalar = (name: string): number => new DataView(Uint8Array.from(initializer(q, name).rawData!).buffer).getFloat32(0, true);
    for (const conv of nodes.filter((n) => n.opType === 'Conv')) {
      // The last conv of a residual branch has no bias (nothing was folded into it).
      const [x, w, b] = (conv.input ?? []).filter((i) => i !== '').map((i) => producer.get(i)!);
      for (const dq of [x, w, ...(b ? [b] : [])]) {
        expect(dq.opType, conv.name!).toBe('DequantizeLinear');
        expect(readers(dq.output![0]), `${dq.name} feeds one node`).toBe(1);
      }
      expect(producer.get(x.input![0])?.opType, `${conv.name}: its input is quantised at run time`).toBe('QuantizeLinear');
      const wq = initializer(q, w.input![0]);
      expect(wq.dataType).toBe(T.INT8);
      const channels = Number(wq.dims![0]);
      expect(Number(initializer(q, w.input![1]).dims![0]), `${conv.name}: one weight scale per output channel`).toBe(channels);
      expect(Number((w.attribute ?? []).find((a) => a.name === 'axis')?.i ?? 1)).toBe(0);
      const values = new Int8Array(Uint8Array.from(wq.rawData!).buffer);
      expect(Math.max(...values.map(Math.abs)), `${conv.name}: 7-bit weights`).toBeLessThanOrEqual(64);
      if (!b) continue;
      expect(initializer(q, b.input![0]).dataType).toBe(T.INT32);
      // Bias scale = input scale x weight scale, as QLinearConv assumes.
      const sx = scalar(producer.get(x.input![0])!.input![1]);
      const sw = new Float32Array(Uint8Array.from(initializer(q, w.input![1]).rawData!).buffer);
      const sb = new Float32Array(Uint8Array.from(initializer(q, b.input![1]).rawData!).buffer);
      for (let c = 0; c < channels; c++) expect(sb[c]).toBe(Math.fround(sx * sw[c]));
    }
    for (const qn of nodes.filter((n) => n.opType === 'QuantizeLinear')) expect(initializer(q, qn.input![2]).dataType, qn.name!).toBe(T.UINT8);
    // After a ReLU the u8 range starts at 0, so onnxruntime can drop the ReLU into the conv.
    const afterRelu = nodes.filter((n) => n.opType === 'QuantizeLinear' && producer.get(n.input![0])?.opType === 'Relu');
    expect(afterRelu.length).toBeGreaterThan(0);
    for (const qn of afterRelu) expect(Uint8Array.from(initializer(q, qn.input![2]).rawData!)[0], qn.name!).toBe(0);
  });

  it('the fused int8 kernels compute what the QDQ graph says (7-bit weights: no int16 saturation on AVX2)', async () => {
    const d = await openDataset({ kind: 'fashion-mnist', dir: DEBIAN_FASHION_MNIST }, 'test');
    const n = 64;
    const x = new Float32Array(n * 784);
    for (let i = 0; i < n; i++) {
      const s = await d.read(i);
      for (let p = 0; p < 784; p++) x[i * 784 + p] = (s.pixels[p] / 255 - 0.286) / 0.353;
    }
    const logits = async (level: 'disabled' | 'all'): Promise<Float32Array> => {
      const s = await ort.InferenceSession.create(int8, { graphOptimizationLevel: level });
      const out = await s.run({ input: new ort.Tensor('float32', x, [n, 1, 28, 28]) });
      await s.release();
      return out.logits.data as Float32Array;
    };
    const [reference, fused] = [await logits('disabled'), await logits('all')];
    let worst = 0;
    let peak = 0;
    for (let i = 0; i < reference.length; i++) {
      worst = Math.max(worst, Math.abs(reference[i] - fused[i]));
      peak = Math.max(peak, Math.abs(reference[i]));
    }
    expect(worst / peak, 'fused QLinearConv vs the QDQ graph evaluated op by op').toBeLessThan(0.02);
  });

  it('keeps the float model\'s top-1 on the test images and its accuracy within a point', async () => {
    const [f, q] = [await evaluateModel({ model: FLOAT, limit: 1000 }), await evaluateModel({ model: int8, limit: 1000 })];
    let same = 0;
    for (let i = 0; i < f.predictions.length; i++) if (f.predictions[i] >= 0 && f.predictions[i] === q.predictions[i]) same++;
    expect(same / f.images, `same top-1 on ${same} of ${f.images}`).toBeGreaterThanOrEqual(0.985);
    expect(Math.abs(q.top1 - f.top1)).toBeLessThan(0.01);
  });

  it('the same seed picks the same calibration images (identical file); another seed other images', async () => {
    const again = join(dir, 'again.onnx');
    const other = join(dir, 'other.onnx');
    for (const [out, seed] of [[again, '0'], [other, '7']]) {
      const r = await runCli('quantize', FLOAT, '--calibrate', DEBIAN_FASHION_MNIST, '--calibration-images', String(CALIBRATION), '--seed', seed, '-o', out, '-q');
      expect(r.code, r.err).toBe(0);
    }
    expect(readFileSync(again).equals(readFileSync(int8))).toBe(true);
    expect(readFileSync(other).equals(readFileSync(int8))).toBe(false);
  });

  it('other arrangements (float residuals and BatchNorms, float classifier) still fuse every conv', async () => {
    const out = join(dir, 'float-preact.onnx');
    const r = await runCli('quantize', FLOAT, '--calibrate', DEBIAN_FASHION_MNIST, '--calibration-images', '64', '--residual', 'float', '--preact', 'float', '--fc', 'float', '--method', 'minmax', '-o', out, '-q');
    expect(r.code, r.err).toBe(0);
    const ops = ((await optimised(out)).graph?.node ?? []).map((n) => n.opType);
    expect(ops.filter((o) => o === 'QLinearConv').length).toBe(count(decode(FLOAT), 'Conv'));
    expect(ops).not.toContain('Conv');
    expect(ops).toContain('BatchNormalization');
    expect(JSON.parse(metadataOf(out).quantization)).toMatchObject({ method: 'minmax', arrangement: { residual: 'float', preact: 'float', fc: 'float' } });
  });
});

describe('the committed int8 model (models/preact-resnet20-fashion-mnist-int8.onnx)', () => {
  it('scores the top-1 its metadata records on the 10,000 test images: within 0.3 points of float, the float top-1 on >= 99%', async () => {
    const committed = fileURLToPath(new URL('../models/preact-resnet20-fashion-mnist-int8.onnx', import.meta.url));
    const md = metadataOf(committed);
    const recorded = JSON.parse(md.quantization_evaluation) as { top1: number; floatTop1: number; sameTop1AsFloat: number };
    expect(JSON.parse(md.quantization)).toMatchObject({ weightBits: 7, calibration: { data: 'fashion-mnist train split', images: 512, seed: 0 } });
    expect(Math.abs(recorded.top1 - recorded.floatTop1)).toBeLessThanOrEqual(0.003);
    expect(recorded.sameTop1AsFloat).toBeGreaterThanOrEqual(0.99);
    const q = await evaluateModel({ model: committed });
    expect(q.images).toBe(10000);
    expect(q.top1).toBe(recorded.top1);
    expect(q.reported?.top1).toBe(recorded.top1); // eval sets the int8 figure, not the float model's, beside its measurement
    // Agreement with the float model on a fifth of the set (the whole set is bench/int8.ts's job).
    const f = await evaluateModel({ model: FLOAT, limit: 2000 });
    let same = 0;
    for (let i = 0; i < f.predictions.length; i++) if (f.predictions[i] >= 0 && f.predictions[i] === q.predictions[i]) same++;
    expect(same / f.images).toBeGreaterThanOrEqual(0.99);
  });
});

describe('every network this project writes', () => {
  const cases: [string, Parameters<typeof resolveConfig>[0], { fold?: boolean; probabilities?: boolean }][] = [
    ['CIFAR basic, projection A (Slice + Pad)', { dataset: 'cifar10', stages: [1, 1, 1], unit: 'basic' }, {}],
    ['CIFAR bottleneck', { dataset: 'cifar10', stages: [1, 1, 1], unit: 'bottleneck' }, {}],
    ['ImageNet basic (max pool, 1x1 projections)', { dataset: 'imagenet', stages: [1, 1, 1, 1], unit: 'basic' }, {}],
    ['post-activation (original)', { dataset: 'cifar10', stages: [2, 1, 1], unit: 'basic', activation: 'original' }, {}],
    ['shortcut gating (Sigmoid, Mul)', { dataset: 'cifar10', stages: [2, 1, 1], unit: 'basic', shortcut: { kind: 'shortcut-gating' } }, {}],
    ['--no-fold', { dataset: 'cifar10', stages: [1, 1, 1], unit: 'basic' }, { fold: false }],
    ['--probabilities', { dataset: 'cifar10', stages: [1, 1, 1], unit: 'basic' }, { probabilities: true }],
  ];
  // Real photographs (Debian's python3-skimage), calibrated on and then compared on.
  const photos = join(dir, 'photos');
  beforeAll(() => {
    mkdirSync(photos);
    for (const p of ['astronaut', 'coffee', 'chelsea', 'camera']) copyFileSync(join(SKIMAGE_DATA, `${p}.png`), join(photos, `${p}.png`));
  });

  it.each(cases)('%s: every conv fused, outputs close to the float model', async (name, req, o) => {
    const stem = join(dir, name.replace(/[^a-z0-9]+/gi, '-'));
    const cfg = resolveConfig(req);
    exportInference(cfg, { output: `${stem}.onnx`, ...o });
    const r = await quantizeModel({ model: `${stem}.onnx`, output: `${stem}-int8.onnx`, calibrate: photos, images: 4 });
    const ops = ((await optimised(`${stem}-int8.onnx`)).graph?.node ?? []).map((n) => n.opType);
    expect(ops.filter((op) => op === 'QLinearConv').length, ops.join(' ')).toBe(r.convs);
    expect(ops).not.toContain('Conv');
    // A random-init net's logits are mostly its classifier's bias: the error is measured against how much they
    // move from input to input.
    const set = await openCalibrationSet({ data: photos, images: 4, seed: 0, pre: readModelInfo(`${stem}.onnx`).preprocessing });
    const { data: x, dims } = (await set.batches(4).next()).value as { data: Float32Array; dims: number[] };
    const n = dims[0];
    for (const output of ['logits', ...(o.probabilities ? ['probabilities'] : [])]) {
      const [f, q] = [(await runOnnx(`${stem}.onnx`, x, dims, output)).data, (await runOnnx(`${stem}-int8.onnx`, x, dims, output)).data];
      const k = f.length / n;
      let err = 0;
      let spread = 0;
      for (let j = 0; j < k; j++) {
        let mean = 0;
        for (let i = 0; i < n; i++) mean += f[i * k + j] / n;
        for (let i = 0; i < n; i++) {
          err = Math.max(err, Math.abs(q[i * k + j] - f[i * k + j]));
          spread = Math.max(spread, Math.abs(f[i * k + j] - mean));
        }
      }
      expect(err / spread, `${name}: ${output}: int8 error ${err.toExponential(2)}, input-to-input spread ${spread.toExponential(2)}`).toBeLessThan(0.3);
    }
  });
});

describe('quantize --report', () => {
  it('gives the SQNR of every conv output on the calibration set, worst first', async () => {
    const out = join(dir, 'report.onnx');
    const r = await runCli('quantize', FLOAT, '--calibrate', DEBIAN_FASHION_MNIST, '--calibration-images', '32', '--report', '--json', '-o', out);
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out) as { sqnr: { layer: string; sqnrDb: number; ownSqnrDb: number }[] };
    expect(j.sqnr.length).toBe(count(decode(out), 'Conv'));
    expect(j.sqnr.map((l) => l.layer)).toContain('stem.conv');
    expect(j.sqnr.map((l) => l.layer)).toContain('stage3.unit3.conv2');
    for (let k = 1; k < j.sqnr.length; k++) expect(j.sqnr[k].sqnrDb).toBeGreaterThanOrEqual(j.sqnr[k - 1].sqnrDb);
    // A well-calibrated ResNet-20: every layer well above the noise, and each output's own rounding cleaner than the accumulated error.
    for (const l of j.sqnr) {
      expect(l.sqnrDb, l.layer).toBeGreaterThan(15);
      expect(l.ownSqnrDb, l.layer).toBeGreaterThanOrEqual(l.sqnrDb - 0.5);
    }
    const text = await runCli('quantize', FLOAT, '--calibrate', DEBIAN_FASHION_MNIST, '--calibration-images', '32', '--report', '-o', out, '--force', '-q');
    expect(text.out).toMatch(/per-layer SQNR.*worst first/);
    expect(text.out).toMatch(new RegExp(`^${j.sqnr[0].layer.replace(/\./g, '\\.')} +\\d`, 'm'));
  });
});

describe('metadata, and what reads it', () => {
  it('records the quantisation and keeps the float model\'s weights origin, labels and preprocessing', () => {
    const f = metadataOf(FLOAT);
    const m = metadataOf(int8);
    for (const key of ['weights', 'labels', 'preprocessing', 'architecture', 'resnet_onnx.config']) expect(m[key], key).toBe(f[key]);
    expect(JSON.parse(m.quantization)).toMatchObject({
      format: 'QDQ (QuantizeLinear / DequantizeLinear), opset 17',
      weightBits: 7,
      method: 'percentile 99.99',
      calibration: { data: 'fashion-mnist train split', images: CALIBRATION, seed: 0, skipped: 0 },
      arrangement: { residual: 'int8', preact: 'int8', fc: 'int8' },
      from: { file: 'preact-resnet20-fashion-mnist.onnx' },
    });
    expect(decode(int8).docString).toMatch(/Quantised to int8/);
  });

  it("onnx's checker (full check) passes; OpenCV 4.6's DNN cannot load the QDQ model (README says so)", async () => {
    const input = join(dir, 'x.bin');
    writeFileSync(input, Buffer.alloc(784 * 4));
    const r = await run(PYTHON, [ONNX_CHECK, int8, '--input', input, '--shape', '1,1,28,28', '--opencv-output', join(dir, 'y.bin')]);
    expect(r.out, r.err).toMatch(/checker ok/);
    // Exit 2: OpenCV, not the checker, refused it; its importer cannot dequantise constant (weight) inputs.
    expect(r.code, r.err).toBe(2);
    expect(r.err).toMatch(/OpenCV 4\.6\.\d readNetFromONNX cannot load .*DequantizeLinear/s);
  });

  it('info --model, eval and serve say int8', async () => {
    const info = await runCli('info', '--model', int8);
    expect(info.code, info.err).toBe(0);
    expect(info.out).toMatch(/^precision: int8 \(QDQ .*percentile 99\.99 calibration on 128 images of fashion-mnist train split/m);
    expect((await runCli('info', '--model', FLOAT)).out).toMatch(/^precision: float32$/m);
    const ev = await runCli('eval', '--model', int8, '--limit', '200', '--json', '-q');
    expect(ev.code, ev.err).toBe(0);
    expect(JSON.parse(ev.out).model).toMatchObject({ precision: 'int8', quantization: expect.stringMatching(/^int8 \(/) });
    expect(ev.err).toMatch(/the reported figure is the float model's/);

    const [png] = await testImagesAsPng(join(dir, 'served'), 1);
    const s = await startServer({ model: int8, port: 0, logLevel: 'silent' });
    try {
      await s.ready;
      const meta = (await (await fetch(`${s.url}/v2/models/fm-int8`)).json()) as { parameters: Record<string, unknown> };
      expect(meta.parameters.precision).toBe('int8');
      expect(JSON.parse(meta.parameters.quantization as string)).toMatchObject({ weightBits: 7 });
      const c = (await (await fetch(`${s.url}/classify`, { method: 'POST', body: new Uint8Array(readFileSync(png)) })).json()) as { precision: string; predictions: { label: string }[] };
      expect(c.precision).toBe('int8');
      expect(c.predictions[0].label).toBe('Ankle boot'); // test image 0
      expect(await (await fetch(`${s.url}/`)).text()).toMatch(/<p id="precision">Precision: int8 \(QDQ/);
    } finally {
      await s.close();
    }
  });
});

describe('export --int8 --calibrate (the shorthand)', () => {
  it('writes the int8 model and leaves no float temporary', async () => {
    const out = join(dir, 'exported', 'r20-int8.onnx');
    mkdirSync(join(dir, 'exported'));
    const r = await runCli('export', '--depth', '20', '--dataset', 'fashion-mnist', '--int8', '--calibrate', DEBIAN_FASHION_MNIST, '--calibration-images', '16', '-o', out, '-q');
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/wrote .*r20-int8\.onnx: .* MB/);
    expect(readdirSync(join(dir, 'exported'))).toEqual(['r20-int8.onnx']);
    expect(JSON.parse(metadataOf(out).quantization)).toMatchObject({ calibration: { images: 16 }, from: { file: 'resnet-onnx export (float, not kept)' } });
    expect(metadataOf(out).weights).toBe('random-init (seed 0)');
    const bad = await runCli('export', '--depth', '20', '--int8', '-o', join(dir, 'exported', 'x.onnx'));
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--int8 needs --calibrate DATA/);
  });
});

describe('bad input: clear errors', () => {
  const quantize = (...args: string[]) => runCli('quantize', ...args, '-q');

  it('an empty calibration folder -> exit 2', async () => {
    const empty = join(dir, 'empty');
    mkdirSync(empty);
    const r = await quantize(FLOAT, '--calibrate', empty, '-o', join(dir, 'e.onnx'));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/empty: holds no files \(searched recursively\); --calibrate needs a folder of images/);
    expect(existsSync(join(dir, 'e.onnx'))).toBe(false);
  });

  it('no decodable image -> exit 1 naming a file and why; some undecodable files are skipped and listed', async () => {
    const junk = join(dir, 'junk', 'sub');
    mkdirSync(junk, { recursive: true });
    writeFileSync(join(junk, 'notes.txt'), 'not an image');
    writeFileSync(join(junk, 'cut.png'), Buffer.from('\x89PNG\r\n\x1a\n0000'));
    const r = await quantize(FLOAT, '--calibrate', join(dir, 'junk'), '-o', join(dir, 'j.onnx'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/no calibration image could be read: all 2 files under .*junk failed \(first: .*(notes\.txt|cut\.png): /);
    expect(existsSync(join(dir, 'j.onnx'))).toBe(false);
    // Mixed with real images (in sub-folders: the search is recursive), the bad ones are skipped.
    await testImagesAsPng(join(dir, 'junk', 'pngs'), 6);
    const ok = await runCli('quantize', FLOAT, '--calibrate', join(dir, 'junk'), '--calibration-images', '8', '-o', join(dir, 'j.onnx'));
    expect(ok.code, ok.err).toBe(0);
    expect(ok.err).toMatch(/skipped 2 files that could not be read or decoded as images/);
    expect(JSON.parse(metadataOf(join(dir, 'j.onnx')).quantization).calibration).toMatchObject({ images: 6, skipped: 2 });
  });

  it('images with a channel count the model does not take -> exit 2', async () => {
    const cifar = join(dir, 'cifar-10-batches-bin');
    writeCifar10(cifar, 4);
    const r = await quantize(FLOAT, '--calibrate', cifar, '-o', join(dir, 'c.onnx'));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/cifar10 images have 3 channels, but the model takes 1 \(L\)/);
  });

  it('a model that is already quantised -> exit 2', async () => {
    const r = await quantize(int8, '--calibrate', DEBIAN_FASHION_MNIST, '-o', join(dir, 'twice.onnx'));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/fm-int8\.onnx is already quantised: int8 \(QDQ.*quantise the float model it came from/);
    // Also when the record is gone but the graph is QDQ (e.g. another tool's int8 model).
    const m = decode(int8);
    m.metadataProps = (m.metadataProps ?? []).filter((p) => p.key !== 'quantization');
    const bare = join(dir, 'bare-int8.onnx');
    writeFileSync(bare, onnx.ModelProto.encode(m).finish());
    const r2 = await quantize(bare, '--calibrate', DEBIAN_FASHION_MNIST, '-o', join(dir, 'twice.onnx'));
    expect(r2.code).toBe(2);
    expect(r2.err).toMatch(/is already quantised: it has (QuantizeLinear|DequantizeLinear) nodes/);
  });

  it('a model without preprocessing metadata -> exit 2', async () => {
    const m = decode(FLOAT);
    m.metadataProps = (m.metadataProps ?? []).filter((p) => p.key !== 'preprocessing');
    const bare = join(dir, 'no-preprocessing.onnx');
    writeFileSync(bare, onnx.ModelProto.encode(m).finish());
    const r = await quantize(bare, '--calibrate', DEBIAN_FASHION_MNIST, '-o', join(dir, 'np.onnx'));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/has no 'preprocessing' metadata, so calibration cannot prepare images the way the model expects/);
  });

  it('wrong requests -> exit 2 before any work', async () => {
    const model = join(dir, 'copy.onnx');
    copyFileSync(FLOAT, model);
    const cases: [string[], RegExp][] = [
      [[model], /--calibrate DATA is required/],
      [[model, '--calibrate', DEBIAN_FASHION_MNIST, '-o', int8], /fm-int8\.onnx already exists .*pass --force/],
      [[model, '--calibrate', DEBIAN_FASHION_MNIST, '-o', model], /is the same file as MODEL/],
      [[model, '--calibrate', join(dir, 'nope')], /--calibrate .*nope: no such folder/],
      [[model, '--calibrate', DEBIAN_FASHION_MNIST, '--method', 'minmax', '--percentile', '99'], /--percentile applies to --method percentile/],
      [[model, '--calibrate', DEBIAN_FASHION_MNIST, '--weight-bits', '4'], /--weight-bits must be 7 or 8/],
      [[join(dir, 'missing.onnx'), '--calibrate', DEBIAN_FASHION_MNIST], /MODEL .*missing\.onnx: no such file/],
    ];
    for (const [args, message] of cases) {
      const r = await quantize(...args);
      expect(r.code, `${args.join(' ')}: ${r.err}`).toBe(2);
      expect(r.err).toMatch(message);
    }
  });
});

describe('quantisation arithmetic', () => {
  it('u8 parameters hold 0 exactly; a ReLU range has zero point 0', () => {
    expect(u8Params({ min: 0, max: 2.55 })).toEqual({ scale: Math.fround(0.01), zeroPoint: 0 });
    const p = u8Params({ min: -1, max: 3 });
    expect(p.zeroPoint).toBe(64);
    expect(u8Params({ min: 0.5, max: 1 }).zeroPoint).toBe(0); // widened to 0
    expect(u8Params({ min: 0, max: 0 })).toEqual({ scale: 1, zeroPoint: 0 });
  });

  it('weights: symmetric per output channel within +-qmax; biases at input x weight scale; a bias too large for int32 raises the weight scale', () => {
    const w = Float32Array.of(0.5, -1, 0.25, 0.01, -0.02, 0.005);
    const q = quantiseWeights(w, 2, 0.1, undefined, 64);
    expect(Array.from(q.values)).toEqual([32, -64, 16, 32, -64, 16]);
    expect(q.scales[0]).toBe(Math.fround(1 / 64));
    const b = quantiseBias(Float32Array.of(1, -2), 0.1, q.scales);
    expect(b.values[0]).toBe(Math.round(1 / Math.fround(0.1 * q.scales[0])));
    const huge = quantiseWeights(Float32Array.of(1e-9, 1e-9), 1, 1e-3, Float32Array.of(1e6), 64);
    const hb = quantiseBias(Float32Array.of(1e6), 1e-3, huge.scales);
    expect(Math.abs(hb.values[0])).toBeLessThanOrEqual(2147483647);
    expect(hb.values[0] * hb.scales[0]).toBeCloseTo(1e6, -3);
  });

  it('the percentile histogram agrees with the sorted values across growing batches', () => {
    const values: number[] = [];
    const h = new Histogram(99);
    const mm = new MinMax();
    for (let b = 0; b < 5; b++) {
      // Each batch reaches further, so the histogram's limit doubles and its bins merge.
      const batch = Float32Array.from({ length: 2000 }, (_, i) => Math.sin(i * 12.9898 + b) * (b + 1) * (i % 7 === 0 ? -0.3 : 1));
      values.push(...batch);
      h.add(batch);
      mm.add(batch);
    }
    const sorted = [...values].sort((a, b) => a - b);
    const exact = { min: sorted[Math.floor(0.01 * sorted.length)], max: sorted[Math.ceil(0.99 * sorted.length) - 1] };
    const r = h.range();
    const width = mm.max - mm.min;
    expect(Math.abs(r.max - exact.max) / width).toBeLessThan(0.01);
    expect(Math.abs(r.min - exact.min) / width).toBeLessThan(0.01);
    expect(mm.range()).toEqual({ min: sorted[0], max: sorted[sorted.length - 1] });
  });
});
