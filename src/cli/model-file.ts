// `info --model FILE`: what a model file records about itself (architecture, weights, precision), for the layer table.

import { META } from '../export/metadata.js';
import { quantizationOf } from '../export/quantization.js';
import { type ResNetConfig, configFromJson } from '../models/config.js';
import { ModelFileError, readModelInfo } from '../serve/model-info.js';
import { checkInputFile } from '../util/files.js';
import { CliError } from './common.js';

export interface ModelFileSummary {
  cfg: ResNetConfig;
  /** Lines printed above the table. */
  lines: string[];
  /** The same for --json. */
  json: { path: string; bytes: number; weights: string; precision: 'float32' | 'int8'; quantization?: object };
}

/** A model file's metadata; a file that is not a model this project can read is a user error (exit 2). */
export function readModelOrExplain(path: string): ReturnType<typeof readModelInfo> {
  try {
    return readModelInfo(path);
  } catch (e) {
    if (e instanceof ModelFileError) throw new CliError(e.message);
    throw e;
  }
}

export function modelFileSummary(path: string): ModelFileSummary {
  checkInputFile(path, '--model');
  const info = readModelOrExplain(path);
  const text = info.metadata[META.config];
  if (text === undefined) throw new CliError(`--model ${path} has no '${META.config}' metadata: only models written by resnet-onnx (export, import, pull, train, quantize) record their architecture`);
  const cfg = configFromJson(text, `--model ${path}: metadata '${META.config}'`);
  const precision = info.precision ?? 'float32';
  const q = quantizationOf(info.metadata);
  const lines = [`${path}: ${(info.bytes / 1e6).toFixed(1)} MB`, `weights: ${info.weights}`, `precision: ${precision === 'int8' ? (info.quantization ?? 'int8') : 'float32'}`];
  return { cfg, lines, json: { path, bytes: info.bytes, weights: info.weights, precision, ...(q ? { quantization: q } : {}) } };
}
