// What the server needs to know about a model before loading its weights: name, labels, preprocessing and
// where its weights came from, read from the ONNX file's metadata_props without decoding the graph.

import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { META, MeanImageError, decodeMeanImage } from '../export/metadata.js';
import { onnx } from '../export/proto.js';
import { type Preprocessing, datasetPreprocessing } from '../models/labels.js';

export interface ModelInfo {
  /** The name clients use (`/v2/models/{name}`): the file name without `.onnx`. */
  name: string;
  path: string;
  bytes: number;
  architecture: string;
  /** Where the weights came from, as the exporter recorded it, e.g. `random-init (seed 0)`. */
  weights: string;
  /** True when the weights are a random initialisation: the labels then mean nothing. */
  randomWeights: boolean;
  /** Class names from the metadata; empty when the model has none (generic names are made once the class count is known). */
  labels: string[];
  preprocessing: Preprocessing;
  /** True when the model carried no preprocessing and the paper's ImageNet default (320 / 320) is used. */
  defaultPreprocessing: boolean;
  metadata: Record<string, string>;
}

export class ModelFileError extends Error {
  override name = 'ModelFileError';
}

const METADATA_PROPS_FIELD = 14; // ModelProto.metadata_props
const DOC_STRING_FIELD = 6; // ModelProto.doc_string

/**
 * Reads ModelProto's top-level fields one at a time, skipping the graph (which holds the weights) by its
 * length prefix, so a 259 MB model costs a few small reads. Each metadata entry is decoded by onnx-proto.
 */
export function readOnnxMetadata(path: string): { metadata: Record<string, string>; docString: string } {
  const fd = openSync(path, 'r');
  const size = statSync(path).size;
  const head = Buffer.alloc(20);
  const metadata: Record<string, string> = {};
  let docString = '';
  try {
    let pos = 0;
    while (pos < size) {
      const n = readSync(fd, head, 0, head.length, pos);
      let p = 0;
      const varint = (): number => {
        let v = 0;
        for (let shift = 0; shift < 63; shift += 7) {
          if (p >= n) throw new ModelFileError(`${path} is not an ONNX model: a protobuf varint runs past the end at byte ${pos}`);
          const b = head[p++];
          v += (b & 0x7f) * 2 ** shift;
          if (b < 0x80) return v;
        }
        throw new ModelFileError(`${path} is not an ONNX model: bad varint at byte ${pos}`);
      };
      const tag = varint();
      const field = Math.floor(tag / 8);
      const wire = tag & 7;
      if (field === 0) throw new ModelFileError(`${path} is not an ONNX model: field number 0 at byte ${pos}`);
      if (wire === 0) {
        varint();
        pos += p;
      } else if (wire === 1 || wire === 5) {
        pos += p + (wire === 1 ? 8 : 4);
      } else if (wire === 2) {
        const len = varint();
        const start = pos + p;
        if (start + len > size) throw new ModelFileError(`${path} is truncated or not an ONNX model: field ${field} needs ${len} bytes at ${start}, file has ${size}`);
        if (field === METADATA_PROPS_FIELD || field === DOC_STRING_FIELD) {
          const bytes = Buffer.alloc(len);
          readSync(fd, bytes, 0, len, start);
          if (field === DOC_STRING_FIELD) docString = bytes.toString('utf8');
          else {
            const entry = onnx.StringStringEntryProto.decode(bytes);
            metadata[entry.key] = entry.value;
          }
        }
        pos = start + len;
      } else {
        throw new ModelFileError(`${path} is not an ONNX model: protobuf wire type ${wire} at byte ${pos}`);
      }
    }
  } finally {
    closeSync(fd);
  }
  return { metadata, docString };
}

function parseJson<T>(path: string, key: string, text: string): T {
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new ModelFileError(`${path}: metadata '${key}' is not valid JSON (${(e as Error).message})`);
  }
}

function checkPreprocessing(path: string, p: Partial<Preprocessing>): Preprocessing {
  const where = `${path}: metadata '${META.preprocessing}'`;
  const posInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;
  if (!posInt(p.resize) || !posInt(p.crop)) throw new ModelFileError(`${where} needs positive integer 'resize' and 'crop', got ${JSON.stringify({ resize: p.resize, crop: p.crop })}`);
  if (p.crop > p.resize) throw new ModelFileError(`${where}: crop ${p.crop} is larger than the resized shorter side ${p.resize}`);
  const order = p.channelOrder ?? 'RGB';
  if (!['RGB', 'BGR', 'L'].includes(order)) throw new ModelFileError(`${where}: channelOrder must be RGB, BGR or L, got ${JSON.stringify(order)}`);
  const channels = order === 'L' ? 1 : 3;
  const vec = (name: 'mean' | 'std', dflt: number): number[] => {
    const v = p[name] ?? Array<number>(channels).fill(dflt);
    if (!Array.isArray(v) || v.length !== channels || v.some((x) => typeof x !== 'number' || !Number.isFinite(x)))
      throw new ModelFileError(`${where}: ${name} must be ${channels} finite numbers, got ${JSON.stringify(v)}`);
    if (name === 'std' && v.some((x) => x === 0)) throw new ModelFileError(`${where}: std must not contain 0`);
    return v;
  };
  const interpolation = p.interpolation ?? 'bilinear';
  if (interpolation !== 'bilinear' && interpolation !== 'bicubic') throw new ModelFileError(`${where}: interpolation must be bilinear or bicubic, got ${JSON.stringify(interpolation)}`);
  if ((p.layout ?? 'NCHW') !== 'NCHW') throw new ModelFileError(`${where}: only layout NCHW is served, got ${JSON.stringify(p.layout)}`);
  const scale = p.scale ?? 1 / 255;
  if (typeof scale !== 'number' || !Number.isFinite(scale) || scale <= 0) throw new ModelFileError(`${where}: scale must be a positive number, got ${JSON.stringify(scale)}`);
  const checked: Preprocessing = { resize: p.resize, crop: p.crop, scale, mean: vec('mean', 0), std: vec('std', 1), channelOrder: order, layout: 'NCHW', interpolation };
  if (p.meanImage === undefined) return checked;
  // Checked here, at startup, so a mean image that cannot be subtracted from the crop never reaches a request.
  try {
    decodeMeanImage(p.meanImage, channels, p.crop);
  } catch (e) {
    if (e instanceof MeanImageError) throw new ModelFileError(`${where}: ${e.message}`);
    throw e;
  }
  const [c, h, w] = p.meanImage.shape;
  return { ...checked, meanImage: { shape: [c, h, w], values: p.meanImage.values } };
}

export function readModelInfo(path: string): ModelInfo {
  const { metadata } = readOnnxMetadata(path);
  const labelsText = metadata[META.labels];
  const labels = labelsText === undefined ? [] : parseJson<unknown>(path, META.labels, labelsText);
  if (!Array.isArray(labels) || labels.some((l) => typeof l !== 'string')) throw new ModelFileError(`${path}: metadata '${META.labels}' must be a JSON array of strings`);
  const preText = metadata[META.preprocessing];
  const preprocessing = preText === undefined ? datasetPreprocessing('imagenet') : checkPreprocessing(path, parseJson<Partial<Preprocessing>>(path, META.preprocessing, preText));
  // A model without a record of its weights is treated as untrained: the server must not imply its labels mean anything.
  const weights = metadata[META.weights] ?? 'unknown (no weights metadata; treated as random-init)';
  return {
    name: basename(path).replace(/\.onnx$/i, ''),
    path,
    bytes: statSync(path).size,
    architecture: metadata[META.architecture] ?? 'unknown architecture',
    weights,
    randomWeights: metadata[META.weights] === undefined || /^random-init/.test(weights),
    labels: labels as string[],
    preprocessing,
    defaultPreprocessing: preText === undefined,
    metadata,
  };
}
