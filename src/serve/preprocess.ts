// Image bytes -> the network's input: decode safely with sharp, resize the shorter side, take the centre crop
// and normalise as the model's metadata says (paper Table 5 for ImageNet: shorter side 320, centre 320x320;
// a per-pixel CIFAR model's mean image is subtracted from the crop).

import sharp, { type Metadata, type Sharp, type SharpOptions } from 'sharp';
import { decodeMeanImage } from '../export/metadata.js';
import type { MeanImage, Preprocessing } from '../models/labels.js';
import { ServeError, badRequest, unsupported } from './errors.js';

/** Formats served, by sharp's name for them; AVIF is sharp's `heif` with AV1 compression. */
export const SERVED_FORMATS = ['jpeg', 'png', 'webp', 'gif', 'tiff', 'avif'] as const;
export type ServedFormat = (typeof SERVED_FORMATS)[number];

export interface ImageLimits {
  /** Largest width x height (of the first frame) decoded; a larger declared size is refused before decoding. */
  maxPixels: number;
  /** Smallest shorter side accepted; below it an image is upscaled so far that a prediction means nothing. */
  minSide: number;
}

export interface SourceImage {
  format: ServedFormat;
  /** Size after EXIF orientation. */
  width: number;
  height: number;
  /** EXIF orientation tag (1..8) that was applied, 1 when none. */
  orientation: number;
  /** Frames or pages in the file; only the first is used. */
  frames: number;
  hasAlpha: boolean;
  /** sharp's colour space and sample format of the file, e.g. `cmyk`, `b-w`, `rgb16` / `uchar`, `ushort`. */
  space: string;
  depth: string;
}

export interface PreparedImage {
  /** [C, crop, crop] float32, normalised: the model's input for this image. */
  tensor: Float32Array;
  /** The crop the network saw, uint8 interleaved (HWC), in the model's channel order's colour space (RGB or L). */
  crop: Buffer;
  cropChannels: 1 | 3;
  cropSize: number;
  /** The shorter-side resize before cropping. */
  resized: { width: number; height: number };
  source: SourceImage;
}

/**
 * The served format the first bytes announce (their signatures), whatever the Content-Type said; undefined when
 * none does. AVIF is any ISO-BMFF `ftyp` file here: sharp tells AVIF from HEIC when it reads the header.
 */
export function servedFormatOf(b: Buffer): ServedFormat | undefined {
  const at = (offset: number, sig: string): boolean => b.length >= offset + sig.length && b.subarray(offset, offset + sig.length).toString('latin1') === sig;
  if (at(0, '\xff\xd8\xff')) return 'jpeg';
  if (at(0, '\x89PNG\r\n\x1a\n')) return 'png';
  if (at(0, 'GIF87a') || at(0, 'GIF89a')) return 'gif';
  if (at(0, 'RIFF') && at(8, 'WEBP')) return 'webp';
  if (at(0, 'II*\0') || at(0, 'MM\0*') || at(0, 'II+\0') || at(0, 'MM\0+')) return 'tiff';
  if (at(4, 'ftyp')) return 'avif';
  return undefined;
}

/** Formats we recognise by their first bytes and refuse by name (sharp would say "unsupported" or, for SVG, render it). */
function sniffRefused(b: Buffer): string | undefined {
  const ascii = b.subarray(0, 512).toString('latin1');
  if (ascii.startsWith('%PDF')) return 'PDF';
  const text = ascii.replace(/^\uFEFF|^\xEF\xBB\xBF/, '').trimStart();
  if (/^<svg[\s>]/i.test(text) || (/^<(\?xml|!DOCTYPE|!--)/i.test(text) && /<svg[\s>]/i.test(b.subarray(0, 4096).toString('latin1')))) return 'SVG';
  if (/^<(\?xml|!DOCTYPE|html)/i.test(text)) return 'XML/HTML';
  if (ascii.startsWith('8BPS')) return 'PSD';
  if (ascii.startsWith('BM') && b.length > 26 && b.readUInt32LE(2) === b.length) return 'BMP';
  if (b.length >= 12 && b.subarray(4, 12).toString('latin1') === 'jP  \r\n\x87\n') return 'JPEG 2000';
  if (b.length >= 12 && b.subarray(4, 12).toString('latin1') === 'JXL \r\n\x87\n') return 'JPEG XL';
  return undefined;
}

const SHARP_INPUT = (maxPixels: number): SharpOptions => ({
  // 'warning' is sharp's advice for untrusted input: a truncated or corrupt file fails instead of decoding half.
  failOn: 'warning',
  limitInputPixels: maxPixels,
  autoOrient: true,
  // Only the first frame / page of animated GIF and WebP or multi-page TIFF.
  pages: 1,
  page: 0,
});

async function inspect(bytes: Buffer, limits: ImageLimits): Promise<SourceImage> {
  const refused = sniffRefused(bytes);
  if (refused) throw unsupported(`${refused} images are not served; send one of: ${SERVED_FORMATS.join(', ')}`);
  let m: Metadata;
  try {
    m = await sharp(bytes, SHARP_INPUT(limits.maxPixels)).metadata();
  } catch (e) {
    const msg = (e as Error).message;
    if (/pixel limit/i.test(msg)) throw new ServeError(413, 'image_too_large', `the image declares more than ${limits.maxPixels.toLocaleString('en-US')} pixels, the most that are decoded (${msg})`);
    throw badRequest('undecodable_image', `the body is not a decodable image (${msg}); send one of: ${SERVED_FORMATS.join(', ')}`);
  }
  const format = m.format === 'heif' ? (m.compression === 'av1' ? 'avif' : 'heic') : m.format;
  if (!(SERVED_FORMATS as readonly string[]).includes(format)) throw unsupported(`${format} images are not served; send one of: ${SERVED_FORMATS.join(', ')}`);
  const width = m.width;
  const height = m.pageHeight ?? m.height;
  if (!width || !height) throw badRequest('undecodable_image', 'the image declares no size');
  if (width * height > limits.maxPixels)
    throw new ServeError(413, 'image_too_large', `the image declares ${width}x${height} = ${(width * height).toLocaleString('en-US')} pixels; at most ${limits.maxPixels.toLocaleString('en-US')} are decoded`);
  const orientation = m.orientation ?? 1;
  const swapped = orientation >= 5;
  const source: SourceImage = {
    format: format as ServedFormat,
    width: swapped ? height : width,
    height: swapped ? width : height,
    orientation,
    frames: m.pages ?? 1,
    hasAlpha: m.hasAlpha ?? false,
    space: m.space ?? 'unknown',
    depth: m.depth ?? 'unknown',
  };
  if (Math.min(source.width, source.height) < limits.minSide)
    throw new ServeError(422, 'image_too_small', `the image is ${source.width}x${source.height}; its shorter side must be at least ${limits.minSide} pixels`);
  return source;
}

function decodeError(e: unknown): ServeError {
  const msg = (e as Error).message;
  if (/pixel limit/i.test(msg)) return new ServeError(413, 'image_too_large', `the image has more pixels than allowed (${msg})`);
  return badRequest('undecodable_image', `the image could not be decoded (${msg})`);
}

/**
 * PIL-compatible separable resampling (`Image.resize` with BILINEAR or BICUBIC) of an interleaved uint8 image,
 * evaluated only on the crop window. Used for upscaling, where libvips samples a quarter pixel off the
 * pixel-centre convention that PIL, OpenCV and torchvision share; downscaling is left to sharp, which agrees.
 */
export function resampleCrop(src: Uint8Array, w: number, h: number, ch: number, outW: number, outH: number, left: number, top: number, size: number, kind: 'bilinear' | 'bicubic'): Buffer {
  const support = kind === 'bilinear' ? 1 : 2;
  const filter = kind === 'bilinear' ? (x: number): number => Math.max(0, 1 - Math.abs(x)) : cubic;
  const taps = (inLen: number, outLen: number, from: number): { first: Int32Array; weights: Float64Array[] } => {
    const scale = inLen / outLen;
    const filterScale = Math.max(scale, 1);
    const first = new Int32Array(size);
    const weights: Float64Array[] = [];
    for (let i = 0; i < size; i++) {
      const center = (from + i + 0.5) * scale;
      const lo = Math.max(0, Math.floor(center - support * filterScale + 0.5));
      const hi = Math.min(inLen, Math.floor(center + support * filterScale + 0.5));
      const ws = new Float64Array(Math.max(0, hi - lo));
      let sum = 0;
      for (let j = lo; j < hi; j++) sum += ws[j - lo] = filter((j - center + 0.5) / filterScale);
      for (let j = 0; j < ws.length; j++) ws[j] /= sum;
      first[i] = lo;
      weights.push(ws);
    }
    return { first, weights };
  };
  const hx = taps(w, outW, left);
  const vy = taps(h, outH, top);
  // Horizontal pass on every source row, crop columns only; then the vertical pass.
  const mid = new Float64Array(h * size * ch);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < size; x++) {
      const ws = hx.weights[x];
      const x0 = hx.first[x];
      for (let c = 0; c < ch; c++) {
        let acc = 0;
        for (let k = 0; k < ws.length; k++) acc += ws[k] * src[(y * w + x0 + k) * ch + c];
        mid[(y * size + x) * ch + c] = acc;
      }
    }
  const out = Buffer.alloc(size * size * ch);
  for (let y = 0; y < size; y++) {
    const ws = vy.weights[y];
    const y0 = vy.first[y];
    for (let x = 0; x < size; x++)
      for (let c = 0; c < ch; c++) {
        let acc = 0;
        for (let k = 0; k < ws.length; k++) acc += ws[k] * mid[((y0 + k) * size + x) * ch + c];
        out[(y * size + x) * ch + c] = Math.min(255, Math.max(0, Math.round(acc)));
      }
  }
  return out;
}

/** Keys' cubic with a = -0.5, as PIL's BICUBIC. */
function cubic(x: number): number {
  const a = -0.5;
  const t = Math.abs(x);
  if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
  return 0;
}

// The metadata holds a mean image as base64; each one is decoded once, not per request.
const decodedMeanImages = new WeakMap<MeanImage, Float32Array>();

function meanImageValues(m: MeanImage, channels: number, crop: number): Float32Array {
  let v = decodedMeanImages.get(m);
  if (!v) decodedMeanImages.set(m, (v = decodeMeanImage(m, channels, crop)));
  return v;
}

/**
 * Normalises an interleaved uint8 crop into a planar float tensor: ((v - meanImage[c, y, x]) * scale - mean[c]) /
 * std[c], where the mean image (planar, in the input's channel order) is 0 when the model has none.
 */
export function normalise(crop: Uint8Array, channels: 1 | 3, pre: Preprocessing): Float32Array {
  const plane = pre.crop * pre.crop;
  const out = new Float32Array(channels * plane);
  const bgr = pre.channelOrder === 'BGR';
  const meanImage = pre.meanImage ? meanImageValues(pre.meanImage, channels, pre.crop) : undefined;
  for (let c = 0; c < channels; c++) {
    const srcC = bgr ? 2 - c : c;
    const a = pre.scale / pre.std[c];
    const b = -pre.mean[c] / pre.std[c];
    const o = c * plane;
    if (meanImage) for (let i = 0; i < plane; i++) out[o + i] = (crop[i * channels + srcC] - meanImage[o + i]) * a + b;
    else for (let i = 0; i < plane; i++) out[o + i] = crop[i * channels + srcC] * a + b;
  }
  return out;
}

/**
 * Decodes an untrusted image and returns the model input. Throws ServeError: 415 for a refused format,
 * 400 undecodable, 413 too many pixels, 422 too small.
 */
export async function prepareImage(bytes: Buffer, pre: Preprocessing, limits: ImageLimits): Promise<PreparedImage> {
  if (bytes.length === 0) throw badRequest('empty_body', 'the request has no image: the body is empty');
  const source = await inspect(bytes, limits);
  const channels: 1 | 3 = pre.channelOrder === 'L' ? 1 : 3;
  const short = Math.min(source.width, source.height);
  const s = pre.resize / short;
  const rw = source.width === short ? pre.resize : Math.max(pre.resize, Math.round(source.width * s));
  const rh = source.height === short ? pre.resize : Math.max(pre.resize, Math.round(source.height * s));
  const left = Math.floor((rw - pre.crop) / 2);
  const top = Math.floor((rh - pre.crop) / 2);
  const kernel = pre.interpolation === 'bicubic' ? 'cubic' : 'linear';
  // Alpha is composited onto white (what a viewer shows for a transparent photo); grey, CMYK, palette and
  // 16-bit inputs become 8-bit sRGB (or 8-bit grey for an 'L' model).
  const base = (): Sharp =>
    sharp(bytes, SHARP_INPUT(limits.maxPixels))
      .timeout({ seconds: 20 })
      .flatten({ background: '#ffffff' })
      .toColourspace(channels === 1 ? 'b-w' : 'srgb');
  let crop: Buffer;
  try {
    if (s <= 1) {
      const { data, info } = await base()
        .resize(rw, rh, { fit: 'fill', kernel })
        .extract({ left, top, width: pre.crop, height: pre.crop })
        .removeAlpha()
        .raw({ depth: 'uchar' })
        .toBuffer({ resolveWithObject: true });
      if (info.channels !== channels || info.width !== pre.crop || info.height !== pre.crop) throw new Error(`decoder produced ${info.width}x${info.height}x${info.channels}`);
      crop = data;
    } else {
      const { data, info } = await base().removeAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
      if (info.channels !== channels) throw new Error(`decoder produced ${info.channels} channels`);
      crop = resampleCrop(data, info.width, info.height, channels, rw, rh, left, top, pre.crop, pre.interpolation);
    }
  } catch (e) {
    throw decodeError(e);
  }
  return { tensor: normalise(crop, channels, pre), crop, cropChannels: channels, cropSize: pre.crop, resized: { width: rw, height: rh }, source };
}

/** The crop as a PNG, for a client to see what the network saw. */
export async function cropPng(p: PreparedImage): Promise<Buffer> {
  return sharp(p.crop, { raw: { width: p.cropSize, height: p.cropSize, channels: p.cropChannels } }).png({ compressionLevel: 3 }).toBuffer();
}
