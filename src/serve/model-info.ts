// What the server needs to know about a model before loading its weights: name, labels, preprocessing and
// where its weights came from, read from the ONNX file's metadata_props without decoding the graph.

import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { META, MeanImageError, decodeMeanImage } from '../export/metadata.js';
import { onnx } from '../export/proto.js';
import { describeQuantization, precisionOf } from '../export/quantization.js';
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
  /** For random weights: how to get trained ones (set by the server, e.g. the `pull` command for the default model). */
  weightsHint?: string;
  /** Class names from the metadata; empty when the model has none (generic names are made once the class count is known). */
  labels: string[];
  preprocessing: Preprocessing;
  /** True when the model carried no preprocessing and the paper's ImageNet default (320 / 320) is used. */
  defaultPreprocessing: boolean;
  metadata: Record<string, string>;
  /** `int8` for a model `resnet-onnx quantize` wrote (its `quantization` record, described in words), else float32. */
  precision?: 'float32' | 'int8';
  quantization?: string;
}

export class ModelFileError extends Error {
  override name = 'ModelFileError';
}

const METADATA_PROPS_FIELD = 14; // ModelProto.metadata_props
const DOC_STRING_FIELD = 6; // ModelProto.doc_string
const IR_VERSION_FIELD = 1; // ModelProto.ir_version
const GRAPH_FIELD = 7; // ModelProto.graph
/** ModelProto's fields and their wire types (0 varint, 2 length-delimited); other field numbers are skipped. */
const MODEL_FIELDS: Record<number, number> = { 1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2 };

/** What a file that is not an ONNX model looks like, from its first bytes, for the error message. */
export function describeFileStart(head: Buffer, size: number): string {
  if (size === 0) return 'the file is empty';
  const b = head.subarray(0, Math.min(head.length, size));
  if (b.length >= 9 && b.readBigUInt64LE(0) < BigInt(size) && b[8] === 0x7b) return 'it is a safetensors file (weights, not a model: `resnet-onnx export --weights FILE` builds a model from a checkpoint)';
  if (b.subarray(0, 4).toString('latin1') === 'PK\x03\x04') return 'it is a zip archive (a PyTorch .pt/.pth file is one: export the model to ONNX first)';
  if (b[0] === 0x1f && b[1] === 0x8b) return 'it is gzip-compressed (decompress it first)';
  const text = b.subarray(0, 64).toString('utf8');
  // Printable text (tabs and newlines allowed; a cut multi-byte character at the end is fine).
  const body = text.replace(/\ufffd$/, '');
  if (!body.includes('\ufffd') && /^[\t\n\r\x20-\x7e\u00a0-\uffff]*$/.test(body)) {
    const line = text.split(/\r?\n/)[0].trim();
    return `it is text, starting ${JSON.stringify(line.length > 48 ? `${line.slice(0, 48)}...` : line)}`;
  }
  return `its first bytes are ${[...b.subarray(0, 8)].map((x) => x.toString(16).padStart(2, '0')).join(' ')}`;
}

/**
 * Reads ModelProto's top-level fields one at a time, skipping the graph (which holds the weights) by its
 * length prefix, so a 259 MB model costs a few small reads. Each metadata entry is decoded by onnx-proto.
 * Anything that is not a ModelProto (text, weights, an archive, a truncated file) is a ModelFileError that
 * names the file and says what it found instead.
 */
export function readOnnxMetadata(path: string): { metadata: Record<string, string>; docString: string } {
  const fd = openSync(path, 'r');
  const size = statSync(path).size;
  const head = Buffer.alloc(20);
  const metadata: Record<string, string> = {};
  let docString = '';
  const seen = new Set<number>();
  const notOnnx = (why: string): ModelFileError => {
    const start = Buffer.alloc(64);
    const n = readSync(fd, start, 0, start.length, 0);
    const found = describeFileStart(start.subarray(0, n), size);
    // Text and known formats are described by what they are; a binary file also gets the protobuf detail.
    return new ModelFileError(`${path} is not an ONNX model: ${found}${/^its first bytes/.test(found) ? ` (${why})` : ''}`);
  };
  try {
    if (size === 0) throw notOnnx('empty');
    let pos = 0;
    while (pos < size) {
      const n = readSync(fd, head, 0, head.length, pos);
      let p = 0;
      const varint = (): number => {
        let v = 0;
        for (let shift = 0; shift < 63; shift += 7) {
          if (p >= n) throw notOnnx(`a protobuf varint runs past the end at byte ${pos}`);
          const b = head[p++];
          v += (b & 0x7f) * 2 ** shift;
          if (b < 0x80) return v;
        }
        throw notOnnx(`bad protobuf varint at byte ${pos}`);
      };
      const tag = varint();
      const field = Math.floor(tag / 8);
      const wire = tag & 7;
      if (field === 0) throw notOnnx(`protobuf field number 0 at byte ${pos}`);
      const expected = MODEL_FIELDS[field];
      if (expected !== undefined && expected !== wire) throw notOnnx(`ModelProto field ${field} has wire type ${wire} at byte ${pos}, expected ${expected}`);
      seen.add(field);
      if (wire === 0) {
        varint();
        pos += p;
      } else if (wire === 1 || wire === 5) {
        pos += p + (wire === 1 ? 8 : 4);
      } else if (wire === 2) {
        const len = varint();
        const start = pos + p;
        if (start + len > size) {
          if (seen.has(IR_VERSION_FIELD)) throw new ModelFileError(`${path} is truncated or not an ONNX model: field ${field} needs ${len} bytes at ${start}, the file has ${size}`);
          throw notOnnx(`field ${field} needs ${len} bytes at byte ${start}, the file has ${size}`);
        }
        if (field === METADATA_PROPS_FIELD || field === DOC_STRING_FIELD) {
          const bytes = Buffer.alloc(len);
          readSync(fd, bytes, 0, len, start);
          if (field === DOC_STRING_FIELD) docString = bytes.toString('utf8');
          else {
            let entry;
            try {
              entry = onnx.StringStringEntryProto.decode(bytes);
            } catch (e) {
              throw notOnnx(`a metadata entry at byte ${start} does not decode: ${(e as Error).message}`);
            }
            metadata[entry.key] = entry.value;
          }
        }
        pos = start + len;
      } else {
        throw notOnnx(`protobuf wire type ${wire} at byte ${pos}`);
      }
    }
    if (pos > size) throw notOnnx(`the last field runs past the end of the file (${size} bytes)`);
    if (!seen.has(IR_VERSION_FIELD) || !seen.has(GRAPH_FIELD))
      throw notOnnx(`a protobuf message without ${seen.has(IR_VERSION_FIELD) ? '' : 'an ir_version'}${seen.has(IR_VERSION_FIELD) || seen.has(GRAPH_FIELD) ? '' : ' or '}${seen.has(GRAPH_FIELD) ? '' : 'a graph'}`);
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
    precision: precisionOf(metadata),
    ...(precisionOf(metadata) === 'int8' ? { quantization: describeQuantization(metadata) } : {}),
  };
}
