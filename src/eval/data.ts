// The labelled images eval measures on: MNIST-style IDX and CIFAR binary splits through train's readers, or a
// folder with one sub-folder per class (named by WordNet id, class index or label text), read as raw file bytes
// so that they are decoded exactly as the server decodes an upload.

import { existsSync, readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DATASET_KINDS, DEBIAN_FASHION_MNIST, DatasetError, type DatasetKind, type InMemoryDataset, type Sample, type Split, isInMemory, openDataset } from '../train/datasets.js';
import { checkInputFolder } from '../util/files.js';
import { type FolderMatch, labelKey, matchFolders } from './classes.js';

export type SetFormat = 'idx' | 'cifar' | 'folder';

/** What eval reads image i as: decoded pixels (IDX, CIFAR) or the bytes of an image file (folders). */
export type Source = { sample: Sample } | { bytes: Buffer };

/** A file that was not evaluated, and why. */
export interface Skipped {
  file: string;
  reason: string;
}

export interface LabelledSet {
  readonly format: SetFormat;
  /** The folder the images come from (a split's folder for ImageNet-style layouts). */
  readonly path: string;
  readonly split: Split;
  /** e.g. `fashion-mnist test split` or `image folder, 10 classes matched by index`. */
  readonly description: string;
  readonly length: number;
  /** Class folders matched, and how (folders only). */
  readonly match?: { by: FolderMatch['by']; folders: number };
  /** Things found but never read (e.g. folders inside class folders), listed with the skipped files. */
  readonly ignored: Skipped[];
  /** Warnings about the pairing of data and model, e.g. class names that differ. */
  readonly notes: string[];
  /** The model output that image i belongs to. */
  label(i: number): number;
  where(i: number): string;
  /** Image i, or why it cannot be read (a file that vanished or is not readable). */
  read(i: number): Promise<Source | { error: string }>;
}

export interface SetRequest {
  /** --data: a dataset folder (IDX, CIFAR, ImageNet-style train/ and val/) or a folder of class folders. */
  data: string;
  /** --dataset: how to read `data`; detected from its contents when absent. */
  dataset?: DatasetKind;
  split: Split;
  /** The model's labels (may be empty) and number of outputs. */
  labels: readonly string[];
  classes: number;
}

/** Where --data defaults to for a model's dataset, as in train: only Debian's Fashion-MNIST is installable here. */
export function defaultDataFor(modelDataset: string | undefined): string | undefined {
  return modelDataset === 'fashion-mnist' ? DEBIAN_FASHION_MNIST : undefined;
}

const IDX_MARKERS = ['t10k-images-idx3-ubyte', 'train-images-idx3-ubyte'];
const CIFAR10_MARKERS = ['test_batch.bin', 'data_batch_1.bin', 'cifar-10-batches-bin'];
const CIFAR100_MARKERS = ['test.bin', 'train.bin', 'cifar-100-binary'];

/** The reader a folder's contents call for: IDX files, CIFAR batches, or else image folders. */
export function detectKind(dir: string, modelDataset: string | undefined): DatasetKind {
  const has = (names: string[]): boolean => names.some((n) => existsSync(join(dir, n)) || existsSync(join(dir, `${n}.gz`)));
  if (has(IDX_MARKERS)) return modelDataset === 'mnist' || modelDataset === 'fashion-mnist' ? modelDataset : 'mnist';
  if (has(CIFAR10_MARKERS)) return 'cifar10';
  if (has(CIFAR100_MARKERS)) return 'cifar100';
  return 'imagenet';
}

export async function openLabelledSet(r: SetRequest, modelDataset?: string): Promise<LabelledSet> {
  checkInputFolder(r.data, '--data');
  if (r.dataset !== undefined && !(DATASET_KINDS as readonly string[]).includes(r.dataset)) throw new DatasetError(r.data, `unknown --dataset '${String(r.dataset)}'; known: ${DATASET_KINDS.join(', ')}`);
  const kind = r.dataset ?? detectKind(r.data, modelDataset);
  if (kind === 'imagenet') return openClassFolders(r);
  const d = await openDataset({ kind, dir: r.data }, r.split);
  if (!isInMemory(d)) throw new Error(`${kind} is expected to be held in memory`);
  return memorySet(d, r);
}

function memorySet(d: InMemoryDataset, r: SetRequest): LabelledSet {
  if (d.classes !== r.classes)
    throw new DatasetError(d.dir, `holds ${d.classes} classes (${d.kind}) but the model has ${r.classes} outputs: evaluate a model trained on this dataset, or give --dataset for another reader`);
  const notes: string[] = [];
  const differ = r.labels.length === d.classes ? r.labels.map((l, i) => [l, d.labels[i]]).filter(([a, b]) => labelKey(a) !== labelKey(b)) : [];
  if (differ.length > 0)
    notes.push(`the model's class names differ from the data's (${differ.slice(0, 3).map(([a, b]) => `'${a}' vs '${b}'`).join(', ')}${differ.length > 3 ? ', ...' : ''}): class i of the data is scored as output i`);
  const format: SetFormat = d.kind === 'cifar10' || d.kind === 'cifar100' ? 'cifar' : 'idx';
  return {
    format,
    path: d.dir,
    split: d.split,
    description: `${d.kind} ${d.split} split`,
    length: d.length,
    ignored: [],
    notes,
    label: (i) => d.label(i),
    where: (i) => d.where(i),
    read: (i) => Promise.resolve({ sample: d.readSync(i) }),
  };
}

const SPLIT_FOLDER = { train: 'train', test: 'val' } as const;

function isFolder(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

const visible = (name: string): boolean => !name.startsWith('.');

/**
 * DIR/<class>/* , or an ImageNet-style DIR/train/<class>/* and DIR/val/<class>/* (val/ for the default test
 * split). Every regular file in a class folder is an image to evaluate; one that does not decode is skipped and listed.
 */
function openClassFolders(r: SetRequest): LabelledSet {
  const root = r.data;
  const splitLayout = isFolder(join(root, 'train')) || isFolder(join(root, 'val'));
  const dir = splitLayout ? join(root, SPLIT_FOLDER[r.split]) : root;
  if (splitLayout && !isFolder(dir))
    throw new DatasetError(dir, `no such folder: ${root} has the ImageNet layout (train/, val/) but no ${SPLIT_FOLDER[r.split]}/ for the ${r.split} split`);
  const entries = readdirSync(dir, { withFileTypes: true }).filter((e) => visible(e.name));
  const folders = entries.filter((e) => isFolder(join(dir, e.name))).map((e) => e.name).sort();
  const layout = `${dir}/<class>/<image>, one folder per class named by WordNet id (n01440764), class index (0..${r.classes - 1}) or class name`;
  if (folders.length === 0) {
    const files = entries.length;
    throw new DatasetError(dir, `has no class folders${files > 0 ? ` (${files} file${files > 1 ? 's' : ''} directly in it, which carry no label)` : ' (it is empty)'}; expected ${layout}`);
  }
  const match = matchFolders(folders, r.labels, r.classes);
  const files: string[] = [];
  const targets: number[] = [];
  const ignored: Skipped[] = [];
  for (const f of folders) {
    const k = match.index.get(f) as number;
    const names = readdirSync(join(dir, f), { withFileTypes: true })
      .filter((e) => visible(e.name))
      .map((e) => e.name)
      .sort();
    for (const n of names) {
      const p = join(dir, f, n);
      if (isFolder(p)) ignored.push({ file: p, reason: 'a folder inside a class folder (class folders are read one level deep)' });
      else {
        files.push(p);
        targets.push(k);
      }
    }
  }
  if (files.length === 0) throw new DatasetError(dir, `its ${folders.length} class folder${folders.length > 1 ? 's are' : ' is'} empty; expected ${layout}`);
  const by = { wnid: 'WordNet id', index: 'class index', label: 'class name' }[match.by];
  return {
    format: 'folder',
    path: dir,
    split: r.split,
    description: `image folder, ${folders.length} class${folders.length > 1 ? 'es' : ''} by ${by}`,
    length: files.length,
    match: { by: match.by, folders: folders.length },
    ignored,
    notes: [],
    label: (i) => targets[i],
    where: (i) => files[i],
    async read(i) {
      try {
        return { bytes: await readFile(files[i]) };
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        return { error: `cannot read the file (${err.code ?? err.message})` };
      }
    },
  };
}
