// Preprocessing and model metadata without HTTP: the metadata reader (no weights loaded), preprocessing other
// than ImageNet's 320/320 (resize != crop, grey models, BGR), and the PIL-compatible upscaler.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { exportInference } from '../src/export/inference.js';
import { writeOnnx } from '../src/export/onnx.js';
import { resolveConfig } from '../src/models/config.js';
import type { Preprocessing } from '../src/models/labels.js';
import { buildResNet } from '../src/models/preact.js';
import { ServeError } from '../src/serve/errors.js';
import { ModelFileError, readModelInfo } from '../src/serve/model-info.js';
import { normalise, prepareImage, resampleCrop } from '../src/serve/preprocess.js';
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
