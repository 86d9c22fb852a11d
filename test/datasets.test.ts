// Dataset readers: files written here in the real CIFAR, IDX and image-folder formats read back exactly; the real
// Fashion-MNIST reads as published; malformed or missing data fails with the file and what was expected.
import { existsSync, mkdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { DEBIAN_FASHION_MNIST, DatasetError, channelStats, isInMemory, openDataset, type Dataset, type InMemoryDataset } from '../src/train/datasets.js';
import { cifarRecords, gradientImage, idx, planarImage, rgbImage, writeCifar10, writeIdx } from './data-writers.js';
import { tempDir } from './helpers.js';

async function expectDatasetError(p: Promise<unknown>, file: string, message: RegExp): Promise<void> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, `expected a DatasetError about ${file}`).toBeInstanceOf(DatasetError);
  expect((e as DatasetError).file).toBe(file);
  expect((e as DatasetError).message).toMatch(message);
  expect((e as DatasetError).message.startsWith(file)).toBe(true);
}

function inMemory(d: Dataset): InMemoryDataset {
  if (!isInMemory(d)) throw new Error('expected an in-memory dataset');
  return d;
}

describe('CIFAR-10 binary', () => {
  it('reads every batch in order, planes to HWC, with labels and class names', async () => {
    const dir = join(tempDir(), 'cifar-10-batches-bin');
    writeCifar10(dir, 3);
    const train = inMemory(await openDataset({ kind: 'cifar10', dir }, 'train'));
    expect(train.length).toBe(15);
    expect(train.size).toEqual({ width: 32, height: 32 });
    expect(train.channels).toBe(3);
    expect(train.labels[0]).toBe('airplane');
    expect(train.labels[9]).toBe('truck');
    // Record 1 of data_batch_2 is sample 3 + 1 = 4.
    const s = train.readSync(4);
    expect(s.label).toBe((1 + 2) % 10);
    const planes = planarImage(200 + 1);
    // Pixel (row 5, col 7) of each plane lands at HWC position (5*32+7)*3 + c.
    for (let c = 0; c < 3; c++) expect(s.pixels[(5 * 32 + 7) * 3 + c]).toBe(planes[c * 1024 + 5 * 32 + 7]);
    expect(Array.from(s.pixels.subarray(0, 3))).toEqual([planes[0], planes[1024], planes[2048]]);
    expect((await train.read(4)).pixels).toEqual(s.pixels);
    const test = await openDataset({ kind: 'cifar10', dir }, 'test');
    expect(test.length).toBe(3);
    expect([0, 1, 2].map((i) => test.label(i))).toEqual([0, 1, 2]);
  });

  it('accepts the parent folder of cifar-10-batches-bin and reads batches.meta.txt', async () => {
    const root = tempDir();
    const dir = join(root, 'cifar-10-batches-bin');
    writeCifar10(dir, 1);
    const names = ['a0', 'a1', 'a2', 'a3', 'a4', 'a5', 'a6', 'a7', 'a8', 'a9'];
    writeFileSync(join(dir, 'batches.meta.txt'), names.join('\n') + '\n\n');
    const d = await openDataset({ kind: 'cifar10', dir: root }, 'test');
    expect(d.dir).toBe(dir);
    expect(d.labels).toEqual(names);
    writeFileSync(join(dir, 'batches.meta.txt'), 'only\ntwo\n');
    await expectDatasetError(openDataset({ kind: 'cifar10', dir: root }, 'test'), join(dir, 'batches.meta.txt'), /has 2 class names, 10 expected/);
  });

  it('a missing batch names it and lists the files of the format', async () => {
    const dir = tempDir();
    writeCifar10(dir, 1);
    unlinkSync(join(dir, 'data_batch_3.bin'));
    await expectDatasetError(openDataset({ kind: 'cifar10', dir }, 'train'), dir, /missing data_batch_3\.bin: the CIFAR-10 binary version has data_batch_1\.bin.*test_batch\.bin/);
  });

  it('a truncated batch, an empty one and a label out of range are refused', async () => {
    const dir = tempDir();
    writeCifar10(dir, 2);
    const file = join(dir, 'test_batch.bin');
    writeFileSync(file, cifarRecords([[1], [2]], 0).subarray(0, 3073 + 1000));
    await expectDatasetError(openDataset({ kind: 'cifar10', dir }, 'test'), file, /4073 bytes is not a whole number of 3073-byte records .*truncated or not a CIFAR file \(1 whole records, 1000 bytes left over\)/);
    writeFileSync(file, Buffer.alloc(0));
    await expectDatasetError(openDataset({ kind: 'cifar10', dir }, 'test'), file, /the file is empty/);
    writeFileSync(file, cifarRecords([[1], [10]], 0));
    await expectDatasetError(openDataset({ kind: 'cifar10', dir }, 'test'), file, /record 1 \(byte 3073\) has label 10; CIFAR-10 labels are 0\.\.9/);
  });

  it('a CIFAR-100 file given as CIFAR-10 is refused by its record size', async () => {
    const dir = tempDir();
    writeCifar10(dir, 1);
    const file = join(dir, 'test_batch.bin');
    writeFileSync(file, cifarRecords([[1, 2], [3, 4], [5, 6]], 0));
    await expectDatasetError(openDataset({ kind: 'cifar10', dir }, 'test'), file, /not a whole number of 3073-byte records/);
  });
});

describe('CIFAR-100 binary', () => {
  it('uses the fine label, reads fine_label_names.txt, accepts cifar-100-binary/', async () => {
    const root = tempDir();
    const dir = join(root, 'cifar-100-binary');
    mkdirSync(dir);
    writeFileSync(join(dir, 'train.bin'), cifarRecords([[0, 99], [19, 5], [3, 42]], 10));
    writeFileSync(join(dir, 'test.bin'), cifarRecords([[4, 7]], 20));
    const train = inMemory(await openDataset({ kind: 'cifar100', dir: root }, 'train'));
    expect(train.length).toBe(3);
    expect([0, 1, 2].map((i) => train.label(i))).toEqual([99, 5, 42]);
    expect(train.classes).toBe(100);
    expect(train.labels[0]).toBe('apple');
    expect(train.labels[99]).toBe('worm');
    const planes = planarImage(12);
    expect(train.readSync(2).pixels[(31 * 32 + 31) * 3 + 2]).toBe(planes[2048 + 31 * 32 + 31]);
    const names = Array.from({ length: 100 }, (_, i) => `fine${i}`);
    writeFileSync(join(dir, 'fine_label_names.txt'), names.join('\n'));
    expect((await openDataset({ kind: 'cifar100', dir }, 'test')).labels).toEqual(names);
  });

  it('fine label 100 and coarse label 20 are refused', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'train.bin'), cifarRecords([[0, 100]], 0));
    writeFileSync(join(dir, 'test.bin'), cifarRecords([[20, 1]], 0));
    await expectDatasetError(openDataset({ kind: 'cifar100', dir }, 'train'), join(dir, 'train.bin'), /record 0 \(byte 0\) has fine label 100; CIFAR-100 fine labels are 0\.\.99/);
    await expectDatasetError(openDataset({ kind: 'cifar100', dir }, 'test'), join(dir, 'test.bin'), /coarse label 20; CIFAR-100 coarse labels are 0\.\.19/);
  });

  it('a CIFAR-10 folder given as CIFAR-100 names the files it lacks', async () => {
    const dir = tempDir();
    writeCifar10(dir, 1);
    await expectDatasetError(openDataset({ kind: 'cifar100', dir }, 'train'), dir, /missing train\.bin: the CIFAR-100 binary version has train\.bin, test\.bin/);
  });
});

describe('MNIST-style IDX', () => {
  for (const gz of [true, false]) {
    it(`reads ${gz ? 'gzipped' : 'raw'} files back exactly`, async () => {
      const dir = tempDir();
      const { images, labels } = writeIdx(dir, 12, 5, 7, gz);
      for (const split of ['train', 'test'] as const) {
        const d = inMemory(await openDataset({ kind: 'mnist', dir }, split));
        expect(d.length).toBe(12);
        expect(d.size).toEqual({ width: 7, height: 5 });
        expect(d.channels).toBe(1);
        expect(d.labels).toEqual(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
        const s = d.readSync(11);
        expect(s.label).toBe(labels[11]);
        expect(Array.from(s.pixels)).toEqual(Array.from(images.subarray(11 * 35, 12 * 35)));
      }
    });
  }

  it('bad magic, truncation, trailing bytes, count mismatch, label range and bad gzip are refused', async () => {
    const dir = tempDir();
    writeIdx(dir, 4, 2, 2, false);
    const images = join(dir, 'train-images-idx3-ubyte');
    const labels = join(dir, 'train-labels-idx1-ubyte');
    const open = (): Promise<Dataset> => openDataset({ kind: 'fashion-mnist', dir }, 'train');
    // A labels file where images belong: right format, wrong kind.
    writeFileSync(images, idx(0x801, [4], new Uint8Array(4)));
    await expectDatasetError(open(), images, /bad IDX magic 0x00000801; expected 0x00000803 \(unsigned bytes, 3 dimensions\)/);
    writeFileSync(images, idx(0x803, [4, 2, 2], new Uint8Array(15)));
    await expectDatasetError(open(), images, /header declares 4x2x2 = 16 data bytes after the 16-byte header, the file has 15 \(truncated\)/);
    writeFileSync(images, idx(0x803, [4, 2, 2], new Uint8Array(17)));
    await expectDatasetError(open(), images, /the file has 17 \(trailing bytes after the data\)/);
    writeFileSync(images, Buffer.from([0, 0, 8]));
    await expectDatasetError(open(), images, /has 3 bytes, too short for an IDX header/);
    writeFileSync(images, idx(0x803, [3, 2, 2], new Uint8Array(12)));
    await expectDatasetError(open(), labels, /holds 4 labels but train-images-idx3-ubyte holds 3 images/);
    writeFileSync(images, idx(0x803, [4, 2, 2], new Uint8Array(16)));
    writeFileSync(labels, idx(0x801, [4], Uint8Array.from([0, 1, 10, 2])));
    await expectDatasetError(open(), labels, /label 2 is 10; fashion-mnist labels are 0\.\.9/);
    unlinkSync(labels);
    const gz = `${labels}.gz`;
    writeFileSync(gz, gzipSync(idx(0x801, [4], new Uint8Array(4))).subarray(0, 20));
    await expectDatasetError(open(), gz, /is not a valid gzip stream \(.*\): truncated or corrupt download\?/);
    unlinkSync(gz);
    await expectDatasetError(open(), dir, /no train-labels-idx1-ubyte or train-labels-idx1-ubyte\.gz \(expected MNIST-style IDX files: train-images-idx3-ubyte, /);
  });

  it('a missing or non-directory path says so', async () => {
    const missing = join(tempDir(), 'nope');
    await expectDatasetError(openDataset({ kind: 'fashion-mnist', dir: missing }, 'train'), missing, /no such directory \(expected the fashion-mnist dataset here\)/);
    const file = join(tempDir(), 'file');
    writeFileSync(file, 'x');
    await expectDatasetError(openDataset({ kind: 'cifar10', dir: file }, 'train'), file, /not a directory/);
  });
});

describe.skipIf(!existsSync(join(DEBIAN_FASHION_MNIST, 'train-images-idx3-ubyte.gz')))('the real Fashion-MNIST (Debian dataset-fashion-mnist)', () => {
  it('has 60k/10k 28x28 images, ten balanced classes, and the published first labels and pixels', async () => {
    const train = inMemory(await openDataset({ kind: 'fashion-mnist', dir: DEBIAN_FASHION_MNIST }, 'train'));
    const test = inMemory(await openDataset({ kind: 'fashion-mnist', dir: DEBIAN_FASHION_MNIST }, 'test'));
    expect([train.length, test.length]).toEqual([60000, 10000]);
    expect(train.size).toEqual({ width: 28, height: 28 });
    expect(train.labels).toEqual(['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']);
    // Reference values read with Python's gzip module from the same files.
    expect(Array.from({ length: 10 }, (_, i) => train.label(i))).toEqual([9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
    expect(Array.from({ length: 10 }, (_, i) => test.label(i))).toEqual([9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
    const sum = (p: Uint8Array): number => p.reduce((s, v) => s + v, 0);
    expect(sum(train.readSync(0).pixels)).toBe(76247);
    expect(Buffer.from(train.readSync(0).pixels.subarray(14 * 28, 15 * 28)).toString('hex')).toBe('000001040607020000000000ede2d9dfdedbdeddd8dfe5d7daff4d00');
    expect(sum(train.readSync(59999).pixels)).toBe(16684);
    expect(sum(test.readSync(0).pixels)).toBe(33456);
    expect(sum(test.readSync(9999).pixels)).toBe(24390);
    const counts = (d: InMemoryDataset): number[] => {
      const c = new Array<number>(10).fill(0);
      for (let i = 0; i < d.length; i++) c[d.label(i)]++;
      return c;
    };
    expect(counts(train)).toEqual(new Array(10).fill(6000));
    expect(counts(test)).toEqual(new Array(10).fill(1000));
    // The constants defaultNormalisation uses for Fashion-MNIST are its training set's.
    const stats = channelStats(train);
    expect(stats.mean[0]).toBeCloseTo(0.286, 3);
    expect(stats.std[0]).toBeCloseTo(0.353, 3);
  });
});

describe('ImageNet-style folder', () => {
  async function writeFolder(root: string): Promise<Record<string, Buffer>> {
    const raw: Record<string, Buffer> = {};
    const put = async (split: string, cls: string, name: string, w: number, h: number, seed: number): Promise<void> => {
      mkdirSync(join(root, split, cls), { recursive: true });
      const ext = name.slice(name.lastIndexOf('.') + 1).toLowerCase();
      const px = ext === 'png' || ext === 'webp' ? rgbImage(w, h, seed) : gradientImage(w, h);
      raw[`${split}/${cls}/${name}`] = px;
      const img = sharp(px, { raw: { width: w, height: h, channels: 3 } });
      const encoded = ext === 'png' ? img.png() : ext === 'webp' ? img.webp({ lossless: true }) : img.jpeg({ quality: 95 });
      writeFileSync(join(root, split, cls, name), await encoded.toBuffer());
    };
    await put('train', 'n02', 'b.png', 9, 6, 1);
    await put('train', 'n02', 'a.JPEG', 16, 12, 2);
    await put('train', 'n01', 'x.webp', 5, 7, 3);
    await put('val', 'n01', 'v.png', 4, 4, 4);
    await put('val', 'n02', 'w.jpg', 8, 8, 5);
    writeFileSync(join(root, 'train', 'n01', 'notes.txt'), 'not an image');
    return raw;
  }

  it('classes are the sorted subfolders; PNG and WebP decode exactly, JPEG closely', async () => {
    const root = tempDir();
    const raw = await writeFolder(root);
    const train = await openDataset({ kind: 'imagenet', dir: root }, 'train');
    expect(isInMemory(train)).toBe(false);
    expect(train.labels).toEqual(['n01', 'n02']);
    expect(train.length).toBe(3);
    expect([0, 1, 2].map((i) => train.label(i))).toEqual([0, 1, 1]);
    const webp = await train.read(0);
    expect([webp.width, webp.height, webp.channels, webp.label]).toEqual([5, 7, 3, 0]);
    expect(Buffer.from(webp.pixels).equals(raw['train/n01/x.webp'])).toBe(true);
    // Within a class, files sort by name: a.JPEG before b.png.
    const jpeg = await train.read(1);
    expect([jpeg.width, jpeg.height]).toEqual([16, 12]);
    const ref = raw['train/n02/a.JPEG'];
    const meanErr = jpeg.pixels.reduce((s, v, i) => s + Math.abs(v - ref[i]), 0) / ref.length;
    expect(meanErr).toBeLessThan(3);
    expect(Buffer.from((await train.read(2)).pixels).equals(raw['train/n02/b.png'])).toBe(true);
    const val = await openDataset({ kind: 'imagenet', dir: root }, 'test');
    expect(val.length).toBe(2);
    expect([val.label(0), val.label(1)]).toEqual([0, 1]);
  });

  it('grayscale and RGBA images come out as 3-channel RGB', async () => {
    const root = tempDir();
    mkdirSync(join(root, 'train', 'c'), { recursive: true });
    await sharp(Buffer.alloc(6, 77), { raw: { width: 3, height: 2, channels: 1 } }).png().toFile(join(root, 'train', 'c', 'g.png'));
    await sharp(Buffer.from([10, 20, 30, 128, 40, 50, 60, 255]), { raw: { width: 2, height: 1, channels: 4 } }).png().toFile(join(root, 'train', 'c', 'rgba.png'));
    const d = await openDataset({ kind: 'imagenet', dir: root }, 'train');
    const g = await d.read(0);
    expect([g.channels, g.pixels.length]).toEqual([3, 18]);
    expect(Array.from(g.pixels.subarray(0, 3))).toEqual([77, 77, 77]);
    const rgba = await d.read(1);
    expect(Array.from(rgba.pixels)).toEqual([10, 20, 30, 40, 50, 60]);
  });

  it('missing splits, empty classes, stray val classes and undecodable files are refused by name', async () => {
    const root = tempDir();
    await expectDatasetError(openDataset({ kind: 'imagenet', dir: root }, 'train'), join(root, 'train'), /no such directory; expected an ImageNet-style folder: .*\/train\/<class>\/\*\.jpg/);
    mkdirSync(join(root, 'train'));
    await expectDatasetError(openDataset({ kind: 'imagenet', dir: root }, 'train'), join(root, 'train'), /has no class subfolders/);
    mkdirSync(join(root, 'train', 'cat'));
    await expectDatasetError(openDataset({ kind: 'imagenet', dir: root }, 'train'), join(root, 'train', 'cat'), /has no images \(\.jpg, \.jpeg, \.png, \.webp\); every training class needs some/);
    writeFileSync(join(root, 'train', 'cat', 'broken.jpg'), Buffer.from('this is not a JPEG'));
    const truncated = await sharp(rgbImage(40, 30, 9), { raw: { width: 40, height: 30, channels: 3 } }).jpeg().toBuffer();
    writeFileSync(join(root, 'train', 'cat', 'cut.jpg'), truncated.subarray(0, truncated.length >> 1));
    const d = await openDataset({ kind: 'imagenet', dir: root }, 'train');
    await expectDatasetError(d.read(0), join(root, 'train', 'cat', 'broken.jpg'), /cannot decode the image \(.*\); expected a JPEG, PNG or WebP/);
    await expectDatasetError(d.read(1), join(root, 'train', 'cat', 'cut.jpg'), /cannot decode the image \(.*premature end.*\)/i);
    await expect(d.read(2)).rejects.toThrow(/sample index 2 is out of range 0\.\.1/);
    mkdirSync(join(root, 'val', 'dog'), { recursive: true });
    await expectDatasetError(openDataset({ kind: 'imagenet', dir: root }, 'test'), join(root, 'val', 'dog'), /is a class folder that .*train does not have/);
  });

  it('an unknown kind or split lists the known ones', async () => {
    await expect(openDataset({ kind: 'svhn' as 'mnist', dir: tempDir() }, 'train')).rejects.toThrow(/unknown dataset kind 'svhn'; known: cifar10, cifar100, mnist, fashion-mnist, imagenet/);
    await expect(openDataset({ kind: 'mnist', dir: tempDir() }, 'val' as 'test')).rejects.toThrow(/unknown split 'val'; known: train, test/);
  });
});
