// The images calibration runs on: a dataset split as train and eval read it (IDX, CIFAR; the training split by
// default), or any folder of images, searched recursively (an ImageNet-style folder's train/). A deterministic
// sample of N of them (seeded shuffle), each prepared by the server's code with the model's own preprocessing.

import { readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { detectKind } from '../eval/data.js';
import { type Protocol, channelsOf, viewSize, viewsOf } from '../eval/views.js';
import { rng } from '../graph/init.js';
import type { Preprocessing } from '../models/labels.js';
import { ServeError } from '../serve/errors.js';
import { DATASET_KINDS, DatasetError, type DatasetKind, type Split, isInMemory, openDataset } from '../train/datasets.js';
import { checkInputFolder } from '../util/files.js';
import { QuantizeError } from './qdq.js';

export interface CalibrationRequest {
  /** --calibrate: a dataset folder (IDX, CIFAR) or a folder of images (searched recursively). */
  data: string;
  dataset?: DatasetKind;
  /** Which split of a dataset (default train: calibrating on test images would leak into the accuracy). */
  split?: Split;
  /** How many images (default 256). */
  images: number;
  seed: number;
  pre: Preprocessing;
  /** The model's input channels, when its input shape says. */
  channels?: number;
  /** The model's dataset metadata (tells IDX readers apart). */
  modelDataset?: string;
}

export interface Skipped {
  file: string;
  reason: string;
}

export interface CalibrationSet {
  /** e.g. `fashion-mnist train split (/usr/share/datasets/fashion-mnist)` or `image folder photos/ (1,204 files)`. */
  description: string;
  path: string;
  /** Images available before sampling. */
  available: number;
  /** Images this set will deliver (the sample, at most `available`). */
  images: number;
  /** Batches of prepared inputs [n, C, crop, crop]; files that do not decode are skipped and replaced by the next ones. */
  batches(batch: number): AsyncGenerator<{ data: Float32Array; dims: number[] }>;
  /** Files skipped so far (filled while batches are read). */
  skipped: Skipped[];
}

/** A seeded permutation of 0..n-1 (Fisher-Yates on sfc32). */
export function shuffled(n: number, seed: number): Int32Array {
  const order = Int32Array.from({ length: n }, (_, i) => i);
  const u = rng(seed, 'calibration');
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(u() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/** Every regular, visible file under `dir`, recursively, sorted (so a seed picks the same images on any machine). */
function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (e.name.startsWith('.')) continue;
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() || (e.isSymbolicLink() && statSync(p, { throwIfNoEntry: false })?.isFile())) out.push(p);
    }
  };
  walk(dir);
  return out;
}

const plural = (n: number, w: string): string => `${n.toLocaleString('en-US')} ${w}${n === 1 ? '' : 's'}`;

type Item = { where: string; read: () => Promise<Parameters<typeof viewsOf>[0] | { error: string }> };

function setOf(description: string, path: string, items: Item[], r: CalibrationRequest): CalibrationSet {
  const protocol: Protocol = { pre: r.pre, tenCrop: false };
  const per = viewSize(protocol);
  const dims = [channelsOf(r.pre), r.pre.crop, r.pre.crop];
  const order = shuffled(items.length, r.seed);
  const want = Math.min(r.images, items.length);
  const skipped: Skipped[] = [];
  return {
    description,
    path,
    available: items.length,
    images: want,
    skipped,
    async *batches(batch) {
      skipped.length = 0;
      let next = 0;
      let delivered = 0;
      while (delivered < want && next < items.length) {
        const n = Math.min(batch, want - delivered);
        const data = new Float32Array(n * per);
        let k = 0;
        // Decode a few files at a time on libuv's threads; a file that fails is replaced by the next in the order.
        while (k < n && next < items.length) {
          const take = Math.min(n - k, items.length - next);
          const picked = Array.from({ length: take }, (_, j) => items[order[next + j]]);
          next += take;
          const results = await Promise.all(
            picked.map(async (it) => {
              const src = await it.read();
              if ('error' in src) return { it, error: src.error };
              const out = new Float32Array(per);
              try {
                await viewsOf(src, protocol, out, 0);
                return { it, out };
              } catch (e) {
                if (!(e instanceof ServeError)) throw e;
                return { it, error: e.message };
              }
            }),
          );
          for (const res of results) {
            if ('error' in res) skipped.push({ file: res.it.where, reason: res.error as string });
            else data.set(res.out, per * k++);
          }
        }
        if (k === 0) break;
        delivered += k;
        yield { data: data.subarray(0, k * per), dims: [k, ...dims] };
      }
    },
  };
}

/**
 * Opens the calibration images. Refuses (exit 2) an empty folder, a dataset whose images have another channel
 * count than the model takes, and a folder with no files; files that are not images are skipped while reading.
 */
export async function openCalibrationSet(r: CalibrationRequest): Promise<CalibrationSet> {
  checkInputFolder(r.data, '--calibrate');
  if (r.dataset !== undefined && !(DATASET_KINDS as readonly string[]).includes(r.dataset)) throw new QuantizeError(`unknown --dataset '${String(r.dataset)}'; known: ${DATASET_KINDS.join(', ')}`);
  const kind = r.dataset ?? detectKind(r.data, r.modelDataset);
  const split = r.split ?? 'train';
  if (kind !== 'imagenet') {
    const d = await openDataset({ kind, dir: r.data }, split);
    if (!isInMemory(d)) throw new Error(`${kind} is expected to be held in memory`);
    const want = r.channels ?? channelsOf(r.pre);
    if (d.channels !== want)
      throw new QuantizeError(`--calibrate ${r.data}: ${kind} images have ${d.channels} channel${d.channels > 1 ? 's' : ''}, but the model takes ${want} (${r.pre.channelOrder}): calibrate on images of the kind the model was trained on`);
    const items: Item[] = Array.from({ length: d.length }, (_, i) => ({ where: d.where(i), read: () => Promise.resolve({ sample: d.readSync(i) }) }));
    return setOf(`${kind} ${d.split} split`, d.dir, items, r);
  }
  // An ImageNet-style folder calibrates on its training images; any other folder on all of its files.
  let dir = r.data;
  const sub = join(r.data, split === 'train' ? 'train' : 'val');
  if (statSync(sub, { throwIfNoEntry: false })?.isDirectory()) dir = sub;
  const files = listFiles(dir);
  if (files.length === 0) throw new DatasetError(dir, 'holds no files (searched recursively); --calibrate needs a folder of images (JPEG, PNG, WebP, GIF, TIFF, AVIF) or a dataset folder (IDX, CIFAR)');
  const items: Item[] = files.map((f) => ({
    where: f,
    read: async () => {
      try {
        return { bytes: await readFile(f) };
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        return { error: `cannot read the file (${err.code ?? err.message})` };
      }
    },
  }));
  const rel = relative(process.cwd(), dir);
  const shown = rel === '' ? '.' : rel.startsWith('..') ? dir : rel;
  return setOf(`image folder ${shown} (${plural(files.length, 'file')})`, dir, items, r);
}
