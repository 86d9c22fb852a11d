// An image -> the network inputs eval scores it on: the single centre crop (the server's prepareImage, unchanged)
// or ten crops (4 corners and centre, and their mirror images). All normalisation is the server's `normalise`.

import sharp from 'sharp';
import type { Preprocessing } from '../models/labels.js';
import { type ImageLimits, normalise, prepareImage } from '../serve/preprocess.js';
import type { Sample } from '../train/datasets.js';
import type { Source } from './data.js';

/** Far above ILSVRC's largest images (~12 MP); the dataset, not the server's 16-pixel floor, decides what is small. */
export const EVAL_LIMITS: ImageLimits = { maxPixels: 64_000_000, minSide: 1 };

export interface Protocol {
  pre: Preprocessing;
  tenCrop: boolean;
}

export function channelsOf(pre: Preprocessing): 1 | 3 {
  return pre.channelOrder === 'L' ? 1 : 3;
}

export function viewsPerImage(p: Protocol): number {
  return p.tenCrop ? 10 : 1;
}

/** Values of one view: C x crop x crop. */
export function viewSize(p: Protocol): number {
  return channelsOf(p.pre) * p.pre.crop * p.pre.crop;
}

/** The centre `size` x `size` window of an interleaved image; the same window prepareImage takes when no resize is needed. */
function centreWindow(px: Uint8Array, w: number, h: number, ch: number, size: number): Uint8Array {
  const left = Math.floor((w - size) / 2);
  const top = Math.floor((h - size) / 2);
  if (left === 0 && top === 0 && w === size && h === size) return px;
  return window(px, w, ch, left, top, size, false);
}

function window(px: Uint8Array, w: number, ch: number, left: number, top: number, size: number, mirror: boolean): Uint8Array {
  const out = new Uint8Array(size * size * ch);
  for (let y = 0; y < size; y++) {
    const row = ((top + y) * w + left) * ch;
    if (!mirror) out.set(px.subarray(row, row + size * ch), y * size * ch);
    else for (let x = 0; x < size; x++) for (let c = 0; c < ch; c++) out[(y * size + x) * ch + c] = px[row + (size - 1 - x) * ch + c];
  }
  return out;
}

/**
 * Ten crops of a square (side x side, interleaved) into `out` at `offset`: top-left, top-right, bottom-left,
 * bottom-right, centre, then the same five mirrored left-right.
 */
function tenCrops(square: Uint8Array, side: number, pre: Preprocessing, out: Float32Array, offset: number): void {
  const ch = channelsOf(pre);
  const c = pre.crop;
  const m = Math.floor((side - c) / 2);
  const corners: [number, number][] = [
    [0, 0],
    [side - c, 0],
    [0, side - c],
    [side - c, side - c],
    [m, m],
  ];
  const n = ch * c * c;
  let k = 0;
  for (const mirror of [false, true]) for (const [left, top] of corners) out.set(normalise(window(square, side, ch, left, top, c, mirror), ch, pre), offset + n * k++);
}

/**
 * Writes the views of an encoded image (as uploaded to the server) into `out` at `offset`. Throws the server's
 * ServeError when the bytes are not an image it decodes.
 */
export async function viewsOfBytes(bytes: Buffer, p: Protocol, out: Float32Array, offset: number): Promise<void> {
  if (!p.tenCrop) {
    out.set((await prepareImage(bytes, p.pre, EVAL_LIMITS)).tensor, offset);
    return;
  }
  // The ten crops come from the centre resize x resize square (AlexNet's 10-crop): the server's resize and
  // decode, stopped before the crop and the normalisation.
  const square = await prepareImage(bytes, { ...p.pre, crop: p.pre.resize, meanImage: undefined }, EVAL_LIMITS);
  tenCrops(square.crop, p.pre.resize, p.pre, out, offset);
}

/** An in-memory sample (IDX, CIFAR) as a lossless PNG: the way into the server's decoder when it needs resizing. */
function png(s: Sample): Promise<Buffer> {
  return sharp(Buffer.from(s.pixels.buffer, s.pixels.byteOffset, s.pixels.length), { raw: { width: s.width, height: s.height, channels: s.channels as 1 | 3 } })
    .png({ compressionLevel: 0 })
    .toBuffer();
}

/**
 * Writes the views of a decoded sample. When its shorter side already is the resize and its channels are the
 * model's, prepareImage's resize is the identity: the crop is cut here and normalised by the server's code
 * (a test checks this agrees bit for bit with the PNG route). Otherwise the sample goes through prepareImage as a PNG.
 */
export async function viewsOfSample(s: Sample, p: Protocol, out: Float32Array, offset: number): Promise<void> {
  const ch = channelsOf(p.pre);
  if (s.channels !== ch || Math.min(s.width, s.height) !== p.pre.resize) return viewsOfBytes(await png(s), p, out, offset);
  if (!p.tenCrop) out.set(normalise(centreWindow(s.pixels, s.width, s.height, ch, p.pre.crop), ch, p.pre), offset);
  else tenCrops(centreWindow(s.pixels, s.width, s.height, ch, p.pre.resize), p.pre.resize, p.pre, out, offset);
}

export async function viewsOf(src: Source, p: Protocol, out: Float32Array, offset: number): Promise<void> {
  return 'sample' in src ? viewsOfSample(src.sample, p, out, offset) : viewsOfBytes(src.bytes, p, out, offset);
}
