// What an exported model says about itself: ONNX metadata_props and doc string, so that other runtimes and
// our server know the architecture, the labels and how to feed it.

import { type ResNetConfig, describe } from '../models/config.js';
import { type MeanImage, type Preprocessing, datasetLabels, datasetPreprocessing } from '../models/labels.js';

/** Keys written to metadata_props. Values are strings; structured ones are JSON. */
export const META = {
  config: 'resnet_onnx.config',
  architecture: 'architecture',
  dataset: 'dataset',
  labels: 'labels',
  preprocessing: 'preprocessing',
  weights: 'weights',
  foldedBatchNorm: 'folded_batchnorm',
} as const;

export interface ModelDescription {
  weights: string;
  folded: boolean;
  labels?: string[];
  preprocessing?: Preprocessing;
}

export function modelMetadata(cfg: ResNetConfig, d: ModelDescription): Record<string, string> {
  const labels = d.labels ?? datasetLabels(cfg.dataset, cfg.classes);
  const pre = d.preprocessing ?? datasetPreprocessing(cfg.dataset);
  return {
    [META.architecture]: describe(cfg),
    [META.config]: JSON.stringify(cfg),
    [META.dataset]: cfg.dataset,
    family: cfg.family,
    depth: String(cfg.depth ?? 'custom'),
    unit: cfg.unit,
    activation: cfg.activation,
    shortcut: cfg.shortcut.kind,
    classes: String(cfg.classes),
    [META.labels]: JSON.stringify(labels),
    [META.preprocessing]: JSON.stringify(pre),
    [META.weights]: d.weights,
    [META.foldedBatchNorm]: String(d.folded),
  };
}

export function docString(cfg: ResNetConfig, d: ModelDescription): string {
  const pre = d.preprocessing ?? datasetPreprocessing(cfg.dataset);
  const m = pre.meanImage;
  const input = m
    ? `Input 'input': float32 [N, ${m.shape.join(', ')}], ${pre.channelOrder}, ${pre.layout}; (pixels - mean image) * ${pre.scale.toPrecision(6)}, minus mean ${JSON.stringify(pre.mean)}, divided by std ${JSON.stringify(pre.std)}. ` +
      `The mean image is float32 [${m.shape.join(', ')}] (planar, input channel order) in pixel values 0..255, in metadata '${META.preprocessing}' key 'meanImage' (base64 little-endian 'values').`
    : `Input 'input': float32 [N, ${cfg.inChannels}, H, W], ${pre.channelOrder}, ${pre.layout}; pixels * ${pre.scale.toPrecision(6)}, minus mean ${JSON.stringify(pre.mean)}, divided by std ${JSON.stringify(pre.std)}.`;
  return [
    `${describe(cfg)}: He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks" (2016).`,
    input,
    `Test-time crop: shorter side resized to ${pre.resize}, centre ${pre.crop}x${pre.crop} crop. Output 'logits': [N, ${cfg.classes}].`,
    `Weights: ${d.weights}. BatchNorm folded into convolutions: ${d.folded ? 'yes' : 'no'}.`,
  ].join('\n');
}

/** A mean image in the metadata that does not fit the input it is subtracted from; callers say where it was read. */
export class MeanImageError extends Error {
  override name = 'MeanImageError';
}

/** A mean image ([C, H, W], pixel values) as the metadata's JSON holds it: planar float32, little-endian, base64. */
export function encodeMeanImage(values: Float32Array, shape: readonly number[]): MeanImage {
  const [c, h, w] = shape;
  if (shape.length !== 3 || values.length !== c * h * w) throw new MeanImageError(`a mean image of shape [${shape.join(', ')}] needs [C, H, W] with C * H * W values, got ${values.length}`);
  const bytes = Buffer.alloc(values.length * 4);
  for (let i = 0; i < values.length; i++) bytes.writeFloatLE(values[i], i * 4);
  return { shape: [c, h, w], values: bytes.toString('base64') };
}

/**
 * The values of a metadata mean image, checked against the input it is subtracted from: [channels, crop, crop],
 * the centre crop after the resize. Throws MeanImageError with what was found and what the input needs.
 */
export function decodeMeanImage(m: unknown, channels: number, crop: number): Float32Array {
  const want = `[${channels}, ${crop}, ${crop}]`;
  if (typeof m !== 'object' || m === null || Array.isArray(m)) throw new MeanImageError(`meanImage must be an object { shape: ${want}, values: base64 float32 }, got ${JSON.stringify(m)?.slice(0, 80)}`);
  const { shape, values } = m as Partial<Record<keyof MeanImage, unknown>>;
  if (!Array.isArray(shape) || shape.length !== 3 || !shape.every((d) => typeof d === 'number' && Number.isInteger(d) && d > 0))
    throw new MeanImageError(`meanImage.shape must be three positive integers [C, H, W], got ${JSON.stringify(shape)}`);
  const [c, h, w] = shape as number[];
  if (c !== channels) throw new MeanImageError(`meanImage.shape [${shape.join(', ')}] has ${c} channels; the input has ${channels}`);
  if (h !== crop || w !== crop)
    throw new MeanImageError(`meanImage.shape [${shape.join(', ')}] is ${w}x${h}, but the crop is ${crop}x${crop}: the mean image is subtracted from the crop, so it must be ${want}`);
  if (typeof values !== 'string' || values.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(values))
    throw new MeanImageError(`meanImage.values must be base64 text of ${c * h * w} little-endian float32 values, got ${typeof values === 'string' ? `${values.length} characters that are not base64` : JSON.stringify(values)}`);
  const bytes = Buffer.from(values, 'base64');
  if (bytes.length !== c * h * w * 4) throw new MeanImageError(`meanImage.values holds ${bytes.length} bytes; shape [${shape.join(', ')}] needs ${c * h * w * 4} (float32)`);
  const out = new Float32Array(c * h * w);
  for (let i = 0; i < out.length; i++) {
    out[i] = bytes.readFloatLE(i * 4);
    if (!Number.isFinite(out[i])) throw new MeanImageError(`meanImage.values[${i}] is ${out[i]}; every value must be finite`);
  }
  return out;
}

/**
 * The paper's per-pixel normalisation (CIFAR) as metadata, as `train --normalise per-pixel` trains with it
 * (perPixelNormalisation in src/train/augment.ts): (v - mean image) / 255, no per-channel mean or std. `base`
 * gives the resize, crop and channel order; a mean image that does not fit its crop is refused here, not when served.
 */
export function perPixelPreprocessing(base: Preprocessing, values: Float32Array, shape: readonly number[]): Preprocessing {
  const channels = base.channelOrder === 'L' ? 1 : 3;
  const meanImage = encodeMeanImage(values, shape);
  decodeMeanImage(meanImage, channels, base.crop);
  return { ...base, scale: 1 / 255, mean: new Array<number>(channels).fill(0), std: new Array<number>(channels).fill(1), meanImage };
}

/** A preprocessing record read from a file that is not one this project writes; the message says where. */
export class PreprocessingError extends Error {
  override name = 'PreprocessingError';
}

/**
 * A preprocessing record (the JSON `modelMetadata` writes) read back from a file's metadata, checked as strictly as
 * it is written: every field present, one mean and std per channel, a mean image that fits the crop. `where` names
 * the file and key in errors.
 */
export function parsePreprocessing(text: string, where: string): Preprocessing {
  let p: Partial<Preprocessing> | null;
  try {
    p = JSON.parse(text) as Partial<Preprocessing> | null;
  } catch (e) {
    throw new PreprocessingError(`${where} is not JSON: ${(e as Error).message}`);
  }
  const posInt = (v: unknown): boolean => typeof v === 'number' && Number.isInteger(v) && v > 0;
  const nums = (v: unknown): boolean => Array.isArray(v) && v.length >= 1 && v.every((x) => typeof x === 'number' && Number.isFinite(x));
  if (
    typeof p !== 'object' ||
    p === null ||
    !posInt(p.resize) ||
    !posInt(p.crop) ||
    typeof p.scale !== 'number' ||
    !(p.scale > 0) ||
    !nums(p.mean) ||
    !nums(p.std) ||
    p.std!.some((x) => x === 0) ||
    !['RGB', 'BGR', 'L'].includes(p.channelOrder as string) ||
    p.layout !== 'NCHW' ||
    !['bilinear', 'bicubic'].includes(p.interpolation as string)
  )
    throw new PreprocessingError(`${where} is not a valid preprocessing record: ${text.slice(0, 200)}`);
  const channels = p.channelOrder === 'L' ? 1 : 3;
  if (p.mean!.length !== channels || p.std!.length !== channels)
    throw new PreprocessingError(`${where}: channelOrder ${p.channelOrder} needs ${channels} mean and std values, got mean ${JSON.stringify(p.mean)}, std ${JSON.stringify(p.std)}`);
  if (p.meanImage !== undefined) {
    try {
      decodeMeanImage(p.meanImage, channels, p.crop!);
    } catch (e) {
      if (e instanceof MeanImageError) throw new PreprocessingError(`${where}: ${e.message}`);
      throw e;
    }
  }
  return p as Preprocessing;
}
