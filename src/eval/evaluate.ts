// Top-1 / top-5 accuracy of a model on a labelled set: images are read and preprocessed on this thread (with the
// server's code) while the previous batch runs in an inference worker; scores are ranked as train's evaluation does.

import { availableParallelism } from 'node:os';
import type { Preprocessing } from '../models/labels.js';
import { type ModelInfo, ModelFileError, readModelInfo } from '../serve/model-info.js';
import { ServeError } from '../serve/errors.js';
import { DEBIAN_FASHION_MNIST, type DatasetKind, type Split } from '../train/datasets.js';
import { checkInputFile, checkInputFolder } from '../util/files.js';
import { type LabelledSet, type Skipped, defaultDataFor, detectKind, openLabelledSet } from './data.js';
import { type ReportedAccuracy, reportedAccuracy } from './reported.js';
import { InferenceWorker } from './runner.js';
import { type Protocol, channelsOf, viewSize, viewsOf, viewsPerImage } from './views.js';

/** A request that cannot be evaluated as asked (exit 2). */
export class EvalError extends Error {
  override name = 'EvalError';
}

export interface EvalOptions {
  model: string;
  /** --data; defaults to Debian's Fashion-MNIST for a Fashion-MNIST model, as train does. */
  data?: string;
  dataset?: DatasetKind;
  split?: Split;
  /** Override the model's resize / crop (e.g. 256 / 224); one alone keeps the model's crop ratio. */
  resize?: number;
  crop?: number;
  tenCrop?: boolean;
  /** Images per inference run (ten-crop runs 10 views per image). Default: 128 up to 64-pixel crops, else 8. */
  batch?: number;
  /** Evaluate N images spread evenly over the set. */
  limit?: number;
  /** onnxruntime threads (default: all cores). */
  threads?: number;
  onProgress?: (p: Progress) => void;
}

export interface Progress {
  done: number;
  total: number;
  correct1: number;
  skipped: number;
  seconds: number;
}

export interface ProtocolReport {
  resize: number;
  crop: number;
  crops: 1 | 10;
  interpolation: Preprocessing['interpolation'];
  channelOrder: Preprocessing['channelOrder'];
  /** Where resize and crop came from. */
  from: 'model metadata' | 'ImageNet default (the model has no preprocessing metadata)' | 'command line';
  text: string;
}

export interface EvalReport {
  model: { path: string; name: string; architecture: string; weights: string; precision: 'float32' | 'int8'; quantization?: string };
  data: { path: string; format: LabelledSet['format']; split: Split; description: string; matchedBy?: string; size: number };
  protocol: ProtocolReport;
  classes: number;
  labels: string[];
  /** Images scored (skipped ones excluded). */
  images: number;
  correct1: number;
  correct5: number;
  /** Accuracies in [0, 1]. */
  top1: number;
  top5: number;
  skipped: Skipped[];
  notes: string[];
  reported?: ReportedAccuracy;
  /** Per set index: the top-1 class, -1 for images not scored (skipped, or left out by --limit). */
  predictions: Int32Array;
  /** Where image i of the set comes from (its file, or the dataset and index). */
  where: (i: number) => string;
  /** classes x classes counts, row = true class, column = top-1 prediction. */
  confusion: Int32Array;
  /** Wall time of the whole evaluation, and of its loop (after the model was loaded and the data opened). */
  seconds: number;
  loopSeconds: number;
  imagesPerSecond: number;
}

function describeProtocol(pre: Preprocessing, tenCrop: boolean): string {
  const crop = `${pre.crop}x${pre.crop}`;
  const what = tenCrop ? `10 crops ${crop} (4 corners and centre of the centre ${pre.resize}x${pre.resize}, and their mirror images; softmax averaged)` : `centre ${crop} crop`;
  return `${what} of the shorter side resized to ${pre.resize} (${pre.interpolation}, ${pre.channelOrder})`;
}

/** The preprocessing eval feeds the model: its metadata's, with --resize / --crop applied. */
export function evalPreprocessing(info: ModelInfo, resize?: number, crop?: number): { pre: Preprocessing; from: ProtocolReport['from'] } {
  const base = info.preprocessing;
  const from: ProtocolReport['from'] = resize !== undefined || crop !== undefined ? 'command line' : info.defaultPreprocessing ? 'ImageNet default (the model has no preprocessing metadata)' : 'model metadata';
  for (const [flag, v] of [['--resize', resize], ['--crop', crop]] as const) if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new EvalError(`${flag} must be a positive integer, got ${v}`);
  const c = crop ?? (resize !== undefined ? Math.min(base.crop, resize) : base.crop);
  const r = resize ?? (crop !== undefined ? Math.max(crop, Math.round((crop * base.resize) / base.crop)) : base.resize);
  if (c > r) throw new EvalError(`--crop ${c} is larger than the shorter side it is cut from (--resize ${r}); give --crop <= --resize`);
  if (base.meanImage && c !== base.meanImage.shape[1])
    throw new EvalError(`this model subtracts a ${base.meanImage.shape[1]}x${base.meanImage.shape[2]} per-pixel mean image from its crop: the crop must stay ${base.meanImage.shape[1]}, got ${c}`);
  return { pre: { ...base, resize: r, crop: c }, from };
}

/** N indices spread evenly over 0..total-1 (all of them when N >= total). */
export function spread(total: number, limit: number | undefined): Int32Array {
  if (limit === undefined || limit >= total) return Int32Array.from({ length: total }, (_, i) => i);
  return Int32Array.from({ length: limit }, (_, k) => Math.floor((k * total) / limit));
}

/** The class count the metadata states (`classes`, else the number of labels). */
function statedClasses(info: ModelInfo): number | undefined {
  if (/^\d+$/.test(info.metadata.classes ?? '')) return Number(info.metadata.classes);
  return info.labels.length > 0 ? info.labels.length : undefined;
}

function classCount(info: ModelInfo, outputShape: (number | string)[]): number {
  const fromShape = typeof outputShape[1] === 'number' ? outputShape[1] : undefined;
  const n = fromShape ?? statedClasses(info);
  if (n === undefined) throw new EvalError(`${info.path}: cannot tell how many classes the model has (its output shape [${outputShape.join(', ')}] and metadata do not say)`);
  if (info.labels.length > 0 && info.labels.length !== n) throw new EvalError(`${info.path}: its labels metadata names ${info.labels.length} classes but the model has ${n} outputs`);
  const stated = statedClasses(info);
  if (stated !== undefined && stated !== n) throw new EvalError(`${info.path}: its metadata says ${stated} classes but the model has ${n} outputs`);
  return n;
}

/** Rank of `label` in a score row (0 = top-1): the classes scoring higher, a tie going to the lower index (as argmax). */
function rankOf(row: Float32Array | Float64Array, label: number): number {
  const target = row[label];
  // NaN compares false with everything: it would rank first. A network that overflowed got nothing right.
  if (Number.isNaN(target)) return row.length;
  let higher = 0;
  for (let j = 0; j < row.length; j++) if (row[j] > target || (row[j] === target && j < label)) higher++;
  return higher;
}

function argmax(row: Float32Array | Float64Array): number {
  let best = 0;
  for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j;
  return best;
}

/** The mean of the views' softmax (ten-crop); one view is scored on its logits, which rank the same. */
function combine(scores: Float32Array, at: number, views: number, classes: number): Float32Array | Float64Array {
  if (views === 1) return scores.subarray(at, at + classes);
  const mean = new Float64Array(classes);
  for (let v = 0; v < views; v++) {
    const row = scores.subarray(at + v * classes, at + (v + 1) * classes);
    let max = -Infinity;
    for (const x of row) max = Math.max(max, x);
    let sum = 0;
    for (const x of row) sum += Math.exp(x - max);
    for (let j = 0; j < classes; j++) mean[j] += Math.exp(row[j] - max) / sum / views;
  }
  return mean;
}

/** Runs `fn` over 0..n-1 with at most `limit` calls in flight. */
async function pool(n: number, limit: number, fn: (k: number) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < n) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(n, limit) }, lane));
}

/** Evaluates a model on a labelled set; see EvalOptions. Bad requests throw EvalError, PathError or DatasetError. */
export async function evaluateModel(o: EvalOptions): Promise<EvalReport> {
  const started = performance.now();
  checkInputFile(o.model, '--model');
  if (o.limit !== undefined && (!Number.isInteger(o.limit) || o.limit < 1)) throw new EvalError(`--limit ${o.limit} evaluates nothing; give a number of images >= 1`);
  let info: ModelInfo;
  try {
    info = readModelInfo(o.model);
  } catch (e) {
    if (e instanceof ModelFileError) throw new EvalError(e.message);
    throw e;
  }
  const { pre, from } = evalPreprocessing(info, o.resize, o.crop);
  const protocol: Protocol = { pre, tenCrop: o.tenCrop ?? false };
  const data = o.data ?? defaultDataFor(info.metadata.dataset);
  const what = info.metadata.dataset ? `the model is for ${info.metadata.dataset}` : 'the model has no dataset metadata';
  if (data === undefined) throw new EvalError(`--data is required: ${what}, and only Fashion-MNIST has a default (Debian's ${DEBIAN_FASHION_MNIST}); give a folder of class folders, or an IDX or CIFAR folder`);
  const batch = o.batch ?? (pre.crop <= 64 ? 128 : 8);
  if (!Number.isInteger(batch) || batch < 1) throw new EvalError(`--batch must be a positive integer, got ${batch}`);

  // The worker loads the model while the data is opened (reading and gunzipping a split takes a while too).
  const threads = o.threads ?? availableParallelism();
  const dataset = o.dataset;
  checkInputFolder(data, '--data');
  const inMemory = (dataset ?? detectKind(data, info.metadata.dataset)) !== 'imagenet';
  const starting = InferenceWorker.start({ modelPath: o.model, threads, spinning: inMemory });
  starting.ready.catch(() => undefined); // handled below; this only keeps a failure from counting as unhandled meanwhile
  const request = (classes: number): Promise<LabelledSet> => openLabelledSet({ data, dataset, split: o.split ?? 'test', labels: info.labels, classes }, info.metadata.dataset);
  let worker: InferenceWorker | undefined;
  try {
    // With the class count in the metadata the data is opened while the worker loads the model, and a wrong
    // request is refused without waiting for the model.
    const stated = statedClasses(info);
    const early = stated === undefined ? undefined : await request(stated);
    worker = await starting.ready.catch((e: Error) => {
      throw new EvalError(e.message);
    });
    const sig = worker.signature;
    const classes = classCount(info, sig.outputShape);
    const inC = sig.inputShape[1];
    if (typeof inC === 'number' && inC !== channelsOf(pre))
      throw new EvalError(`${o.model}: the model takes ${inC}-channel input but its preprocessing says ${pre.channelOrder} (${channelsOf(pre)} channel${channelsOf(pre) > 1 ? 's' : ''})`);
    const set = early && stated === classes ? early : await request(classes);
    const reported = reportedAccuracy(info, pre);
    const report = await runEvaluation(worker, set, protocol, classes, batch, spread(set.length, o.limit), o.onProgress, started);
    return {
      ...report,
      model: { path: o.model, name: info.name, architecture: info.architecture, weights: info.weights, precision: info.precision ?? 'float32', ...(info.quantization ? { quantization: info.quantization } : {}) },
      data: { path: set.path, format: set.format, split: set.split, description: set.description, ...(set.match ? { matchedBy: set.match.by } : {}), size: set.length },
      protocol: { resize: pre.resize, crop: pre.crop, crops: protocol.tenCrop ? 10 : 1, interpolation: pre.interpolation, channelOrder: pre.channelOrder, from, text: describeProtocol(pre, protocol.tenCrop) },
      where: (i) => set.where(i),
      labels: info.labels.length > 0 ? info.labels : Array.from({ length: classes }, (_, i) => `class ${i}`),
      notes: [
        ...set.notes,
        ...(info.randomWeights ? [`the model's weights are ${info.weights}: expect chance accuracy`] : []),
        // An int8 model keeps its float model's `weights` text, and with it the float model's figure.
        ...(info.precision === 'int8' && reported?.source.startsWith("metadata 'weights'") ? ["the reported figure is the float model's (its 'weights' metadata), measured before quantisation"] : []),
      ],
      ...(reported ? { reported } : {}),
    };
  } finally {
    await (worker ? worker.close() : starting.abandon());
  }
}

type Measured = Pick<EvalReport, 'classes' | 'images' | 'correct1' | 'correct5' | 'top1' | 'top5' | 'skipped' | 'predictions' | 'confusion' | 'seconds' | 'loopSeconds' | 'imagesPerSecond'>;

async function runEvaluation(worker: InferenceWorker, set: LabelledSet, protocol: Protocol, classes: number, batch: number, order: Int32Array, onProgress: EvalOptions['onProgress'], started: number): Promise<Measured> {
  const loopStarted = performance.now();
  const views = viewsPerImage(protocol);
  const per = viewSize(protocol);
  const { crop } = protocol.pre;
  const dims = [channelsOf(protocol.pre), crop, crop];
  const predictions = new Int32Array(set.length).fill(-1);
  const confusion = new Int32Array(classes * classes);
  const skipped: Skipped[] = [...set.ignored];
  let images = 0;
  let correct1 = 0;
  let correct5 = 0;
  // Decoding is libvips' work on libuv's threads; a few files in flight keep them busy.
  const decoders = set.format === 'folder' ? Math.max(4, 2 * availableParallelism()) : 1;

  const prepare = async (from: number): Promise<{ items: number[]; data: Float32Array }> => {
    const n = Math.min(batch, order.length - from);
    const data = new Float32Array(n * views * per);
    const ok = new Array<boolean>(n).fill(false);
    await pool(n, decoders, async (k) => {
      const i = order[from + k];
      const src = await set.read(i);
      if ('error' in src) {
        skipped.push({ file: set.where(i), reason: src.error });
        return;
      }
      try {
        await viewsOf(src, protocol, data, k * views * per);
        ok[k] = true;
      } catch (e) {
        if (!(e instanceof ServeError)) throw e;
        skipped.push({ file: set.where(i), reason: e.message });
      }
    });
    // Images that failed leave a gap: close it so the batch holds only real inputs.
    const items: number[] = [];
    for (let k = 0; k < n; k++) {
      if (!ok[k]) continue;
      if (items.length !== k) data.copyWithin(items.length * views * per, k * views * per, (k + 1) * views * per);
      items.push(order[from + k]);
    }
    return { items, data: data.subarray(0, items.length * views * per) };
  };

  const score = (items: number[], scores: Float32Array, outDims: number[]): void => {
    if (outDims.length !== 2 || outDims[0] !== items.length * views || outDims[1] !== classes)
      throw new Error(`the model returned scores of shape [${outDims.join(', ')}], expected [${items.length * views}, ${classes}]`);
    items.forEach((i, k) => {
      const row = combine(scores, k * views * classes, views, classes);
      const label = set.label(i);
      const rank = rankOf(row, label);
      const top = argmax(row);
      predictions[i] = top;
      confusion[label * classes + top]++;
      if (rank === 0) correct1++;
      if (rank < 5) correct5++;
      images++;
    });
  };

  let inFlight: Promise<void> | undefined;
  try {
    for (let from = 0; from < order.length; from += batch) {
      const { items, data } = await prepare(from);
      const done = Math.min(from + batch, order.length);
      const run = (items.length > 0 ? worker.run(data, [items.length * views, ...dims]).then((r) => score(items, r.scores, r.dims)) : Promise.resolve()).then(() =>
        onProgress?.({ done, total: order.length, correct1, skipped: skipped.length - set.ignored.length, seconds: (performance.now() - started) / 1000 }),
      );
      // One batch running and one queued behind it: the worker never waits for this thread.
      if (inFlight) await inFlight;
      inFlight = run;
    }
    await inFlight;
  } catch (e) {
    await inFlight?.catch(() => undefined);
    throw e;
  }
  if (images === 0) throw new Error(`no image could be evaluated: all ${order.length} failed to read or decode (first: ${skipped[set.ignored.length]?.file ?? '?'}: ${skipped[set.ignored.length]?.reason ?? '?'})`);
  const now = performance.now();
  const seconds = (now - started) / 1000;
  return { classes, images, correct1, correct5, top1: correct1 / images, top5: correct5 / images, skipped, predictions, confusion, seconds, loopSeconds: (now - loopStarted) / 1000, imagesPerSecond: images / seconds };
}

/** Per-class accuracy and the most frequent confusions, from a report's confusion matrix. */
export function perClass(r: Pick<EvalReport, 'classes' | 'labels' | 'confusion'>, pairs = 10): { classes: { index: number; label: string; images: number; top1: number | null }[]; confused: { label: number; predicted: number; count: number; share: number }[] } {
  const n = r.classes;
  const classes = Array.from({ length: n }, (_, c) => {
    let total = 0;
    for (let j = 0; j < n; j++) total += r.confusion[c * n + j];
    return { index: c, label: r.labels[c], images: total, top1: total > 0 ? r.confusion[c * n + c] / total : null };
  });
  const confused: { label: number; predicted: number; count: number; share: number }[] = [];
  for (let c = 0; c < n; c++)
    for (let j = 0; j < n; j++) {
      const count = r.confusion[c * n + j];
      if (c !== j && count > 0) confused.push({ label: c, predicted: j, count, share: count / classes[c].images });
    }
  confused.sort((a, b) => b.count - a.count || a.label - b.label || a.predicted - b.predicted);
  return { classes: classes.filter((c) => c.images > 0), confused: confused.slice(0, pairs) };
}
