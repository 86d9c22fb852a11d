// Readers of the training datasets in their real on-disk formats (CIFAR binary, MNIST-style IDX, ImageNet-style folders).

import { existsSync, readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';
import sharp from 'sharp';
import { datasetLabels } from '../models/labels.js';

const gunzipAsync = promisify(gunzip);

/** The datasets `resnet-onnx train --dataset` knows; `imagenet` is any ImageNet-style folder of classes. */
export const DATASET_KINDS = ['cifar10', 'cifar100', 'mnist', 'fashion-mnist', 'imagenet'] as const;
export type DatasetKind = (typeof DATASET_KINDS)[number];

/** `test` is CIFAR's test_batch / test.bin, IDX's t10k files and an image folder's `val/` (ILSVRC's test labels are not public). */
export type Split = 'train' | 'test';

/** Where a dataset lives: enough to open it again in another thread. */
export interface DatasetSource {
  kind: DatasetKind;
  dir: string;
}

/** One decoded image, interleaved (HWC) uint8, with its class index. */
export interface Sample {
  pixels: Uint8Array;
  width: number;
  height: number;
  channels: number;
  label: number;
}

export interface Dataset {
  readonly kind: DatasetKind;
  readonly split: Split;
  /** The directory the files were read from (after resolving a `cifar-10-batches-bin`-style subfolder). */
  readonly dir: string;
  readonly length: number;
  /** Number of classes; `labels[i]` names class i. */
  readonly classes: number;
  readonly labels: string[];
  readonly channels: number;
  /** Size of every image for fixed-size datasets (CIFAR, IDX); absent when images differ (folders). */
  readonly size?: { width: number; height: number };
  /** Class of sample i, without decoding it. */
  label(i: number): number;
  /** Where sample i comes from (its file, or the dataset and index), for error messages. */
  where(i: number): string;
  read(i: number): Promise<Sample>;
}

/** CIFAR and IDX: small enough to hold decoded in memory, so samples are read synchronously. */
export interface InMemoryDataset extends Dataset {
  readonly size: { width: number; height: number };
  /** Sample i; `pixels` is a view into the dataset's memory: copy before changing it. */
  readSync(i: number): Sample;
}

/** A dataset that cannot be read as its format requires. `file` is the file or folder at fault. */
export class DatasetError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
    this.name = 'DatasetError';
  }
}

export function isInMemory(d: Dataset): d is InMemoryDataset {
  return 'readSync' in d;
}

/** Where Debian's `dataset-fashion-mnist` installs the real Fashion-MNIST. */
export const DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist';

const FASHION_MNIST = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];

export async function openDataset(source: DatasetSource, split: Split): Promise<Dataset> {
  if (!(DATASET_KINDS as readonly string[]).includes(source.kind)) throw new Error(`unknown dataset kind '${String(source.kind)}'; known: ${DATASET_KINDS.join(', ')}`);
  if (split !== 'train' && split !== 'test') throw new Error(`unknown split '${String(split)}'; known: train, test`);
  if (!existsSync(source.dir)) throw new DatasetError(source.dir, `no such directory (expected the ${source.kind} dataset here)`);
  if (!statSync(source.dir).isDirectory()) throw new DatasetError(source.dir, `not a directory (expected the ${source.kind} dataset's folder)`);
  switch (source.kind) {
    case 'cifar10':
    case 'cifar100':
      return openCifar(source.kind, source.dir, split);
    case 'mnist':
    case 'fashion-mnist':
      return openIdx(source.kind, source.dir, split);
    case 'imagenet':
      return openFolder(source.dir, split);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// In-memory datasets: every image stored HWC in one buffer.

class MemoryDataset implements InMemoryDataset {
  readonly classes: number;
  private readonly stride: number;

  constructor(
    readonly kind: DatasetKind,
    readonly split: Split,
    readonly dir: string,
    readonly labels: string[],
    readonly size: { width: number; height: number },
    readonly channels: number,
    private readonly pixels: Uint8Array,
    private readonly targets: Uint8Array,
  ) {
    this.classes = labels.length;
    this.stride = size.width * size.height * channels;
  }

  get length(): number {
    return this.targets.length;
  }

  label(i: number): number {
    checkIndex(i, this.length);
    return this.targets[i];
  }

  where(i: number): string {
    return `${this.dir} (${this.split} sample ${i})`;
  }

  readSync(i: number): Sample {
    checkIndex(i, this.length);
    return { pixels: this.pixels.subarray(i * this.stride, (i + 1) * this.stride), width: this.size.width, height: this.size.height, channels: this.channels, label: this.targets[i] };
  }

  read(i: number): Promise<Sample> {
    return Promise.resolve(this.readSync(i));
  }
}

function checkIndex(i: number, length: number): void {
  if (!Number.isInteger(i) || i < 0 || i >= length) throw new RangeError(`sample index ${i} is out of range 0..${length - 1}`);
}

async function readWhole(file: string, what: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (e) {
    throw new DatasetError(file, `cannot read ${what} (${(e as Error).message})`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// CIFAR-10 / CIFAR-100 binary version (https://www.cs.toronto.edu/~kriz/cifar.html): fixed-size records of label
// byte(s) then 1024 R, 1024 G, 1024 B bytes, row-major 32x32. No header, so the size is all there is to check.

const CIFAR = {
  cifar10: { sub: 'cifar-10-batches-bin', train: ['data_batch_1.bin', 'data_batch_2.bin', 'data_batch_3.bin', 'data_batch_4.bin', 'data_batch_5.bin'], test: ['test_batch.bin'], labelBytes: 1, classes: 10, names: 'batches.meta.txt' },
  cifar100: { sub: 'cifar-100-binary', train: ['train.bin'], test: ['test.bin'], labelBytes: 2, classes: 100, names: 'fine_label_names.txt' },
} as const;

const CIFAR_SIDE = 32;
const CIFAR_PLANE = CIFAR_SIDE * CIFAR_SIDE;

async function openCifar(kind: 'cifar10' | 'cifar100', root: string, split: Split): Promise<InMemoryDataset> {
  const f = CIFAR[kind];
  // The archives unpack into a subfolder; accept the folder given or that subfolder.
  const dir = !existsSync(join(root, f[split][0])) && existsSync(join(root, f.sub)) ? join(root, f.sub) : root;
  const files = f[split].map((name) => join(dir, name));
  const missing = files.filter((p) => !existsSync(p));
  if (missing.length > 0) {
    throw new DatasetError(dir, `missing ${missing.map((p) => basename(p)).join(', ')}: the ${kind === 'cifar10' ? 'CIFAR-10' : 'CIFAR-100'} binary version has ${[...f.train, ...f.test].join(', ')} (in this folder or its ${f.sub}/ subfolder)`);
  }
  const record = f.labelBytes + 3 * CIFAR_PLANE;
  const buffers = await Promise.all(files.map((p) => readWhole(p, 'a CIFAR batch file')));
  buffers.forEach((b, k) => {
    if (b.length === 0 || b.length % record !== 0) {
      const whole = Math.floor(b.length / record);
      throw new DatasetError(files[k], `${b.length} bytes is not a whole number of ${record}-byte records (${f.labelBytes} label byte${f.labelBytes > 1 ? 's' : ''} + 3072 pixel bytes): ${b.length === 0 ? 'the file is empty' : `truncated or not a CIFAR file (${whole} whole records, ${b.length - whole * record} bytes left over)`}`);
    }
  });
  const count = buffers.reduce((s, b) => s + b.length / record, 0);
  const pixels = new Uint8Array(count * 3 * CIFAR_PLANE);
  const targets = new Uint8Array(count);
  let n = 0;
  buffers.forEach((b, k) => {
    for (let r = 0; r * record < b.length; r++, n++) {
      const at = r * record;
      // CIFAR-100 records are coarse then fine; the fine label is the 100-way class.
      const label = b[at + f.labelBytes - 1];
      if (label >= f.classes) throw new DatasetError(files[k], `record ${r} (byte ${at}) has ${kind === 'cifar100' ? 'fine ' : ''}label ${label}; ${kind === 'cifar10' ? 'CIFAR-10 labels are 0..9' : 'CIFAR-100 fine labels are 0..99'}`);
      if (kind === 'cifar100' && b[at] >= 20) throw new DatasetError(files[k], `record ${r} (byte ${at}) has coarse label ${b[at]}; CIFAR-100 coarse labels are 0..19`);
      targets[n] = label;
      // Planar RGB -> interleaved, the layout every dataset hands out.
      const src = at + f.labelBytes;
      const dst = n * 3 * CIFAR_PLANE;
      for (let p = 0; p < CIFAR_PLANE; p++) {
        pixels[dst + 3 * p] = b[src + p];
        pixels[dst + 3 * p + 1] = b[src + CIFAR_PLANE + p];
        pixels[dst + 3 * p + 2] = b[src + 2 * CIFAR_PLANE + p];
      }
    }
  });
  const labels = await classNames(join(dir, f.names), f.classes, datasetLabels(kind, f.classes));
  return new MemoryDataset(kind, split, dir, labels, { width: CIFAR_SIDE, height: CIFAR_SIDE }, 3, pixels, targets);
}

/** Class names from a one-name-per-line file if it exists (blank lines ignored), else the known names. */
async function classNames(file: string, classes: number, fallback: string[]): Promise<string[]> {
  if (!existsSync(file)) return fallback;
  const names = (await readWhole(file, 'the class names')).toString('utf8').split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
  if (names.length !== classes) throw new DatasetError(file, `has ${names.length} class names, ${classes} expected (one per line)`);
  return names;
}

// ---------------------------------------------------------------------------------------------------------------
// MNIST-style IDX (http://yann.lecun.com/exdb/mnist/): a big-endian header (0, 0, type 0x08 = ubyte, number of
// dimensions, then each dimension as uint32) followed by the bytes. Distributed gzipped; Debian keeps the .gz.

const IDX_FILES = {
  train: { images: 'train-images-idx3-ubyte', labels: 'train-labels-idx1-ubyte' },
  test: { images: 't10k-images-idx3-ubyte', labels: 't10k-labels-idx1-ubyte' },
} as const;

async function openIdx(kind: 'mnist' | 'fashion-mnist', dir: string, split: Split): Promise<InMemoryDataset> {
  const images = await readIdx(dir, IDX_FILES[split].images, 3);
  const labels = await readIdx(dir, IDX_FILES[split].labels, 1);
  const [count, height, width] = images.dims;
  if (labels.dims[0] !== count) throw new DatasetError(labels.file, `holds ${labels.dims[0]} labels but ${basename(images.file)} holds ${count} images`);
  const classes = 10;
  for (let i = 0; i < count; i++) {
    if (labels.data[i] >= classes) throw new DatasetError(labels.file, `label ${i} is ${labels.data[i]}; ${kind} labels are 0..${classes - 1}`);
  }
  const names = kind === 'fashion-mnist' ? [...FASHION_MNIST] : Array.from({ length: classes }, (_, i) => String(i));
  return new MemoryDataset(kind, split, dir, names, { width, height }, 1, images.data, labels.data);
}

async function readIdx(dir: string, name: string, ndims: number): Promise<{ file: string; dims: number[]; data: Uint8Array }> {
  const candidates = [join(dir, name), join(dir, `${name}.gz`)];
  const file = candidates.find((p) => existsSync(p));
  if (!file) throw new DatasetError(dir, `no ${name} or ${name}.gz (expected MNIST-style IDX files: ${Object.values(IDX_FILES).flatMap((f) => [f.images, f.labels]).join(', ')}, gzipped or not)`);
  let b = await readWhole(file, 'an IDX file');
  // Trust the bytes, not the name: some mirrors serve gunzipped files under .gz names and vice versa.
  if (b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b) {
    try {
      b = await gunzipAsync(b);
    } catch (e) {
      throw new DatasetError(file, `is not a valid gzip stream (${(e as Error).message}): truncated or corrupt download?`);
    }
  }
  const expectedMagic = (0x08 << 8) | ndims;
  const hex = (v: number): string => `0x${v.toString(16).padStart(8, '0')}`;
  if (b.length < 4) throw new DatasetError(file, `has ${b.length} bytes, too short for an IDX header`);
  const magic = b.readUInt32BE(0);
  if (magic !== expectedMagic) throw new DatasetError(file, `bad IDX magic ${hex(magic)}; expected ${hex(expectedMagic)} (unsigned bytes, ${ndims} dimension${ndims > 1 ? 's' : ''})`);
  const header = 4 + 4 * ndims;
  if (b.length < header) throw new DatasetError(file, `has ${b.length} bytes, shorter than its ${header}-byte IDX header (truncated)`);
  const dims = Array.from({ length: ndims }, (_, k) => b.readUInt32BE(4 + 4 * k));
  const bytes = dims.reduce((p, d) => p * d, 1);
  if (b.length - header !== bytes) {
    const what = b.length - header < bytes ? 'truncated' : 'trailing bytes after the data';
    throw new DatasetError(file, `header declares ${dims.join('x')} = ${bytes} data bytes after the ${header}-byte header, the file has ${b.length - header} (${what})`);
  }
  return { file, dims, data: new Uint8Array(b.buffer, b.byteOffset + header, bytes) };
}

/** Per-channel mean and standard deviation of pixel values scaled to [0, 1]: the normalisation for a dataset without published constants. */
export function channelStats(d: InMemoryDataset): { mean: number[]; std: number[] } {
  const c = d.channels;
  const sum = new Float64Array(c);
  const sq = new Float64Array(c);
  for (let i = 0; i < d.length; i++) {
    const px = d.readSync(i).pixels;
    for (let p = 0; p < px.length; p++) {
      const v = px[p] / 255;
      sum[p % c] += v;
      sq[p % c] += v * v;
    }
  }
  const n = d.length * d.size.width * d.size.height;
  const mean = Array.from(sum, (s) => s / n);
  return { mean, std: Array.from(sq, (s, k) => Math.sqrt(Math.max(0, s / n - mean[k] * mean[k]))) };
}

/**
 * The mean image of a dataset, [C, H, W] (planar) in pixel values 0..255: the paper's per-pixel mean. Summed in
 * float64 in sample order, so the same files always give the same bits.
 */
export function pixelMean(d: InMemoryDataset): Float32Array {
  const c = d.channels;
  const plane = d.size.width * d.size.height;
  const sum = new Float64Array(c * plane);
  for (let i = 0; i < d.length; i++) {
    const px = d.readSync(i).pixels;
    for (let p = 0; p < plane; p++) for (let k = 0; k < c; k++) sum[k * plane + p] += px[p * c + k];
  }
  return Float32Array.from(sum, (s) => s / d.length);
}

// ---------------------------------------------------------------------------------------------------------------
// ImageNet-style folder: DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg (torchvision's ImageFolder layout).

const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp'];
/** Far above ILSVRC's largest images (~12 MP), far below sharp's 268 MP default, which a small file can claim. */
const MAX_PIXELS = 64_000_000;

const FOLDER_SPLIT = { train: 'train', test: 'val' } as const;

function subfolders(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() || (e.isSymbolicLink() && statSync(join(dir, e.name)).isDirectory()))
    .map((e) => e.name)
    .sort();
}

async function openFolder(root: string, split: Split): Promise<Dataset> {
  const splitDir = join(root, FOLDER_SPLIT[split]);
  const layout = `an ImageNet-style folder: ${join(root, 'train')}/<class>/*.jpg and ${join(root, 'val')}/<class>/*.jpg`;
  if (!existsSync(splitDir) || !statSync(splitDir).isDirectory()) throw new DatasetError(splitDir, `no such directory; expected ${layout}`);
  // Class indices come from train/ so that val/ labels agree with what the network was trained on.
  const trainDir = join(root, FOLDER_SPLIT.train);
  const classes = existsSync(trainDir) ? subfolders(trainDir) : subfolders(splitDir);
  if (classes.length === 0) throw new DatasetError(existsSync(trainDir) ? trainDir : splitDir, `has no class subfolders; expected ${layout}`);
  const index = new Map(classes.map((c, i) => [c, i]));
  const files: string[] = [];
  const targets: number[] = [];
  for (const c of subfolders(splitDir)) {
    const k = index.get(c);
    if (k === undefined) throw new DatasetError(join(splitDir, c), `is a class folder that ${trainDir} does not have; the splits must have the same classes`);
    const images = readdirSync(join(splitDir, c))
      .filter((n) => IMAGE_EXTENSIONS.includes(n.slice(n.lastIndexOf('.')).toLowerCase()))
      .sort();
    if (images.length === 0 && split === 'train') throw new DatasetError(join(splitDir, c), `has no images (${IMAGE_EXTENSIONS.join(', ')}); every training class needs some`);
    for (const n of images) {
      files.push(join(splitDir, c, n));
      targets.push(k);
    }
  }
  if (files.length === 0) throw new DatasetError(splitDir, `has no images (${IMAGE_EXTENSIONS.join(', ')}) in its class folders`);
  return new FolderDataset(split, root, classes, files, Int32Array.from(targets));
}

class FolderDataset implements Dataset {
  readonly kind = 'imagenet';
  readonly channels = 3;
  readonly classes: number;

  constructor(
    readonly split: Split,
    readonly dir: string,
    readonly labels: string[],
    private readonly files: string[],
    private readonly targets: Int32Array,
  ) {
    this.classes = labels.length;
  }

  get length(): number {
    return this.files.length;
  }

  label(i: number): number {
    checkIndex(i, this.length);
    return this.targets[i];
  }

  where(i: number): string {
    checkIndex(i, this.length);
    return this.files[i];
  }

  async read(i: number): Promise<Sample> {
    checkIndex(i, this.length);
    const file = this.files[i];
    try {
      // 'truncated' rather than sharp's stricter 'warning': ILSVRC has JPEGs with benign libjpeg warnings
      // (extraneous bytes) that PIL and Torch load; a cut-off file still fails.
      const { data, info } = await sharp(file, { failOn: 'truncated', limitInputPixels: MAX_PIXELS, autoOrient: true, pages: 1, page: 0 })
        .removeAlpha()
        .toColourspace('srgb')
        .raw()
        .toBuffer({ resolveWithObject: true });
      return { pixels: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, channels: info.channels, label: this.targets[i] };
    } catch (e) {
      throw new DatasetError(file, `cannot decode the image (${(e as Error).message.split('\n')[0]}); expected a JPEG, PNG or WebP of at most ${MAX_PIXELS.toLocaleString('en-US')} pixels`);
    }
  }
}
