// Augmentation: crops, flips and padding land where they should on tiny hand-made images, resizing agrees with PIL,
// output is normalised CHW, and the randomness is a function of (seed, epoch, sample) only.
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { rng } from '../src/graph/init.js';
import { augment, defaultAugmentation, outputSize, resample, sampleRandom, validateAugmentation, type Augmentation, type Normalisation } from '../src/train/augment.js';
import type { Sample } from '../src/train/datasets.js';

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
