// `quantize` as a library: a float model this project wrote -> a calibrated QDQ int8 model, with its
// `quantization` metadata record and, on request, the per-layer SQNR report.

import { basename } from 'node:path';
import { META } from '../export/metadata.js';
import { QUANTIZATION_KEY, type QuantizationRecord, describeQuantization } from '../export/quantization.js';
import type { Preprocessing } from '../models/labels.js';
import { ModelFileError, readModelInfo } from '../serve/model-info.js';
import type { DatasetKind, Split } from '../train/datasets.js';
import { checkInputFile } from '../util/files.js';
import { packageVersion } from '../util/paths.js';
import { type CalibrationSet, type Skipped, openCalibrationSet } from './calibration-data.js';
import { CalibrationError, type LayerSqnr, calibrate, sqnrReport } from './calibrate.js';
import { type ModelProto, QUANTISED_OPS, metadataOf, num, opsetOf, readModel, writeModel } from './onnx-model.js';
import type { Method } from './params.js';
import { type Arrangement, DEFAULT_ARRANGEMENT, QuantizeError, activationParams, calibrationTargets, planQuantisation, prepareFloat, rewriteQdq } from './qdq.js';

export { QuantizeError } from './qdq.js';
export { CalibrationError } from './calibrate.js';
export { QUANTIZATION_KEY, type QuantizationRecord } from '../export/quantization.js';


export const DEFAULT_IMAGES = 256;
export const DEFAULT_METHOD: Method = { kind: 'percentile', percentile: 99.99 };

/**
 * s8 weights in [-64, 64] (7 bits) by default: onnxruntime's x86 kernels without AVX-512 VNNI / AVX-VNNI multiply
 * u8 x s8 with vpmaddubsw, whose int16 pair sums saturate past 255 x 64 x 2 (BENCHMARKS.md, "int8"). 8 uses [-127,
 * 127], exact on VNNI and ARM CPUs.
 */
export const DEFAULT_WEIGHT_BITS = 7;

export interface QuantizeOptions {
  /** The float model (MODEL.onnx). */
  model: string;
  /** Where to write the int8 model; checked by the caller (checkOutputFile). */
  output: string;
  /** --calibrate DATA. */
  calibrate: string;
  dataset?: DatasetKind;
  split?: Split;
  images?: number;
  seed?: number;
  method?: Method;
  weightBits?: 7 | 8;
  arrangement?: Partial<Arrangement>;
  /** Also measure the per-layer SQNR (a second pass over the calibration images, float and int8 side by side). */
  report?: boolean;
  threads?: number;
  /** Images per inference run (default 64 up to 64-pixel crops, else 1). */
  batch?: number;
  /** What the record names as the float model (default: the model's file name). */
  source?: string;
  /** Extra metadata entries for the int8 model (e.g. measured accuracy). */
  metadata?: Record<string, string>;
  onProgress?: (phase: 'calibrate' | 'report', done: number, total: number) => void;
}


export interface QuantizeResult {
  output: string;
  bytes: number;
  floatBytes: number;
  record: QuantizationRecord;
  /** Convolutions (incl. depthwise BatchNorms) and Gemms quantised; values carried as u8. */
  convs: number;
  depthwise: number;
  gemms: number;
  values: number;
  skipped: Skipped[];
  sqnr?: LayerSqnr[];
  seconds: number;
}

export function describeMethod(m: Method): string {
  return m.kind === 'minmax' ? 'minmax' : `percentile ${m.percentile}`;
}


/** Refuses models that cannot be quantised before any work: already int8, no preprocessing, too old an opset. */
function checkModel(path: string, m: ModelProto, pre: { defaultPreprocessing: boolean }): void {
  const md = metadataOf(m);
  if (md[QUANTIZATION_KEY] !== undefined) throw new QuantizeError(`${path} is already quantised: ${describeQuantization(md)}; quantise the float model it came from`);
  const q = (m.graph?.node ?? []).find((n) => QUANTISED_OPS.has(n.opType ?? ''));
  if (q) throw new QuantizeError(`${path} is already quantised: it has ${q.opType} nodes (e.g. ${q.name || q.output?.[0]}); quantise the float model it came from`);
  if (pre.defaultPreprocessing)
    throw new QuantizeError(`${path} has no '${META.preprocessing}' metadata, so calibration cannot prepare images the way the model expects; quantise a model written by resnet-onnx (export, import, pull, train), which records it`);
  const opset = opsetOf(m);
  if (opset < 13) throw new QuantizeError(`${path} uses opset ${opset}; per-channel QuantizeLinear / DequantizeLinear need opset 13 or later: re-export it with --opset 13 or later`);
}

function inputChannels(m: ModelProto): number | undefined {
  const inits = new Set((m.graph?.initializer ?? []).map((t) => t.name));
  const input = (m.graph?.input ?? []).find((v) => !inits.has(v.name));
  const d = input?.type?.tensorType?.shape?.dim?.[1];
  return d && d.dimValue !== undefined && d.dimValue !== null ? num(d.dimValue) : undefined;
}

function channelsOf(pre: Preprocessing): number {
  return pre.channelOrder === 'L' ? 1 : 3;
}

/** Quantises a model; see QuantizeOptions. Bad requests throw QuantizeError / PathError / DatasetError (exit 2). */
export async function quantizeModel(o: QuantizeOptions): Promise<QuantizeResult> {
  const started = performance.now();
  checkInputFile(o.model, 'MODEL');
  let info;
  try {
    info = readModelInfo(o.model);
  } catch (e) {
    if (e instanceof ModelFileError) throw new QuantizeError(e.message);
    throw e;
  }
  const float = readModel(o.model);
  checkModel(o.model, float, info);
  const pre = info.preprocessing;
  const channels = inputChannels(float);
  if (channels !== undefined && channels !== channelsOf(pre))
    throw new QuantizeError(`${o.model}: the model takes ${channels}-channel input but its preprocessing says ${pre.channelOrder} (${channelsOf(pre)} channel${channelsOf(pre) > 1 ? 's' : ''})`);
  const arrangement: Arrangement = { ...DEFAULT_ARRANGEMENT, ...o.arrangement };
  const weightBits = o.weightBits ?? DEFAULT_WEIGHT_BITS;
  const method = o.method ?? DEFAULT_METHOD;
  const images = o.images ?? DEFAULT_IMAGES;
  const seed = o.seed ?? 0;
  if (!Number.isInteger(images) || images < 1) throw new QuantizeError(`--calibration-images must be an integer >= 1, got ${images}`);

  const prepared = prepareFloat(float, arrangement);
  const plan = planQuantisation(prepared.model, arrangement);
  const set: CalibrationSet = await openCalibrationSet({ data: o.calibrate, dataset: o.dataset, split: o.split, images, seed, pre, channels, modelDataset: info.metadata.dataset });
  const run = { batch: o.batch, threads: o.threads, crop: pre.crop };
  const cal = await calibrate(prepared.model, calibrationTargets(plan), set, method, { ...run, onProgress: (d) => o.onProgress?.('calibrate', d, set.images) });
  const skipped = [...set.skipped];
  if (cal.images === 0) {
    const first = skipped[0];
    throw new CalibrationError(`no calibration image could be read: all ${skipped.length} file${skipped.length === 1 ? '' : 's'} under ${set.path} failed (first: ${first?.file}: ${first?.reason})`);
  }
  const params = activationParams(plan, cal.ranges);
  const int8 = rewriteQdq(prepared.model, plan, params, { weightBits });

  const floatBytes = info.bytes;
  const record: QuantizationRecord = {
    format: `QDQ (QuantizeLinear / DequantizeLinear), opset ${opsetOf(float)}`,
    scheme: `u8 activations (per tensor, asymmetric), s8 weights (per output channel, symmetric, ${weightBits === 7 ? '[-64, 64]' : '[-127, 127]'}), int32 biases`,
    weightBits,
    method: describeMethod(method),
    calibration: { data: set.description, path: set.path, images: cal.images, seed, skipped: skipped.length },
    arrangement,
    from: { file: o.source ?? basename(o.model), bytes: floatBytes },
    tool: `resnet-onnx ${packageVersion()} quantize`,
  };
  const metadata = { ...metadataOf(float), [QUANTIZATION_KEY]: JSON.stringify(record), ...o.metadata };
  const doc = `${float.docString ?? ''}\nQuantised to int8 by resnet-onnx quantize: ${record.scheme}; ${record.method} calibration on ${cal.images} images of ${set.description}.`.trim();
  const outModel = { ...int8, docString: doc, metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })) } as ModelProto;
  const bytes = writeModel(outModel, o.output);

  const sqnr = o.report ? await sqnrReport(prepared.model, outModel, plan, params, set, { ...run, onProgress: (d) => o.onProgress?.('report', d, set.images) }) : undefined;
  return {
    output: o.output,
    bytes,
    floatBytes,
    record,
    convs: plan.convs.length,
    depthwise: prepared.depthwise,
    gemms: plan.gemms.length,
    values: plan.marks.size,
    skipped,
    ...(sqnr ? { sqnr } : {}),
    seconds: (performance.now() - started) / 1000,
  };
}
