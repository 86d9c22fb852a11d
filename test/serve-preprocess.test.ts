// Preprocessing and model metadata without HTTP: the metadata reader (no weights loaded), preprocessing other
// than ImageNet's 320/320 (resize != crop, grey models, BGR), and the PIL-compatible upscaler.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { exportInference } from '../src/export/inference.js';
import { decodeMeanImage, docString, encodeMeanImage, modelMetadata, perPixelPreprocessing } from '../src/export/metadata.js';
import { onnx } from '../src/export/proto.js';
import { writeOnnx } from '../src/export/onnx.js';
import { resolveConfig } from '../src/models/config.js';
import { type Preprocessing, datasetPreprocessing } from '../src/models/labels.js';
import { buildResNet } from '../src/models/preact.js';
import { ServeError } from '../src/serve/errors.js';
import { ModelFileError, readModelInfo } from '../src/serve/model-info.js';
import { normalise, prepareImage, resampleCrop } from '../src/serve/preprocess.js';
import { startServer } from '../src/serve/server.js';
import { tritonConfig } from '../src/serve/triton.js';
import { PYTHON, SKIMAGE_DATA } from './fixtures/images/make.js';
import { tempDir } from './helpers.js';

const dir = tempDir('resnet-onnx-serve-pre-');
const imagenet: Preprocessing = { resize: 320, crop: 320, scale: 1 / 255, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], channelOrder: 'RGB', layout: 'NCHW', interpolation: 'bilinear' };
const limits = { maxPixels: 40_000_000, minSide: 16 };
let coffee: Buffer;

beforeAll(() => {
  coffee = readFileSync(join(SKIMAGE_DATA, 'coffee.png'));
});

describe('model metadata', () => {
  it('reads labels, preprocessing and the weights status of an exported model', () => {
    const path = join(dir, 'r18.onnx');
    exportInference(resolveConfig({ depth: 18 }), { output: path, seed: 7 });
    const info = readModelInfo(path);
    expect(info.name).toBe('r18');
    expect(info.weights).toBe('random-init (seed 7)');
    expect(info.randomWeights).toBe(true);
    expect(info.labels).toHaveLength(1000);
    expect(info.labels[0]).toBe('tench');
    expect(info.preprocessing).toMatchObject({ resize: 320, crop: 320, channelOrder: 'RGB' });
    expect(info.defaultPreprocessing).toBe(false);
    expect(info.architecture).toMatch(/ResNet-18/);
  });

  it('a model without metadata gets the ImageNet default (320 / 320) and is treated as untrained', () => {
    const path = join(dir, 'bare.onnx');
    writeOnnx(buildResNet(resolveConfig({ dataset: 'imagenet', stages: [1], unit: 'basic' })), path, {});
    const info = readModelInfo(path);
    expect(info.preprocessing).toMatchObject({ resize: 320, crop: 320 });
    expect(info.defaultPreprocessing).toBe(true);
    expect(info.randomWeights).toBe(true);
    expect(info.labels).toEqual([]);
  });

  it('trained weights are reported as such; bad metadata is a clear error', () => {
    const g = buildResNet(resolveConfig({ dataset: 'imagenet', stages: [1], unit: 'basic' }));
    const trained = join(dir, 'trained.onnx');
    writeOnnx(g, trained, { metadata: { weights: 'imported from model.t7', labels: '["a","b"]' } });
    expect(readModelInfo(trained)).toMatchObject({ weights: 'imported from model.t7', randomWeights: false, labels: ['a', 'b'] });
    const bad = join(dir, 'bad.onnx');
    writeOnnx(g, bad, { metadata: { preprocessing: '{"resize": 320, "crop": 400}' } });
    expect(() => readModelInfo(bad)).toThrow(/crop 400 is larger than the resized shorter side 320/);
    writeOnnx(g, bad, { metadata: { labels: 'not json' } });
    expect(() => readModelInfo(bad)).toThrow(ModelFileError);
  });

  it('a file that is not ONNX is refused, not misread', () => {
    const path = join(dir, 'junk.onnx');
    writeFileSync(path, Buffer.from('this is not a protobuf file at all, just text'));
    expect(() => readModelInfo(path)).toThrow(ModelFileError);
  });
});

describe("a per-pixel model's mean image (the paper's CIFAR normalisation)", () => {
  const cifar = resolveConfig({ dataset: 'cifar10', stages: [1], unit: 'basic' });
  // Pixel values with fractions, as a training split's mean is; seeded so a failure reproduces.
  const meanValues = Float32Array.from({ length: 3 * 32 * 32 }, (_, i) => ((i * 7919) % 25500) / 100);
  const perPixel = perPixelPreprocessing(datasetPreprocessing('cifar10'), meanValues, [3, 32, 32]);
  const g = buildResNet(cifar);
  const withPreprocessing = (name: string, pre: unknown): string => {
    const path = join(dir, name);
    writeOnnx(g, path, { metadata: { weights: 'trained: test', preprocessing: JSON.stringify(pre) } });
    return path;
  };

  it('round-trips through the metadata: the same values, and a doc string that says what to feed', () => {
    const path = join(dir, 'per-pixel.onnx');
    const desc = { weights: 'trained: test', folded: true, preprocessing: perPixel };
    writeOnnx(g, path, { metadata: modelMetadata(cifar, desc), docString: docString(cifar, desc) });
    const info = readModelInfo(path);
    expect(info.defaultPreprocessing).toBe(false);
    expect(info.preprocessing).toEqual(perPixel);
    expect(info.preprocessing).toMatchObject({ resize: 32, crop: 32, scale: 1 / 255, mean: [0, 0, 0], std: [1, 1, 1], channelOrder: 'RGB' });
    expect(Buffer.from(decodeMeanImage(info.preprocessing.meanImage, 3, 32).buffer).equals(Buffer.from(meanValues.buffer))).toBe(true);
    const doc = onnx.ModelProto.decode(readFileSync(path)).docString ?? '';
    expect(doc).toMatch(/Input 'input': float32 \[N, 3, 32, 32\], RGB, NCHW; \(pixels - mean image\) \* 0\.00392157, minus mean \[0,0,0\], divided by std \[1,1,1\]/);
    expect(doc).toMatch(/mean image is float32 \[3, 32, 32\] .* pixel values 0\.\.255, in metadata 'preprocessing' key 'meanImage' \(base64 little-endian 'values'\)/);
    // Models without one are as before: no meanImage key at all.
    expect(JSON.parse(modelMetadata(cifar, { weights: 'x', folded: true }).preprocessing)).not.toHaveProperty('meanImage');
  });

  it('the served input is ((v - mean image) * scale - mean) / std of the crop, in the input channel order', async () => {
    const p = await prepareImage(coffee, perPixel, limits);
    expect(p.tensor).toHaveLength(3 * 32 * 32);
    for (let c = 0; c < 3; c++)
      for (let i = 0; i < 32 * 32; i++) {
        const direct = (p.crop[i * 3 + c] - meanValues[c * 1024 + i]) / 255;
        if (Math.abs(p.tensor[c * 1024 + i] - direct) > 1e-6) throw new Error(`channel ${c} pixel ${i}: served ${p.tensor[c * 1024 + i]}, direct ${direct}`);
      }
    // BGR: input channel 0 is blue, and the mean image's plane 0 is subtracted from it; per-channel terms still apply.
    const bgr = { ...perPixel, channelOrder: 'BGR' as const, mean: [0.1, 0.2, 0.3], std: [0.5, 0.25, 2] };
    const t = normalise(p.crop, 3, bgr);
    const i = 517;
    for (let c = 0; c < 3; c++) expect(t[c * 1024 + i]).toBeCloseTo(((p.crop[i * 3 + (2 - c)] - meanValues[c * 1024 + i]) / 255 - bgr.mean[c]) / bgr.std[c], 5);
  });

  it('a crop size other than the mean image\'s is refused when the server starts', async () => {
    const path = withPreprocessing('per-pixel-crop28.onnx', { ...perPixel, resize: 28, crop: 28 });
    const message = /metadata 'preprocessing': meanImage.shape \[3, 32, 32\] is 32x32, but the crop is 28x28: the mean image is subtracted from the crop, so it must be \[3, 28, 28\]/;
    expect(() => readModelInfo(path)).toThrow(message);
    await expect(startServer({ model: path, port: 0, logLevel: 'silent' })).rejects.toThrow(message);
    // Resizing further before the same 32x32 crop is fine: the mean image applies to the crop.
    expect(readModelInfo(withPreprocessing('per-pixel-resize40.onnx', { ...perPixel, resize: 40 })).preprocessing.crop).toBe(32);
  });

  it('a malformed mean image is refused, saying what is wrong', () => {
    const m = perPixel.meanImage!;
    const nan = Float32Array.from(meanValues);
    nan[100] = Number.NaN;
    const cases: [unknown, RegExp][] = [
      ['not an object', /meanImage must be an object \{ shape: \[3, 32, 32\], values: base64 float32 \}, got "not an object"/],
      [{ ...m, shape: [3, 32] }, /meanImage.shape must be three positive integers \[C, H, W\], got \[3,32\]/],
      [{ ...m, shape: [3, 32.5, 32] }, /meanImage.shape must be three positive integers/],
      [{ ...m, shape: [1, 32, 32] }, /meanImage.shape \[1, 32, 32\] has 1 channels; the input has 3/],
      [{ ...m, values: 'not base64!' }, /meanImage.values must be base64 text of 3072 little-endian float32 values, got 11 characters that are not base64/],
      [{ ...m, values: [1, 2, 3] }, /meanImage.values must be base64 text of 3072 .*got \[1,2,3\]/],
      [{ ...m, values: m.values.slice(0, -8) }, /meanImage.values holds \d+ bytes; shape \[3, 32, 32\] needs 12288 \(float32\)/],
      [encodeMeanImage(nan, [3, 32, 32]), /meanImage.values\[100\] is NaN; every value must be finite/],
    ];
    for (const [meanImage, message] of cases) {
      const path = withPreprocessing('per-pixel-bad.onnx', { ...perPixel, meanImage });
      expect(() => readModelInfo(path), JSON.stringify(meanImage).slice(0, 60)).toThrow(ModelFileError);
      expect(() => readModelInfo(path)).toThrow(message);
    }
  });

  it("Triton's config says the mean image is subtracted", () => {
    const path = withPreprocessing('per-pixel-triton.onnx', perPixel);
    const config = tritonConfig(readModelInfo(path), { inputName: 'input', inputShape: ['N', 3, 32, 32], outputs: [{ name: 'logits', shape: ['N', 10] }] }, 10, {
      repository: dir, maxBatch: 8, maxQueueDelayUs: 100, maxQueue: 16, timeoutUs: 1000, instances: 1, kind: 'cpu',
    });
    expect(config).toMatch(/# \(pixel - mean image\) \* 0\.00392157, minus mean \[0,0,0\], divided by std \[1,1,1\]/);
    expect(config).toMatch(/# The mean image is float32 \[3, 32, 32\] in pixel values 0\.\.255: parameters 'preprocessing', key 'meanImage'/);
  });
});

describe('preprocessing from the metadata', () => {
  it('resize 256 then centre crop 224 (the common ImageNet recipe) as PIL does it', async () => {
    const p = await prepareImage(coffee, { ...imagenet, resize: 256, crop: 224 }, limits);
    expect(p.resized).toEqual({ width: 384, height: 256 });
    expect(p.tensor).toHaveLength(3 * 224 * 224);
    const ref = pilCrop(join(SKIMAGE_DATA, 'coffee.png'), 256, 224);
    expect(meanAbs(p.crop, ref)).toBeLessThan(1);
  });

  it('normalises (v * scale - mean) / std per channel, planar, in RGB or BGR order', async () => {
    const p = await prepareImage(coffee, imagenet, limits);
    const i = 1234;
    for (let c = 0; c < 3; c++) expect(p.tensor[c * 320 * 320 + i]).toBeCloseTo((p.crop[i * 3 + c] / 255 - imagenet.mean[c]) / imagenet.std[c], 5);
    const bgr = normalise(p.crop, 3, { ...imagenet, channelOrder: 'BGR', mean: [0, 0, 0], std: [1, 1, 1] });
    expect(bgr[i]).toBeCloseTo(p.crop[i * 3 + 2] / 255, 6);
    expect(bgr[2 * 320 * 320 + i]).toBeCloseTo(p.crop[i * 3] / 255, 6);
  });

  it("a grey ('L') 28x28 model gets one channel", async () => {
    const p = await prepareImage(coffee, { resize: 28, crop: 28, scale: 1 / 255, mean: [0.5], std: [0.5], channelOrder: 'L', layout: 'NCHW', interpolation: 'bilinear' }, limits);
    expect(p.cropChannels).toBe(1);
    expect(p.crop).toHaveLength(28 * 28);
    expect(p.tensor).toHaveLength(28 * 28);
  });

  it('refuses by status: 415 SVG, 400 garbage, 413 pixels, 422 tiny', async () => {
    const status = (e: unknown): number => (e as ServeError).status;
    expect(status(await prepareImage(Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>'), imagenet, limits).catch((e: unknown) => e))).toBe(415);
    expect(status(await prepareImage(Buffer.from('garbage'), imagenet, limits).catch((e: unknown) => e))).toBe(400);
    expect(status(await prepareImage(coffee, imagenet, { ...limits, maxPixels: 1000 }).catch((e: unknown) => e))).toBe(413);
    expect(status(await prepareImage(coffee, imagenet, { ...limits, minSide: 401 }).catch((e: unknown) => e))).toBe(422);
  });
});

describe('the upscaler matches PIL', () => {
  it.each(['bilinear', 'bicubic'] as const)('%s, 300 -> 320 and 100 -> 320', async (kind) => {
    // chelsea is 451x300 (upscaled by 320/300); a 150x100 thumbnail of it is upscaled 3.2x.
    const thumb = join(dir, 'chelsea-thumb.png');
    writeFileSync(thumb, await sharp(join(SKIMAGE_DATA, 'chelsea.png')).resize(150, 100).png().toBuffer());
    for (const path of [join(SKIMAGE_DATA, 'chelsea.png'), thumb]) {
      const { data, info } = await sharp(path).removeAlpha().raw().toBuffer({ resolveWithObject: true });
      const s = 320 / info.height;
      const w = Math.round(info.width * s);
      const ours = resampleCrop(data, info.width, info.height, 3, w, 320, Math.floor((w - 320) / 2), 0, 320, kind);
      const ref = pilCrop(path, 320, 320, kind);
      expect(meanAbs(ours, ref), `${path} ${kind}`).toBeLessThan(0.6);
    }
  });
});

function pilCrop(path: string, resize: number, crop: number, kind: 'bilinear' | 'bicubic' = 'bilinear'): Buffer {
  const code = `
import sys
from PIL import Image
im = Image.open(sys.argv[1]).convert('RGB')
resize, crop = int(sys.argv[2]), int(sys.argv[3])
w, h = im.size
s = resize / min(w, h)
nw = resize if w <= h else max(resize, round(w * s))
nh = resize if h <= w else max(resize, round(h * s))
im = im.resize((nw, nh), Image.Resampling.BICUBIC if sys.argv[4] == 'bicubic' else Image.Resampling.BILINEAR)
l, t = (nw - crop) // 2, (nh - crop) // 2
sys.stdout.buffer.write(im.crop((l, t, l + crop, t + crop)).tobytes())
`;
  return execFileSync(PYTHON, ['-c', code, path, String(resize), String(crop), kind], { maxBuffer: 1 << 24 });
}

function meanAbs(a: Uint8Array, b: Uint8Array): number {
  expect(a.length).toBe(b.length);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}
