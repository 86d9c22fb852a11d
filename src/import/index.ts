// Importing published weights: tells the format from the file's content (never its name) and maps it onto
// our family. Lua Torch .t7 -> fb.resnet.torch's pre-activation ResNets; safetensors -> timm's ResNetV2 or a
// resnet-onnx checkpoint (whose recorded config rebuilds the network it was saved from).

import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { basename } from 'node:path';
import { SafeTensorsFile } from '../export/safetensors.js';
import { CHECKPOINT_FORMAT, checkpointPreprocessing, meanImageOf } from '../export/weights.js';
import { type UnitKind, configFromJson } from '../models/config.js';
import { type Preprocessing, datasetPreprocessing, imagenetLabels } from '../models/labels.js';
import { mapFbResNet } from './fbresnet.js';
import { ImportError, type ImportedNet, type SourceTensor } from './imported.js';
import { looksLikeT7, readT7 } from './t7.js';
import { count } from './text.js';
import { looksLikeTimmResNetV2, mapTimmResNetV2 } from './timm.js';
import { sha256File } from '../util/files.js';

export { ImportError, type ImportedNet, exportImported, importedGraph, checkpointMetadata, SOURCE_KEY } from './imported.js';
export { T7Error } from './t7.js';

export type SourceFormat = 't7' | 'timm-safetensors' | 'resnet-onnx-checkpoint';

/**
 * timm's pretrained configs of its ResNetV2 ImageNet weights: mean = std = 0.5, bicubic, a 224 crop of the image
 * resized to floor(224 / crop_pct): crop_pct 0.95 for resnetv2_50/101 (a1h), 0.9 for resnetv2_18/34 (ra4).
 */
export function timmPreprocessing(unit: UnitKind): Preprocessing {
  const cropPct = unit === 'bottleneck' ? 0.95 : 0.9;
  return {
    resize: Math.floor(224 / cropPct),
    crop: 224,
    scale: 1 / 255,
    mean: [0.5, 0.5, 0.5],
    std: [0.5, 0.5, 0.5],
    channelOrder: 'RGB',
    layout: 'NCHW',
    interpolation: 'bicubic',
  };
}

/** ITU-R BT.601 luma weights: how an RGB image becomes the grey (L) image a 1-channel stem reads. */
const LUMA = [0.299, 0.587, 0.114];

/**
 * The preprocessing of a published model whose stem reads `inChannels` channels, from its source's RGB one. A
 * 1-channel stem (`timm.create_model(..., in_chans=1)`) takes grey (L) input with one mean and std: the RGB
 * values when they are equal (timm's 0.5), else their luma-weighted averages, which a note states.
 */
export function forInputChannels(rgb: Preprocessing, inChannels: number, name: string, source: string): { preprocessing: Preprocessing; notes: string[] } {
  if (inChannels === 3) return { preprocessing: rgb, notes: [] };
  if (inChannels !== 1)
    throw new ImportError(`${name}: the stem convolution reads ${count(inChannels, 'channel')}; a model's preprocessing states grey (L, 1 channel) or RGB (3 channels) input, so only those stems are imported`);
  const one = (v: number[]): { value: number; averaged: boolean } =>
    v.every((x) => x === v[0]) ? { value: v[0], averaged: false } : { value: Math.round(1000 * v.reduce((p, x, i) => p + LUMA[i] * x, 0)) / 1000, averaged: true };
  const mean = one(rgb.mean);
  const std = one(rgb.std);
  const notes = [`the stem reads 1 channel: the model takes grey (L) input, mean ${mean.value}, std ${std.value}`];
  if (mean.averaged || std.averaged)
    notes.push(`${source}'s mean and std are per RGB channel; the grey input's are their luma-weighted (${LUMA.join(', ')}) averages: check them against how the weights were trained`);
  return { preprocessing: { ...rgb, mean: [mean.value], std: [std.value], channelOrder: 'L' }, notes };
}

function readHead(path: string, n: number): { head: Uint8Array; size: number } {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    // Node's message ends with ", open '<path>'": the file is named once, at the start.
    throw new ImportError(`${basename(path)}: cannot be read (${(e as Error).message.replace(/, open '.*'$/, '')})`);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new ImportError(`${basename(path)}: ${stat.isDirectory() ? 'a folder' : 'not a regular file'}; give the model file`);
    const size = stat.size;
    const head = Buffer.alloc(Math.min(n, size));
    readSync(fd, head, 0, head.length, 0);
    return { head, size };
  } finally {
    closeSync(fd);
  }
}

/**
 * The format of a file, from its first bytes (and, for safetensors, its header). Errors start with the file's
 * name (`r50.safetensors: ...`), once.
 */
export function detectFormat(path: string): SourceFormat {
  const { head, size } = readHead(path, 64);
  const name = basename(path);
  if (size < 8) throw new ImportError(`${name}: ${count(size, 'byte')} long, too short to be a .t7 or safetensors file`);
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const headerLen = view.getBigUint64(0, true);
  // safetensors: an 8-byte header length, then a JSON object. A .t7 file holding a table or an object starts with
  // two int32s, its type tag and object index 1, so its first 8 bytes read as a length of 2^32 or more.
  if (head[8] === 0x7b && headerLen >= 2n && headerLen < 2n ** 32n) {
    if (headerLen > BigInt(size - 8))
      throw new ImportError(`${name}: a safetensors file whose declared header length ${headerLen} exceeds the file's ${count(size - 8, 'byte')} after the length field (truncated or corrupted file)`);
    const file = SafeTensorsFile.open(path);
    try {
      if (file.metadata.format === CHECKPOINT_FORMAT || file.metadata.config !== undefined) return 'resnet-onnx-checkpoint';
      const names = [...file.tensors.keys()];
      if (looksLikeTimmResNetV2(names)) return 'timm-safetensors';
      const holds = names.length === 0 ? 'no tensors' : `${count(names.length, 'tensor')}: ${names.slice(0, 4).map((n) => `'${n}'`).join(', ')}${names.length > 4 ? ', ...' : ''}`;
      throw new ImportError(`${name}: a safetensors file, but neither a timm ResNetV2 state dict (stem.conv, stages.S.blocks.B...) nor a resnet-onnx checkpoint (it holds ${holds})`);
    } finally {
      file.close();
    }
  }
  if (head[0] === 0x50 && head[1] === 0x4b && head[2] === 3 && head[3] === 4)
    throw new ImportError(`${name}: a zip archive (PyTorch's torch.save format?); save the state dict as safetensors instead (safetensors.torch.save_file)`);
  if (head[0] === 0x80 && head[1] >= 2 && head[1] <= 5) throw new ImportError(`${name}: a Python pickle; pickles run code when loaded and are not read. Save the state dict as safetensors.`);
  if (looksLikeT7(head)) return 't7';
  throw new ImportError(`${name}: not a format resnet-onnx imports (a Lua Torch .t7 (binary), a timm ResNetV2 .safetensors, or a resnet-onnx checkpoint)`);
}

/** `cannot import <path>: <why>`, naming the file once (the importers' messages start with its name). */
export function importFailure(path: string, e: Error): string {
  const prefix = `${basename(path)}: `;
  return `cannot import ${path}: ${e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message}`;
}

/** Runs a mapping whose errors do not know the file, so that they name it as every other error does. */
function naming<T>(name: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof ImportError && !e.message.startsWith(`${name}: `)) throw new ImportError(`${name}: ${e.message}`);
    throw e;
  }
}


export interface Imported extends ImportedNet {
  format: SourceFormat;
  /** Notes on what was adapted (e.g. the fixed average pool made global), for the CLI to print. */
  notes: string[];
  /** Releases the source file (safetensors are read lazily, while the model is written). */
  close(): void;
}

/** Reads a file of any supported format and maps it onto our family. Errors name the module path or key. */
export function importModel(path: string): Imported {
  const format = detectFormat(path);
  const name = basename(path);
  if (format === 't7') {
    const buf = readFileSync(path);
    const sha = createHash('sha256').update(buf).digest('hex');
    const m = naming(name, () => mapFbResNet(readT7(buf, { name })));
    const input = forInputChannels(datasetPreprocessing('imagenet'), m.cfg.inChannels, name, 'fb.resnet.torch');
    return {
      format,
      cfg: m.cfg,
      tensors: m.tensors,
      weights: `imported: ${name} (fb.resnet.torch pre-activation ResNet, Lua Torch .t7)`,
      source: `fb.resnet.torch models/preresnet.lua module tree, Lua Torch .t7 file ${name} (sha256 ${sha})`,
      preprocessing: input.preprocessing,
      labels: m.cfg.classes === 1000 ? imagenetLabels() : undefined,
      notes: [...m.notes, ...input.notes],
      close: () => {},
    };
  }
  const sha = sha256File(path);
  const file = SafeTensorsFile.open(path);
  try {
    if (format === 'timm-safetensors') {
      const m = mapTimmResNetV2(file, name);
      const input = forInputChannels(timmPreprocessing(m.cfg.unit), m.cfg.inChannels, name, 'timm');
      return {
        format,
        cfg: m.cfg,
        tensors: m.tensors,
        weights: `imported: ${name} (timm ResNetV2, safetensors)`,
        source: `timm resnetv2.py ResNetV2 state dict, safetensors file ${name} (sha256 ${sha})`,
        preprocessing: input.preprocessing,
        labels: m.cfg.classes === 1000 ? imagenetLabels() : undefined,
        notes: [...m.notes, ...input.notes],
        close: () => file.close(),
      };
    }
    return ourCheckpoint(file, name, sha);
  } catch (e) {
    file.close();
    throw e;
  }
}

/** A resnet-onnx checkpoint: the network its `config` metadata records, with the metadata it carried. */
function ourCheckpoint(file: SafeTensorsFile, name: string, sha: string): Imported {
  const md = file.metadata;
  if (md.config === undefined) throw new ImportError(`${name}: no architecture recorded (no 'config' metadata); give the architecture flags (--depth ...) with --weights`);
  const cfg = configFromJson(md.config, `${name}: metadata 'config'`);
  const tensors = new Map<string, SourceTensor>();
  for (const [key, e] of file.tensors) {
    if (key.includes('#')) continue; // optimiser state beside the weights in training checkpoints
    if (!['F32', 'F64', 'F16', 'BF16'].includes(e.dtype)) throw new ImportError(`${name}: tensor '${key}' is ${e.dtype}; a floating-point tensor is needed`);
    tensors.set(key, { dims: [...e.shape], values: () => file.readFloat32(key), from: `${name}: tensor '${key}'` });
  }
  let labels: string[] | undefined;
  if (md.labels !== undefined) {
    const l = parseJson(md.labels, `${name}: metadata 'labels'`);
    if (!Array.isArray(l) || l.length !== cfg.classes || l.some((x) => typeof x !== 'string'))
      throw new ImportError(`${name}: metadata 'labels' should be a JSON array of ${cfg.classes} strings`);
    labels = l as string[];
  }
  const preprocessing = checkpointPreprocessing({ metadata: md, meanImage: meanImageOf(file) }, name, cfg, `its metadata 'config'`);
  return {
    format: 'resnet-onnx-checkpoint',
    cfg,
    tensors,
    weights: md.weights ?? `checkpoint: ${name}`,
    source: md.source ?? `resnet-onnx checkpoint ${name} (sha256 ${sha})`,
    preprocessing,
    labels,
    notes: [],
    close: () => file.close(),
  };
}

function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ImportError(`${where} is not JSON: ${(e as Error).message}`);
  }
}
