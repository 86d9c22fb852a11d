// Writers of the real dataset formats (CIFAR binary records, MNIST-style IDX, image folders) for the data tests.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import sharp from 'sharp';
import { rng } from '../src/graph/init.js';

/** A seeded 32x32 RGB image as CIFAR stores it: R plane, G plane, B plane. */
export function planarImage(seed: number): Uint8Array {
  const u = rng(seed, 'cifar-image');
  return Uint8Array.from({ length: 3072 }, () => Math.floor(u() * 256));
}

/** CIFAR-10 / CIFAR-100 binary records: label byte(s) then the three planes. */
export function cifarRecords(labels: number[][], seed0: number): Buffer {
  const record = labels[0].length + 3072;
  const b = Buffer.alloc(labels.length * record);
  labels.forEach((l, r) => {
    b.set(l, r * record);
    b.set(planarImage(seed0 + r), r * record + l.length);
  });
  return b;
}

/** Writes a CIFAR-10 binary folder with `perBatch` records in each of the five training batches and the test batch. */
export function writeCifar10(dir: string, perBatch: number): void {
  mkdirSync(dir, { recursive: true });
  for (let k = 1; k <= 5; k++) writeFileSync(join(dir, `data_batch_${k}.bin`), cifarRecords(Array.from({ length: perBatch }, (_, r) => [(r + k) % 10]), 100 * k));
  writeFileSync(join(dir, 'test_batch.bin'), cifarRecords(Array.from({ length: perBatch }, (_, r) => [r % 10]), 0));
}

export function idx(magic: number, dims: number[], data: Uint8Array): Buffer {
  const h = Buffer.alloc(4 + 4 * dims.length);
  h.writeUInt32BE(magic, 0);
  dims.forEach((d, k) => h.writeUInt32BE(d, 4 + 4 * k));
  return Buffer.concat([h, data]);
}

/** Writes MNIST-style IDX files for both splits: n images of h x w, labels i % 10. */
export function writeIdx(dir: string, n: number, h: number, w: number, gz: boolean): { images: Uint8Array; labels: Uint8Array } {
  mkdirSync(dir, { recursive: true });
  const u = rng(7, 'idx');
  const images = Uint8Array.from({ length: n * h * w }, () => Math.floor(u() * 256));
  const labels = Uint8Array.from({ length: n }, (_, i) => i % 10);
  const put = (name: string, b: Buffer): void => writeFileSync(join(dir, gz ? `${name}.gz` : name), gz ? gzipSync(b) : b);
  for (const s of ['train', 't10k']) {
    put(`${s}-images-idx3-ubyte`, idx(0x803, [n, h, w], images));
    put(`${s}-labels-idx1-ubyte`, idx(0x801, [n], labels));
  }
  return { images, labels };
}

/** A small seeded RGB image, interleaved. */
export function rgbImage(w: number, h: number, seed: number): Buffer {
  const u = rng(seed, 'folder-image');
  return Buffer.from(Uint8Array.from({ length: w * h * 3 }, () => Math.floor(u() * 256)));
}

/** Writes an ImageNet-style folder: for each split, `perClass` seeded images of w x h in each class, as PNG. */
export async function writeImageFolder(root: string, classes: string[], perClass: Record<'train' | 'val', number>, w: number, h: number): Promise<void> {
  for (const split of ['train', 'val'] as const) {
    for (const [k, cls] of classes.entries()) {
      mkdirSync(join(root, split, cls), { recursive: true });
      for (let i = 0; i < perClass[split]; i++) {
        const px = rgbImage(w + i, h + k, 1000 * k + i + (split === 'val' ? 500 : 0));
        await sharp(px, { raw: { width: w + i, height: h + k, channels: 3 } }).png().toFile(join(root, split, cls, `img${String(i).padStart(3, '0')}.png`));
      }
    }
  }
}

/** A smooth RGB gradient, interleaved: what JPEG compresses almost losslessly (seeded noise is its worst case). */
export function gradientImage(w: number, h: number): Buffer {
  const b = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) b.set([Math.round((255 * x) / Math.max(1, w - 1)), Math.round((255 * y) / Math.max(1, h - 1)), 128], (y * w + x) * 3);
  return b;
}
