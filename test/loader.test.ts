// The batch loader: the worker delivers exactly the batches computed in-process, resuming at iteration k gives the
// same batches as getting there from 0, it keeps producing while the main thread is blocked, and dataset errors
// inside the worker reject next() instead of hanging; it also runs from compiled JavaScript.
import { execFileSync } from 'node:child_process';
import { symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DatasetError, openDataset } from '../src/train/datasets.js';
import { BatchLoader, Sampler, prepare, produceBatch, type Batch, type LoaderOptions } from '../src/train/loader.js';
import { writeCifar10, writeIdx, writeImageFolder } from './data-writers.js';
import { tempDir } from './helpers.js';

const cifar = join(tempDir(), 'cifar-10-batches-bin');
const idxDir = tempDir();
const folder = tempDir();

beforeAll(async () => {
  writeCifar10(cifar, 20); // 100 training samples, 20 test samples
  writeIdx(idxDir, 2048, 28, 28, true);
  await writeImageFolder(folder, ['a', 'b', 'c'], { train: 4, val: 3 }, 20, 16);
});

const loaders: BatchLoader[] = [];
afterAll(async () => {
  await Promise.all(loaders.map((l) => l.close()));
});

async function open(o: LoaderOptions): Promise<BatchLoader> {
  const l = await BatchLoader.open(o);
  loaders.push(l);
  return l;
}

function same(a: Batch, b: Batch): void {
  expect([a.iteration, a.epoch, a.count]).toEqual([b.iteration, b.epoch, b.count]);
  expect(Array.from(a.indices)).toEqual(Array.from(b.indices));
  expect(a.labels).toEqual(b.labels);
  expect(a.input).toEqual(b.input);
}

const trainCifar: LoaderOptions = { dataset: { kind: 'cifar10', dir: cifar }, split: 'train', batch: 16, seed: 11, augment: 'train' };

describe('training order', () => {
  it('each epoch is a permutation of its own; the last partial batch is dropped', () => {
    const s = new Sampler(100, 16, 'train', 11);
    expect(s.batchesPerEpoch).toBe(6);
    const epoch = (e: number): number[] => Array.from({ length: 6 }, (_, k) => Array.from(s.at(e * 6 + k).indices)).flat();
    const e0 = epoch(0);
    expect(e0.length).toBe(96);
    expect(new Set(e0).size).toBe(96);
    expect(e0.every((i) => i >= 0 && i < 100)).toBe(true);
    expect(s.at(6).epoch).toBe(1);
    expect(epoch(1)).not.toEqual(e0);
    expect(e0).not.toEqual(Array.from({ length: 96 }, (_, i) => i));
    // Another seed, another order; the same seed, the same order (no hidden state).
    expect(Array.from(new Sampler(100, 16, 'train', 12).at(0).indices)).not.toEqual(e0.slice(0, 16));
    expect(Array.from(new Sampler(100, 16, 'train', 11).at(7).indices)).toEqual(Array.from(s.at(7).indices));
  });

  it('a dataset smaller than one batch is refused', () => {
    expect(() => new Sampler(10, 16, 'train', 1)).toThrow(/the dataset has 10 samples, fewer than one batch of 16/);
  });
});

describe('BatchLoader', () => {
  it('delivers, from the worker, exactly the batches computed in-process, across an epoch boundary', async () => {
    const local = await prepare(trainCifar, openDataset);
    const l = await open(trainCifar);
    expect(l.info).toMatchObject({ length: 100, classes: 10, channels: 3, height: 32, width: 32, batch: 16, batchesPerEpoch: 6 });
    for (let k = 0; k < 14; k++) {
      const b = await l.next();
      expect(b.input.length).toBe(16 * 3 * 32 * 32);
      same(b, await produceBatch(local, k));
    }
  });

  it('started at iteration k it gives the batches of a loader advanced from 0 to k', async () => {
    const from0 = await open(trainCifar);
    const fromK = await open({ ...trainCifar, startIteration: 8 });
    for (let k = 0; k < 8; k++) await from0.next();
    for (let k = 8; k < 13; k++) {
      const [a, b] = await Promise.all([from0.next(), fromK.next()]);
      expect(a.iteration).toBe(k);
      same(a, b);
    }
  });

  it('test order is sequential; the last batch is partial, zero-padded, and then the next pass starts', async () => {
    const l = await open({ dataset: { kind: 'cifar10', dir: cifar }, split: 'test', batch: 16, seed: 1, augment: 'test' });
    expect(l.info.batchesPerEpoch).toBe(2);
    const b0 = await l.next();
    expect(Array.from(b0.indices)).toEqual(Array.from({ length: 16 }, (_, i) => i));
    expect(Array.from(b0.labels)).toEqual(Array.from({ length: 16 }, (_, i) => BigInt(i % 10)));
    const b1 = await l.next();
    expect([b1.count, b1.epoch]).toEqual([4, 0]);
    expect(Array.from(b1.indices)).toEqual([16, 17, 18, 19]);
    expect(b1.input.length).toBe(16 * 3072);
    expect(b1.input.subarray(4 * 3072).every((v) => v === 0)).toBe(true);
    expect(b1.input.subarray(0, 4 * 3072).some((v) => v !== 0)).toBe(true);
    expect(Array.from(b1.labels.subarray(4))).toEqual(new Array(12).fill(0n));
    const b2 = await l.next();
    expect([b2.epoch, b2.iteration, b2.indices[0]]).toEqual([1, 2, 0]);
    same({ ...b2, iteration: 0, epoch: 0 }, b0);
  });

  it('keeps producing while the main thread is blocked', async () => {
    const l = await open({ dataset: { kind: 'fashion-mnist', dir: idxDir }, split: 'train', batch: 256, seed: 1, augment: 'train', prefetch: 1 });
    const b0 = await l.next(); // hands a credit back: the worker starts on batch 1 now
    const blockedFrom = performance.timeOrigin + performance.now();
    while (performance.timeOrigin + performance.now() - blockedFrom < 200) {
      // busy-wait: what onnxruntime's session.run does to this thread
    }
    const blockedUntil = performance.timeOrigin + performance.now();
    const b1 = await l.next();
    expect(b1.iteration).toBe(1);
    // Made while this thread could not run anything: the worker did not need it.
    expect(b1.producedAt).toBeGreaterThan(b0.producedAt);
    expect(b1.producedAt).toBeLessThan(blockedUntil);
  });

  it('decodes an image folder, with every output the augmentation size', async () => {
    const o: LoaderOptions = { dataset: { kind: 'imagenet', dir: folder }, split: 'train', batch: 4, seed: 2, augment: 'train', augmentation: { kind: 'random-sized-crop', size: 8, area: [0.08, 1], aspect: [3 / 4, 4 / 3], flip: true, interpolation: 'bilinear' } };
    const l = await open(o);
    expect(l.info).toMatchObject({ length: 12, classes: 3, labels: ['a', 'b', 'c'], height: 8, width: 8, batchesPerEpoch: 3 });
    const local = await prepare(o, openDataset);
    for (let k = 0; k < 4; k++) same(await l.next(), await produceBatch(local, k));
    const val = await open({ dataset: { kind: 'imagenet', dir: folder }, split: 'test', batch: 4, seed: 2, augment: 'test', augmentation: { kind: 'center-crop', resize: 16, size: 12, interpolation: 'bilinear' } });
    const v = await val.next();
    expect([val.info.length, v.input.length]).toEqual([9, 4 * 3 * 12 * 12]);
    expect(Array.from(v.labels)).toEqual([0n, 0n, 0n, 1n]);
  });

  it('a missing dataset rejects open() with the dataset error', async () => {
    const dir = join(tempDir(), 'missing');
    const e = await BatchLoader.open({ ...trainCifar, dataset: { kind: 'cifar10', dir } }).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(DatasetError);
    expect((e as DatasetError).file).toBe(dir);
    expect((e as Error).message).toMatch(/no such directory/);
    await expect(BatchLoader.open({ ...trainCifar, limit: 101 })).rejects.toThrow(/limit must be an integer in 1\.\.100/);
    await expect(BatchLoader.open({ ...trainCifar, dataset: { kind: 'fashion-mnist', dir: idxDir }, normalisation: { mean: [0, 0, 0], std: [1, 1, 1] } })).rejects.toThrow(/3 means and 3 stds; fashion-mnist images have 1 channel/);
  });

  it('a corrupt image mid-run: earlier batches arrive, then next() rejects naming the file, and keeps rejecting', async () => {
    const root = tempDir();
    await writeImageFolder(root, ['x', 'y'], { train: 4, val: 1 }, 10, 10);
    const bad = join(root, 'val', 'y', 'img000.png');
    writeFileSync(bad, Buffer.from('not a png'));
    const l = await open({ dataset: { kind: 'imagenet', dir: root }, split: 'test', batch: 1, seed: 1, augment: 'test', augmentation: { kind: 'center-crop', size: 8, interpolation: 'bilinear' } });
    const first = await l.next();
    expect(first.count).toBe(1);
    await expect(l.next()).rejects.toThrow(new RegExp(`^${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: cannot decode the image`));
    await expect(l.next()).rejects.toThrow(/cannot decode the image/);
  });

  it('an image too small for the crop is named in the error', async () => {
    const l = await open({ dataset: { kind: 'imagenet', dir: folder }, split: 'test', batch: 2, seed: 1, augment: 'test', augmentation: { kind: 'center-crop', size: 19, interpolation: 'bilinear' } });
    // The first val image of class a is 20x16.
    await expect(l.next()).rejects.toThrow(new RegExp(`^${join(folder, 'val', 'a', 'img000.png')}: center-crop: a 19x19 crop does not fit in the 20x16 image`));
  });

  it('close() rejects a pending next() and later ones', async () => {
    const l = await BatchLoader.open({ ...trainCifar, prefetch: 1 });
    await l.next();
    await l.next();
    // Either the batch arrives before close() or the wait is cut short: it must not hang.
    const settled = l.next().then(
      () => 'a batch',
      (e: unknown) => (e as Error).message,
    );
    await l.close();
    expect(['a batch', 'the loader is closed']).toContain(await settled);
    await expect(l.next()).rejects.toThrow(/the loader is closed/);
  });
});

describe('from compiled JavaScript (dist)', () => {
  it('the compiled loader finds its compiled worker and gives the same batch as the sources', async () => {
    const root = fileURLToPath(new URL('..', import.meta.url));
    const out = tempDir('resnet-onnx-dist-');
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    // Only the loader and what it imports, compiled with the project's options into a private folder.
    execFileSync(process.execPath, [tsc, '--outDir', out, '--rootDir', root, '--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--target', 'ES2022', '--strict', '--skipLibCheck', '--types', 'node', join(root, 'src/train/loader.ts'), join(root, 'src/train/loader-worker.ts')], { cwd: root, stdio: 'pipe' });
    writeFileSync(join(out, 'package.json'), JSON.stringify({ name: 'resnet-onnx', type: 'module' }));
    symlinkSync(join(root, 'node_modules'), join(out, 'node_modules'));
    const script = `
      const { BatchLoader } = await import(${JSON.stringify(join(out, 'src/train/loader.js'))});
      const l = await BatchLoader.open(${JSON.stringify({ ...trainCifar, startIteration: 3 })});
      const b = await l.next();
      await l.close();
      let sum = 0; for (const v of b.input) sum += v;
      console.log(JSON.stringify({ iteration: b.iteration, indices: Array.from(b.indices), sum }));`;
    const printed = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: out, encoding: 'utf8' });
    const got = JSON.parse(printed) as { iteration: number; indices: number[]; sum: number };
    const want = await produceBatch(await prepare(trainCifar, openDataset), 3);
    let sum = 0;
    for (const v of want.input) sum += v;
    expect(got.iteration).toBe(3);
    expect(got.indices).toEqual(Array.from(want.indices));
    expect(got.sum).toBeCloseTo(sum, 6);
  }, 120_000);
});
