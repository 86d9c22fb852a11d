// Augmentation: crops, flips and padding land where they should on tiny hand-made images, resizing agrees with PIL,
// output is normalised CHW, and the randomness is a function of (seed, epoch, sample) only. ImageNet's colour stage
// (jitter, PCA lighting) matches hand computations and never reaches the test pass; CIFAR's per-pixel mean is the
// mean of the real binary files and is subtracted where each pixel was.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { rng } from '../src/graph/init.js';
import {
  IMAGENET_COLOUR,
  IMAGENET_PCA,
  adjust,
  augment,
  colourStage,
  defaultAugmentation,
  defaultNormalisation,
  lighting,
  outputSize,
  perPixelNormalisation,
  resample,
  sampleRandom,
  validateAugmentation,
  validateNormalisation,
  withColour,
  type Augmentation,
  type Normalisation,
} from '../src/train/augment.js';
import { DATASET_KINDS, type Dataset, isInMemory, openDataset, pixelMean, type Sample } from '../src/train/datasets.js';
import { prepare, produceBatch } from '../src/train/loader.js';
import { planarImage, writeCifar10 } from './data-writers.js';
import { runCli, tempDir } from './helpers.js';

/** Identity normalisation: outputs are the raw pixel values. */
const RAW: Normalisation = { mean: [0], std: [1], scale: 1 };
const RAW3: Normalisation = { mean: [0, 0, 0], std: [1, 1, 1], scale: 1 };

function gray(width: number, height: number, values: number[]): Sample {
  return { pixels: Uint8Array.from(values), width, height, channels: 1, label: 0 };
}

function seededImage(width: number, height: number, channels: number, seed: number): Sample {
  const u = rng(seed, 'augment-test');
  return { pixels: Uint8Array.from({ length: width * height * channels }, () => Math.floor(u() * 256)), width, height, channels, label: 0 };
}

/** A `random` that returns the given numbers in turn, to choose crops and flips by hand. */
function scripted(...values: number[]): () => number {
  let i = 0;
  return () => {
    if (i >= values.length) throw new Error('the augmentation drew more random numbers than scripted');
    return values[i++];
  };
}

function run(image: Sample, a: Augmentation, norm: Normalisation, random: () => number): { out: Float32Array; width: number; height: number } {
  const size = outputSize(a, { width: image.width, height: image.height }) ?? { width: 512, height: 512 };
  const out = new Float32Array(image.channels * size.width * size.height);
  const got = augment(image, a, norm, random, out);
  return { out: out.subarray(0, image.channels * got.width * got.height), ...got };
}

const grid = (out: Float32Array, w: number): number[][] => Array.from({ length: out.length / w }, (_, y) => Array.from(out.subarray(y * w, (y + 1) * w)));

describe('pad-crop (CIFAR)', () => {
  // 1 2 3 / 4 5 6 / 7 8 9
  const img = gray(3, 3, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const norm: Normalisation = { mean: [10], std: [1], scale: 1 };

  it('shifts by the drawn offsets and fills the padding with the mean (0 after normalisation)', () => {
    // Draws: x offset floor(0 * 3) - 1 = -1, y offset floor(0.99 * 3) - 1 = +1, no flip (0.7 >= 0.5).
    const r = run(img, { kind: 'pad-crop', pad: 1, flip: true, fill: 'mean' }, norm, scripted(0, 0.99, 0.7));
    expect(grid(r.out, 3)).toEqual([
      [0, 4 - 10, 5 - 10],
      [0, 7 - 10, 8 - 10],
      [0, 0, 0],
    ]);
  });

  it('flips the crop horizontally, and black fill is pixel value 0 before normalisation', () => {
    const r = run(img, { kind: 'pad-crop', pad: 1, flip: true, fill: 'black' }, norm, scripted(0, 0.99, 0.2));
    expect(grid(r.out, 3)).toEqual([
      [5 - 10, 4 - 10, -10],
      [8 - 10, 7 - 10, -10],
      [-10, -10, -10],
    ]);
  });

  it('offset 0 without flip is the image itself', () => {
    const r = run(img, { kind: 'pad-crop', pad: 4, flip: false, fill: 'mean' }, RAW, scripted(0.5, 0.5));
    expect(Array.from(r.out)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('reaches every offset in -pad..pad and flips about half the time', () => {
    const img = seededImage(8, 8, 1, 1);
    const seen = new Set<string>();
    let flips = 0;
    for (let i = 0; i < 2000; i++) {
      const u = sampleRandom(5, 0, i);
      const ox = Math.floor(u() * 9) - 4;
      const oy = Math.floor(u() * 9) - 4;
      flips += u() < 0.5 ? 1 : 0;
      seen.add(`${ox},${oy}`);
    }
    expect(seen.size).toBe(81);
    expect(flips / 2000).toBeGreaterThan(0.45);
    expect(flips / 2000).toBeLessThan(0.55);
    // ...and augment draws exactly those numbers: an image whose crop is predicted from the same stream.
    const u = sampleRandom(5, 0, 7);
    const ox = Math.floor(u() * 9) - 4;
    const oy = Math.floor(u() * 9) - 4;
    const flip = u() < 0.5;
    const r = run(img, { kind: 'pad-crop', pad: 4, flip: true, fill: 'mean' }, RAW, sampleRandom(5, 0, 7));
    for (let y = 0; y < 8; y++)
      for (let x = 0; x < 8; x++) {
        const sx = (flip ? 7 - x : x) + ox;
        const sy = y + oy;
        const want = sx < 0 || sx > 7 || sy < 0 || sy > 7 ? 0 : img.pixels[sy * 8 + sx];
        expect(r.out[y * 8 + x], `pixel (${x}, ${y})`).toBe(want);
      }
  });
});

describe('normalisation and layout', () => {
  it('writes (v * scale - mean) / std per channel, planar CHW, at the offset given', () => {
    const img = seededImage(4, 3, 3, 2);
    const norm: Normalisation = { mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.5] };
    const out = new Float32Array(10 + 36).fill(99);
    const got = augment(img, { kind: 'center-crop', interpolation: 'bilinear' }, norm, scripted(), out, 10);
    expect(got).toEqual({ width: 4, height: 3 });
    expect(Array.from(out.subarray(0, 10))).toEqual(new Array(10).fill(99));
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < 3; y++)
        for (let x = 0; x < 4; x++) expect(out[10 + c * 12 + y * 4 + x]).toBeCloseTo((img.pixels[(y * 4 + x) * 3 + c] / 255 - norm.mean[c]) / norm.std[c], 5);
  });

  it('a normalisation for the wrong number of channels is refused', () => {
    expect(() => run(seededImage(2, 2, 3, 1), { kind: 'center-crop', interpolation: 'bilinear' }, RAW, scripted())).toThrow(/normalisation has 1 means and 1 stds for 3-channel images/);
  });
});

describe('reproducibility', () => {
  const img = seededImage(32, 32, 3, 3);
  const a: Augmentation = { kind: 'pad-crop', pad: 4, flip: true, fill: 'mean' };
  const out = (seed: number, epoch: number, index: number): Float32Array => run(img, a, RAW3, sampleRandom(seed, epoch, index)).out;

  it('the same (seed, epoch, sample) gives the same output', () => {
    expect(out(1, 3, 17)).toEqual(out(1, 3, 17));
    const big = seededImage(300, 200, 3, 4);
    const rs: Augmentation = { kind: 'random-sized-crop', size: 64, area: [0.08, 1], aspect: [3 / 4, 4 / 3], flip: true, interpolation: 'bicubic' };
    expect(run(big, rs, RAW3, sampleRandom(1, 2, 3)).out).toEqual(run(big, rs, RAW3, sampleRandom(1, 2, 3)).out);
  });

  it('another seed, epoch or sample gives other crops', () => {
    const key = (o: Float32Array): string => Buffer.from(o.buffer, o.byteOffset, o.byteLength).toString('base64');
    const base = key(out(1, 3, 17));
    // 162 possible outcomes: compare across many draws rather than one pair.
    const others = [...Array.from({ length: 20 }, (_, k) => out(2 + k, 3, 17)), ...Array.from({ length: 20 }, (_, k) => out(1, 4 + k, 17)), ...Array.from({ length: 20 }, (_, k) => out(1, 3, 18 + k))].map(key);
    expect(others.filter((k) => k === base).length).toBeLessThan(4);
    expect(new Set(others).size).toBeGreaterThan(40);
  });
});

describe('center-crop (evaluation)', () => {
  it('without sizes it is the identity; with a size it takes the centre', () => {
    const img = gray(4, 4, Array.from({ length: 16 }, (_, i) => i));
    expect(Array.from(run(img, { kind: 'center-crop', interpolation: 'bilinear' }, RAW, scripted()).out)).toEqual(Array.from({ length: 16 }, (_, i) => i));
    expect(grid(run(img, { kind: 'center-crop', size: 2, interpolation: 'bilinear' }, RAW, scripted()).out, 2)).toEqual([
      [5, 6],
      [9, 10],
    ]);
  });

  it('resizes the shorter side, keeps the aspect, and rounds an odd margin like torchvision', () => {
    // 8x4 constant-by-column image, shorter side 4 -> 4 (no resize) then a 3x3 crop: margin (8-3)/2 = 2.5 -> 2.
    const img = gray(8, 4, Array.from({ length: 32 }, (_, i) => 10 * (i % 8)));
    const r = run(img, { kind: 'center-crop', resize: 4, size: 3, interpolation: 'bilinear' }, RAW, scripted());
    expect(grid(r.out, 3)[0]).toEqual([20, 30, 40]);
    // Shorter side 4 -> 2 halves both sides (8x4 -> 4x2); the centre 2x2 of that is columns 1..2 of the half-size image.
    const half = run(img, { kind: 'center-crop', resize: 2, size: 2, interpolation: 'bilinear' }, RAW, scripted());
    expect(half.width).toBe(2);
    // Column c of the half-size image averages source columns 2c-1..2c+2 with triangle weights: 10 * (2c + 0.5).
    expect(grid(half.out, 2)[0]).toEqual([25, 45]);
  });
});

describe('ImageNet crops', () => {
  it('random-sized-crop of the whole image at its own size is the image or its mirror', () => {
    const img = seededImage(6, 6, 3, 5);
    const a: Augmentation = { kind: 'random-sized-crop', size: 6, area: [1, 1], aspect: [1, 1], flip: true, interpolation: 'bilinear' };
    for (let i = 0; i < 10; i++) {
      const r = run(img, a, RAW3, sampleRandom(1, 0, i));
      const plain = run(img, { kind: 'center-crop', interpolation: 'bilinear' }, RAW3, scripted()).out;
      const mirrored = Float32Array.from(plain, (_, k) => plain[k - (k % 6) + 5 - (k % 6)]);
      expect([plain, mirrored]).toContainEqual(r.out);
    }
  });

  it('random-sized-crop falls back to resize + centre crop when no crop fits (a 1-pixel-wide image)', () => {
    const img = gray(1, 50, Array.from({ length: 50 }, () => 7));
    const r = run(img, { kind: 'random-sized-crop', size: 4, area: [0.08, 1], aspect: [3 / 4, 4 / 3], flip: true, interpolation: 'bilinear' }, RAW, sampleRandom(1, 0, 0));
    expect(r.width).toBe(4);
    expect(Array.from(r.out)).toEqual(new Array(16).fill(7));
  });

  it('random-sized-crop and scale always give size x size from images of any shape', () => {
    const shapes = [
      [300, 200],
      [200, 300],
      [256, 256],
      [500, 90],
    ];
    for (const [w, h] of shapes) {
      const img = seededImage(w, h, 3, w + h);
      for (let i = 0; i < 5; i++) {
        for (const a of [
          { kind: 'random-sized-crop', size: 32, area: [0.08, 1], aspect: [3 / 4, 4 / 3], flip: true, interpolation: 'bicubic' },
          { kind: 'scale', shorter: [90, 120], size: 32, flip: true, interpolation: 'bilinear' },
        ] satisfies Augmentation[]) {
          const r = run(img, a, RAW3, sampleRandom(3, 1, i));
          expect([r.width, r.height]).toEqual([32, 32]);
          expect(r.out.every((v) => v >= 0 && v <= 255)).toBe(true);
        }
      }
    }
  });

  it('scale with shorter side = the image side and size = that side is the image or its mirror', () => {
    const img = seededImage(5, 5, 3, 6);
    const plain = run(img, { kind: 'center-crop', interpolation: 'bilinear' }, RAW3, scripted()).out;
    const r = run(img, { kind: 'scale', shorter: [5, 5], size: 5, flip: false, interpolation: 'bilinear' }, RAW3, sampleRandom(1, 0, 0));
    expect(r.out).toEqual(plain);
  });
});

describe('resample', () => {
  it('is exact for the identity box and keeps a constant image constant at any size', () => {
    const img = seededImage(7, 5, 3, 8);
    expect(Array.from(resample(img.pixels, 7, 5, 3, { x: 0, y: 0, w: 7, h: 5, outW: 7, outH: 5 }, 'bicubic'))).toEqual(Array.from(img.pixels));
    const flat = new Uint8Array(9 * 6 * 3).fill(200);
    for (const [outW, outH] of [
      [3, 2],
      [20, 13],
    ])
      for (const kind of ['bilinear', 'bicubic'] as const) {
        const r = resample(flat, 9, 6, 3, { x: 0.5, y: 1, w: 7.5, h: 4, outW, outH }, kind);
        for (const v of r) expect(v).toBeCloseTo(200, 3);
      }
  });

  const havePil = ((): boolean => {
    try {
      execFileSync('/usr/bin/python3', ['-c', 'import PIL.Image'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();

  it.skipIf(!havePil)('agrees with PIL Image.resize(size, box=...) within rounding (PIL rounds between passes)', () => {
    const img = seededImage(13, 11, 3, 9);
    const cases = [
      { box: { x: 0, y: 0, w: 13, h: 11 }, out: [5, 4] },
      { box: { x: 2, y: 1.5, w: 8, h: 7 }, out: [17, 19] },
      { box: { x: 0, y: 0, w: 13, h: 11 }, out: [6, 6] },
    ];
    for (const kind of ['bilinear', 'bicubic'] as const) {
      for (const c of cases) {
        const script = `
import sys, PIL.Image as I
img = I.frombytes('RGB', (13, 11), sys.stdin.buffer.read())
r = img.resize((${c.out[0]}, ${c.out[1]}), I.${kind.toUpperCase()}, box=(${c.box.x}, ${c.box.y}, ${c.box.x + c.box.w}, ${c.box.y + c.box.h}))
sys.stdout.buffer.write(r.tobytes())`;
        const pil = execFileSync('/usr/bin/python3', ['-c', script], { input: Buffer.from(img.pixels) });
        const ours = resample(img.pixels, 13, 11, 3, { ...c.box, outW: c.out[0], outH: c.out[1] }, kind);
        expect(ours.length).toBe(pil.length);
        let worst = 0;
        ours.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - pil[i]))));
        expect(worst, `${kind} ${JSON.stringify(c)}`).toBeLessThanOrEqual(1.5);
      }
    }
  });
});

describe('recipes and validation', () => {
  it('default augmentations follow the SPEC; MNIST digits are not mirrored', () => {
    expect(defaultAugmentation('cifar10', 'train')).toEqual({ kind: 'pad-crop', pad: 4, flip: true, fill: 'mean' });
    expect(defaultAugmentation('fashion-mnist', 'train')).toMatchObject({ kind: 'pad-crop', flip: true });
    expect(defaultAugmentation('mnist', 'train')).toMatchObject({ kind: 'pad-crop', flip: false });
    expect(defaultAugmentation('cifar100', 'test')).toEqual({ kind: 'center-crop', interpolation: 'bilinear' });
    expect(defaultAugmentation('imagenet', 'train')).toMatchObject({ kind: 'random-sized-crop', size: 224, area: [0.08, 1] });
    expect(defaultAugmentation('imagenet', 'test')).toMatchObject({ kind: 'center-crop', resize: 256, size: 224 });
  });

  it('bad numbers are refused with the field and the allowed range', () => {
    expect(() => validateAugmentation({ kind: 'pad-crop', pad: -1, flip: true, fill: 'mean' })).toThrow(/pad-crop: pad must be a non-negative integer, got -1/);
    expect(() => validateAugmentation({ kind: 'random-sized-crop', size: 224, area: [0.5, 0.2], aspect: [3 / 4, 4 / 3], flip: true, interpolation: 'bilinear' })).toThrow(/area must satisfy 0 < min <= max <= 1/);
    expect(() => validateAugmentation({ kind: 'scale', shorter: [200, 480], size: 224, flip: true, interpolation: 'bilinear' })).toThrow(/shorter must be integers with size \(224\) <= min <= max/);
    expect(() => validateAugmentation({ kind: 'center-crop', resize: 256, size: 320, interpolation: 'bilinear' })).toThrow(/size 320 is larger than resize 256/);
  });
});

// ---------------------------------------------------------------------------------------------------------------

/** Interleaved RGB floats, as the colour stage sees them. */
const rgb = (...v: number[]): Float32Array => Float32Array.from(v);
const closeTo = (got: Float32Array, want: number[], digits = 3): void => {
  expect(got.length).toBe(want.length);
  want.forEach((w, i) => expect(got[i], `value ${i}`).toBeCloseTo(w, digits));
};

describe('colour stage: PCA lighting', () => {
  it('the eigenvectors are the columns: orthonormal, and column 0 (largest eigenvalue) is brightness', () => {
    const { eigvec, eigval } = IMAGENET_PCA;
    const col = (k: number): number[] => eigvec.map((row) => row[k]);
    for (let a = 0; a < 3; a++)
      for (let b = 0; b < 3; b++) expect(col(a).reduce((s, v, i) => s + v * col(b)[i], 0), `column ${a} . column ${b}`).toBeCloseTo(a === b ? 1 : 0, 3);
    expect(Math.max(...col(0)) - Math.min(...col(0))).toBeLessThan(0.02);
    // A row is not the grey direction: the matrix must not be read transposed.
    expect(Math.max(...eigvec[0]) - Math.min(...eigvec[0])).toBeGreaterThan(1);
    expect([...eigval]).toEqual([0.2175, 0.0188, 0.0045]);
  });

  it('with alpha fixed, every pixel moves by 255 * sum_k alpha_k eigval_k eigvec_k (RGB in [0, 1] scaled to 0..255)', () => {
    const px = rgb(10, 20, 30, 200, 100, 50);
    lighting(px, [0.5, -1, 2]);
    // By hand: alpha_k * eigval_k = (0.10875, -0.0188, 0.009); each channel's row of eigvec dotted with that, times 255.
    const dr = 255 * (-0.061715625 - 0.01352096 + 0.0036081); // R: -0.071628485 * 255
    const dg = 255 * (-0.063162 + 0.0000846 - 0.007326); // G: -0.0704034 * 255
    const db = 255 * (-0.0634665 + 0.01306224 + 0.0037827); // B: -0.04662156 * 255
    expect([dr, dg, db].map((v) => Number(v.toFixed(4)))).toEqual([-18.2653, -17.9529, -11.8885]);
    closeTo(px, [10 + dr, 20 + dg, 30 + db, 200 + dr, 100 + dg, 50 + db]);
  });
});

describe('colour stage: jitter', () => {
  const img = (): Float32Array => rgb(10, 20, 30, 200, 100, 50);

  it('a factor of 1 is the identity for brightness, contrast and saturation', () => {
    for (const op of ['brightness', 'contrast', 'saturation'] as const) {
      const px = img();
      adjust(px, op, 1);
      expect(Array.from(px), op).toEqual(Array.from(img()));
    }
  });

  it('blends with black, the mean grey of the image, and each pixel\'s grey (0.299 R + 0.587 G + 0.114 B)', () => {
    const g1 = 0.299 * 10 + 0.587 * 20 + 0.114 * 30; // 18.15
    const g2 = 0.299 * 200 + 0.587 * 100 + 0.114 * 50; // 124.2
    const m = (g1 + g2) / 2; // 71.175
    let px = img();
    adjust(px, 'brightness', 0.5);
    closeTo(px, [5, 10, 15, 100, 50, 25]);
    px = img();
    adjust(px, 'contrast', 0.5);
    closeTo(px, [5 + m / 2, 10 + m / 2, 15 + m / 2, 100 + m / 2, 50 + m / 2, 25 + m / 2]);
    px = img();
    adjust(px, 'saturation', 0.5);
    closeTo(px, [5 + g1 / 2, 10 + g1 / 2, 15 + g1 / 2, 100 + g2 / 2, 50 + g2 / 2, 25 + g2 / 2]);
    // Saturation 0 is grey; nothing is clamped (fb.resnet.torch): brightness 1.4 takes 200 to 280.
    px = img();
    adjust(px, 'saturation', 0);
    closeTo(px, [g1, g1, g1, g2, g2, g2]);
    px = img();
    adjust(px, 'brightness', 1.4);
    expect(px[3]).toBeCloseTo(280, 4);
  });

  it('jitter 0 and lighting 0 draw nothing and change nothing', () => {
    const px = img();
    colourStage(px, { jitter: 0, lighting: 0 }, scripted());
    expect(Array.from(px)).toEqual(Array.from(img()));
  });
});

describe('colour stage in the ImageNet training crop', () => {
  // A whole-image crop at the image's own size, unflipped: the geometry is the identity, so only colour changes.
  const whole = (colour?: { jitter: number; lighting: number }): Augmentation => ({ kind: 'random-sized-crop', size: 4, area: [1, 1], aspect: [1, 1], flip: false, interpolation: 'bilinear', ...(colour ? { colour } : {}) });
  const img = seededImage(4, 4, 3, 21);
  const plain = run(img, whole(), RAW3, sampleRandom(1, 0, 0)).out;

  it('draws after the crop: order, one factor per adjustment, two numbers per alpha; applied before normalisation', () => {
    // Crop draws: area, aspect, no swap (0.9), y, x. Order: 0.99, 0.99 keep brightness, contrast, saturation.
    // Factors 1 + 0.4 (2u - 1): 1.2, 0.8, 1. Alphas: 0.1 * sqrt(-2 ln(1 - u1)) cos(2 pi u2) = 0.1, -0.1, 0.1.
    const u1 = 1 - Math.exp(-0.5);
    const draws = [0, 0, 0.9, 0, 0, 0.99, 0.99, 0.75, 0.25, 0.5, u1, 0, u1, 0.5, u1, 0];
    const norm: Normalisation = { mean: [0.1, 0.2, 0.3], std: [0.5, 0.5, 0.5] };
    const got = run(img, whole(IMAGENET_COLOUR), norm, scripted(...draws)).out;
    const px = Float32Array.from(img.pixels);
    adjust(px, 'brightness', 1.2);
    adjust(px, 'contrast', 0.8);
    adjust(px, 'saturation', 1);
    lighting(px, [0.1, -0.1, 0.1]);
    for (let c = 0; c < 3; c++)
      for (let p = 0; p < 16; p++) expect(got[c * 16 + p], `channel ${c} pixel ${p}`).toBeCloseTo((px[p * 3 + c] / 255 - norm.mean[c]) / norm.std[c], 4);
  });

  it('the same (seed, epoch, sample) gives the same colours; another sample gets others', () => {
    const a = whole(IMAGENET_COLOUR);
    const first = run(img, a, RAW3, sampleRandom(4, 2, 9)).out;
    expect(run(img, a, RAW3, sampleRandom(4, 2, 9)).out).toEqual(first);
    expect(first).not.toEqual(plain);
    for (const index of [10, 11, 12]) expect(run(img, a, RAW3, sampleRandom(4, 2, index)).out, `sample ${index}`).not.toEqual(first);
    // Turned off, the same crop is the plain image again.
    expect(run(img, whole({ jitter: 0, lighting: 0 }), RAW3, sampleRandom(4, 2, 9)).out).toEqual(plain);
  });

  it('is ImageNet training\'s default only, and the test pass never gets it', async () => {
    expect(defaultAugmentation('imagenet', 'train')).toMatchObject({ colour: { jitter: 0.4, lighting: 0.1 } });
    for (const kind of DATASET_KINDS) {
      expect(defaultAugmentation(kind, 'test'), kind).not.toHaveProperty('colour');
      if (kind !== 'imagenet') expect(defaultAugmentation(kind, 'train'), kind).not.toHaveProperty('colour');
    }
    // A loader for the test split refuses an augmentation with a colour stage.
    const fake = { kind: 'imagenet', split: 'test', dir: '/x', length: 1, classes: 1, labels: ['a'], channels: 3, label: () => 0, where: () => '/x', read: () => Promise.resolve(img) } satisfies Dataset;
    await expect(prepare({ dataset: { kind: 'imagenet', dir: '/x' }, split: 'test', batch: 1, seed: 1, augment: 'test', augmentation: whole(IMAGENET_COLOUR) }, () => Promise.resolve(fake))).rejects.toThrow(
      /colour augmentation is for training only/,
    );
  });

  it('withColour overrides the recipe\'s numbers, removes a stage turned off, and refuses colour outside ImageNet crops', () => {
    const base = defaultAugmentation('imagenet', 'train');
    expect(withColour(base, { lighting: 0 })).toMatchObject({ colour: { jitter: 0.4, lighting: 0 } });
    expect(withColour(base, { jitter: 0, lighting: 0 })).not.toHaveProperty('colour');
    expect(withColour(base, undefined)).toBe(base);
    expect(withColour(defaultAugmentation('cifar10', 'train'), { jitter: 0, lighting: 0 })).toEqual(defaultAugmentation('cifar10', 'train'));
    expect(() => withColour(defaultAugmentation('cifar10', 'train'), { jitter: 0.4 })).toThrow(/applies to the ImageNet training crops \(random-sized-crop, scale\), not to pad-crop/);
    expect(() => run(seededImage(4, 4, 1, 1), { ...whole(IMAGENET_COLOUR) }, RAW, sampleRandom(1, 0, 0))).toThrow(/colour augmentation needs RGB images, got 1 channel/);
  });

  it('bad colour numbers are refused with the field and the allowed range', () => {
    expect(() => validateAugmentation(whole({ jitter: 1.5, lighting: 0.1 }))).toThrow(/random-sized-crop: colour.jitter must be a number in \[0, 1\].*got 1.5/);
    expect(() => validateAugmentation(whole({ jitter: 0.4, lighting: -0.1 }))).toThrow(/colour.lighting must be a finite number >= 0.*got -0.1/);
    expect(() => validateAugmentation(whole({ jitter: Number.NaN, lighting: 0 }))).toThrow(/colour.jitter must be a number in \[0, 1\]/);
  });
});

describe('per-pixel mean (the paper\'s CIFAR normalisation)', () => {
  it('the mean image of CIFAR-10 binary files is the mean of their records, [C, H, W] in pixel values', async () => {
    const dir = tempDir();
    writeCifar10(dir, 3); // 15 training records: batch k holds planarImage(100 k + r), r = 0..2
    const d = await openDataset({ kind: 'cifar10', dir }, 'train');
    if (!isInMemory(d)) throw new Error('CIFAR is held in memory');
    const want = new Float64Array(3072);
    for (let k = 1; k <= 5; k++) for (let r = 0; r < 3; r++) planarImage(100 * k + r).forEach((v, i) => (want[i] += v / 15));
    const got = pixelMean(d);
    expect(got.length).toBe(3 * 32 * 32);
    let worst = 0;
    got.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - want[i]))));
    expect(worst).toBeLessThan(1e-4);
  });

  // 1 2 3 / 4 5 6 / 7 8 9 with the mean image 0 10 20 / 30 40 50 / 60 70 80.
  const img = gray(3, 3, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const mean = Float32Array.from([0, 10, 20, 30, 40, 50, 60, 70, 80]);
  const norm: Normalisation = { mean: [0], std: [1], scale: 1, meanImage: mean };

  it('subtracts the mean where each pixel was, then pads with zeros, shifts and flips', () => {
    // Offsets x -1, y +1 and a flip (draws 0, 0.99, 0.2): output (x, y) reads source (2 - x - 1, y + 1).
    const r = run(img, { kind: 'pad-crop', pad: 1, flip: true, fill: 'mean' }, norm, scripted(0, 0.99, 0.2));
    expect(grid(r.out, 3)).toEqual([
      [5 - 40, 4 - 30, 0],
      [8 - 70, 7 - 60, 0],
      [0, 0, 0],
    ]);
    const id = run(img, { kind: 'center-crop', interpolation: 'bilinear' }, norm, scripted());
    expect(Array.from(id.out)).toEqual([1, -8, -17, -26, -35, -44, -53, -62, -71]);
    // perPixelNormalisation: (v - mean image) / 255, no per-channel mean or std.
    const p = run(img, { kind: 'center-crop', interpolation: 'bilinear' }, perPixelNormalisation(mean, 1), scripted());
    closeTo(p.out, [1, -8, -17, -26, -35, -44, -53, -62, -71].map((v) => v / 255), 6);
  });

  it('a mean image that cannot apply is refused, naming why', () => {
    const size = { width: 3, height: 3 };
    const images = { name: 'cifar10', channels: 1, size };
    const padCrop: Augmentation = { kind: 'pad-crop', pad: 4, flip: true, fill: 'mean' };
    expect(() => validateNormalisation(norm, padCrop, images)).not.toThrow();
    expect(() => validateNormalisation(norm, { ...padCrop, fill: 'black' }, images)).toThrow(/pad fill 'black' has no per-pixel mean outside the image/);
    expect(() => validateNormalisation(norm, { kind: 'center-crop', resize: 6, interpolation: 'bilinear' }, images)).toThrow(/applies to images at their own 3x3 size; augmentation center-crop resizes them/);
    expect(() => validateNormalisation(norm, padCrop, { ...images, size: { width: 4, height: 4 } })).toThrow(/the mean image has 9 values; 1x4x4 images need 16 \(\[C, H, W\]\)/);
    expect(() => validateNormalisation(norm, padCrop, { ...images, name: 'imagenet', size: undefined })).toThrow(/imagenet images differ in size: normalise per channel/);
  });

  it('the loader subtracts the training mean image from the test split too', async () => {
    const dir = tempDir();
    writeCifar10(dir, 2);
    const train = await openDataset({ kind: 'cifar10', dir }, 'train');
    if (!isInMemory(train)) throw new Error('CIFAR is held in memory');
    const meanImage = pixelMean(train);
    const p = await prepare({ dataset: { kind: 'cifar10', dir }, split: 'test', batch: 2, seed: 1, augment: 'test', normalisation: perPixelNormalisation(meanImage, 3) }, openDataset);
    const b = await produceBatch(p, 0);
    const planar = planarImage(1); // test record 1
    for (const i of [0, 1000, 2047, 3071]) expect(b.input[3072 + i], `value ${i}`).toBeCloseTo((planar[i] - meanImage[i]) / 255, 5);
    expect(defaultNormalisation('cifar10').meanImage).toBeUndefined();
  });
});

describe('train options', () => {
  const base = ['train', '--depth', '20', '--dataset', 'cifar10', '--data', join(tempDir(), 'none'), '--iterations', '1', '--quiet'];

  it('bad values name the option and what is allowed', async () => {
    let r = await runCli(...base, '--colour-jitter', '1.5');
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/--colour-jitter must be a number in \[0, 1\] \(0 turns it off\), got '1.5'/);
    r = await runCli(...base, '--lighting', '-0.1');
    expect(r.err).toMatch(/--lighting must be a number >= 0 \(0 turns it off\), got '-0.1'/);
    r = await runCli(...base, '--lighting', 'abc');
    expect(r.err).toMatch(/--lighting must be a number >= 0/);
    r = await runCli(...base, '--normalise', 'mean');
    expect(r.err).toMatch(/'--normalise <how>' argument 'mean' is invalid. Allowed choices are per-channel, per-pixel/);
  });

  it('colour flags outside ImageNet and a per-pixel mean for ImageNet are refused', async () => {
    let r = await runCli(...base, '--colour-jitter', '0.4');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--colour-jitter applies to ImageNet training .*the cifar10 recipe has no colour stage: leave it out or give 0/);
    r = await runCli(...base, '--lighting', '0.1');
    expect(r.err).toMatch(/--lighting applies to ImageNet training/);
    r = await runCli('train', '--depth', '18', '--dataset', 'imagenet', '--data', join(tempDir(), 'none'), '--normalise', 'per-pixel', '--quiet');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--normalise per-pixel needs images of one size held in memory \(CIFAR, MNIST\); ImageNet images differ in size: use --normalise per-channel/);
  });
});
