// The training loop: runs the training-step graph over batches from the data worker, with the paper's schedule,
// periodic evaluation through the inference graph, JSON-lines logs, curves, and atomic checkpoints to resume from.

import { appendFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { foldBatchNorms } from '../export/fold.js';
import { docString, modelMetadata, perPixelPreprocessing } from '../export/metadata.js';
import { encodeOnnx, writeOnnx } from '../export/onnx.js';
import { NEXT_SUFFIX, type SgdOptions, buildTrainingStep } from '../export/training.js';
import type { Graph } from '../graph/graph.js';
import { floatTensor } from '../graph/types.js';
import { type ResNetConfig, describe } from '../models/config.js';
import { datasetPreprocessing } from '../models/labels.js';
import { buildResNet } from '../models/preact.js';
import { packageVersion } from '../util/paths.js';
import { type Augmentation, type ColourAugmentation, type Normalisation, NORMALISE_MODES, type NormaliseMode, colourOf, defaultAugmentation, perPixelNormalisation, withColour } from './augment.js';
import { MEAN_IMAGE, loadCheckpoint, saveCheckpoint } from './checkpoint.js';
import { type DatasetSource, isInMemory, openDataset, pixelMean } from './datasets.js';
import { type Batch, BatchLoader } from './loader.js';
import { curvesHtml } from './plot.js';
import { type Schedule, lrAt } from './schedule.js';

export type ExecutionProvider = 'cpu' | 'cuda' | 'webgpu';

export interface TrainOptions {
  cfg: ResNetConfig;
  data: DatasetSource;
  /** Output folder: log.jsonl, checkpoint.safetensors, model.onnx, curves.html. */
  out: string;
  batch: number;
  seed: number;
  schedule: Schedule;
  sgd: SgdOptions;
  /** Evaluate on the test split every this many iterations (and at the end); 0 = only at the end. */
  evalEvery: number;
  /** Log a training line every this many iterations. */
  logEvery: number;
  /** Write a checkpoint every this many iterations (and at the end); 0 = only at the end. */
  checkpointEvery: number;
  /** Continue from this checkpoint (its architecture and recipe are used). */
  resume?: string;
  /** Use only the first N training / test samples (short runs, tests). */
  trainLimit?: number;
  testLimit?: number;
  /**
   * The colour stage of ImageNet training; fields left out keep the recipe's (jitter 0.4 and lighting 0.1 for
   * ImageNet; nothing for CIFAR and MNIST, which refuse a colour stage that does anything).
   */
  colour?: Partial<ColourAugmentation>;
  /**
   * `per-channel` (default): the dataset's mean and std. `per-pixel`: the paper's CIFAR normalisation, the mean
   * image of the whole training split subtracted (datasets of one image size only); it is stored in the checkpoint.
   */
  normalise?: NormaliseMode;
  ep: ExecutionProvider;
  threads?: number;
  plot: boolean;
  /** Called after every logged step and evaluation (the CLI draws its progress bar from it). */
  onEvent?: (e: TrainEvent) => void;
}

export type TrainEvent =
  | { type: 'train'; iteration: number; epoch: number; loss: number; accuracy: number; lr: number; imagesPerSecond: number; elapsedSeconds: number }
  | { type: 'eval'; iteration: number; top1Error: number; top5Error: number | null; samples: number; seconds: number }
  | { type: 'checkpoint'; iteration: number; path: string };

export interface TrainResult {
  iterations: number;
  lastEval: Extract<TrainEvent, { type: 'eval' }> | null;
  model: string;
  checkpoint: string;
  seconds: number;
}

function sessionOptions(ep: ExecutionProvider, threads: number | undefined): ort.InferenceSession.SessionOptions {
  return { executionProviders: [ep], ...(threads ? { intraOpNumThreads: threads } : {}), graphOptimizationLevel: 'all' };
}

async function createSession(bytes: Uint8Array, ep: ExecutionProvider, threads: number | undefined): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(bytes, sessionOptions(ep, threads));
  } catch (e) {
    if (ep === 'cpu') throw e;
    throw new Error(`cannot start onnxruntime's ${ep} execution provider: ${(e as Error).message}. See the README's GPU section (CUDA needs libonnxruntime_providers_cuda.so beside onnxruntime-node's binary).`);
  }
}

/** The inference graph of `cfg` with the given parameter and running-statistic values, BatchNorm folded. */
export function inferenceGraphWithValues(cfg: ResNetConfig, values: ReadonlyMap<string, Float32Array>): Graph {
  const g = buildResNet(cfg);
  const initializers = g.initializers.map((i) => {
    if (i.role === 'constant') return i;
    const v = values.get(i.name);
    if (!v) throw new Error(`no value for ${i.name}`);
    return { ...i, data: floatTensor(i.data.dims, v) };
  });
  return foldBatchNorms({ ...g, initializers }).graph;
}

async function evaluate(cfg: ResNetConfig, values: ReadonlyMap<string, Float32Array>, o: TrainOptions, iteration: number, normalisation: Normalisation | undefined): Promise<Extract<TrainEvent, { type: 'eval' }>> {
  const started = performance.now();
  const session = await createSession(encodeOnnx(inferenceGraphWithValues(cfg, values)), o.ep, o.threads);
  const loader = await BatchLoader.open({ dataset: o.data, split: 'test', batch: o.batch, seed: o.seed, augment: 'test', normalisation, limit: o.testLimit });
  let top1 = 0;
  let top5 = 0;
  let seen = 0;
  try {
    for (let k = 0; k < loader.info.batchesPerEpoch; k++) {
      const b = await loader.next();
      const { channels: c, height: h, width: w } = loader.info;
      const input = new ort.Tensor('float32', b.input.subarray(0, b.count * c * h * w), [b.count, c, h, w]);
      const logits = (await session.run({ input })).logits.data as Float32Array;
      const classes = cfg.classes;
      for (let i = 0; i < b.count; i++) {
        const row = logits.subarray(i * classes, (i + 1) * classes);
        const label = Number(b.labels[i]);
        const target = row[label];
        let higher = 0;
        for (let j = 0; j < classes; j++) if (row[j] > target || (row[j] === target && j < label)) higher++;
        if (higher === 0) top1++;
        if (higher < 5) top5++;
      }
      seen += b.count;
    }
  } finally {
    await loader.close();
    await session.release();
  }
  return {
    type: 'eval',
    iteration,
    top1Error: 100 * (1 - top1 / seen),
    top5Error: cfg.classes > 5 ? 100 * (1 - top5 / seen) : null,
    samples: seen,
    seconds: (performance.now() - started) / 1000,
  };
}

function recipeOf(o: TrainOptions, augmentation: Augmentation, normalise: NormaliseMode): string {
  // The colour and normalisation keys appear only when in use, so checkpoints made before they existed still resume.
  const colour = colourOf(augmentation);
  return JSON.stringify({
    dataset: o.data.kind,
    schedule: { ...o.schedule, iterations: undefined },
    sgd: o.sgd,
    trainLimit: o.trainLimit ?? null,
    ...(colour ? { colour } : {}),
    ...(normalise === 'per-pixel' ? { normalise } : {}),
  });
}

/** The paper's per-pixel mean: the mean image of the whole training split (not only --train-limit's part). */
async function trainingMeanImage(data: DatasetSource): Promise<Float32Array> {
  const d = await openDataset(data, 'train');
  if (!isInMemory(d)) throw new Error(`per-pixel normalisation needs a dataset of one image size held in memory (CIFAR, MNIST); ${data.kind} images differ in size: normalise per channel`);
  return pixelMean(d);
}

export async function train(o: TrainOptions): Promise<TrainResult> {
  mkdirSync(o.out, { recursive: true });
  const normalise = o.normalise ?? 'per-channel';
  if (!NORMALISE_MODES.includes(normalise)) throw new Error(`normalise must be ${NORMALISE_MODES.join(' or ')}, got '${String(normalise)}'`);
  const augmentation = withColour(defaultAugmentation(o.data.kind, 'train'), o.colour);
  const recipe = recipeOf(o, augmentation, normalise);
  let cfg = o.cfg;
  let startIteration = 0;
  let resumed: Map<string, Float32Array> | undefined;
  let meanImage: Float32Array | undefined;
  if (o.resume) {
    const ck = loadCheckpoint(o.resume);
    if (ck.run.recipe !== recipe || ck.run.seed !== o.seed || ck.run.batch !== o.batch)
      throw new Error(`--resume ${o.resume}: the checkpoint was made with another recipe, seed or batch size (${ck.run.recipe}, seed ${ck.run.seed}, batch ${ck.run.batch}); resume with the same flags`);
    cfg = ck.cfg;
    startIteration = ck.run.iteration;
    resumed = ck.tensors;
    // The stored mean image, not a recomputation: the run goes on with exactly the input it started with.
    if (normalise === 'per-pixel') {
      meanImage = ck.tensors.get(MEAN_IMAGE);
      if (!meanImage) throw new Error(`--resume ${o.resume}: the checkpoint of a per-pixel run has no '${MEAN_IMAGE}' tensor`);
    }
  }
  if (normalise === 'per-pixel' && !meanImage) meanImage = await trainingMeanImage(o.data);
  const normalisation = meanImage ? perPixelNormalisation(meanImage, cfg.inChannels) : undefined;

  const loader = await BatchLoader.open({ dataset: o.data, split: 'train', batch: o.batch, seed: o.seed, augment: 'train', augmentation, normalisation, startIteration, limit: o.trainLimit });
  const { channels, height, width, classes } = loader.info;
  if (channels !== cfg.inChannels) throw new Error(`the dataset has ${channels}-channel images but the network takes ${cfg.inChannels}`);
  if (classes > cfg.classes) throw new Error(`the dataset has ${classes} classes but the network outputs ${cfg.classes}`);
  if (height !== width) throw new Error(`training crops must be square, the loader gives ${width}x${height}`);
  // What model.onnx will say it is fed; made now so that a mean image its metadata cannot state fails before training.
  const preprocessing = meanImage ? perPixelPreprocessing(datasetPreprocessing(cfg.dataset), meanImage, [channels, height, width]) : datasetPreprocessing(cfg.dataset);

  // On onnxruntime's CPU provider the step may use its faster BN spelling; the GPU providers need the portable one.
  const step = buildTrainingStep(cfg, { batch: o.batch, size: height, seed: o.seed, sgd: o.sgd, target: o.ep === 'cpu' ? 'onnxruntime-cpu' : 'any' });
  const dims = new Map<string, readonly number[]>(step.state.map((s) => [s.name, s.data.dims]));
  if (meanImage) dims.set(MEAN_IMAGE, [channels, height, width]);
  const values = new Map<string, Float32Array>();
  for (const s of step.state) {
    const v = resumed ? resumed.get(s.name) : (s.data.values() as Float32Array);
    if (!v) throw new Error(`--resume ${o.resume}: the checkpoint has no tensor '${s.name}'`);
    values.set(s.name, v);
  }
  const session = await createSession(encodeOnnx(step.graph), o.ep, o.threads);
  const feeds: Record<string, ort.Tensor> = {};
  for (const [name, v] of values) feeds[name] = new ort.Tensor('float32', v, [...dims.get(name)!]);

  const logPath = join(o.out, 'log.jsonl');
  const ckPath = join(o.out, 'checkpoint.safetensors');
  if (!o.resume && existsSync(logPath)) writeFileSync(logPath, '');
  const log = (e: object): void => appendFileSync(logPath, `${JSON.stringify({ ...e, time: new Date().toISOString() })}\n`);
  const lossCurve: [number, number][] = [];
  const trainErr: [number, number][] = [];
  const testErr: [number, number][] = [];
  const started = performance.now();
  let windowStart = performance.now();
  let windowLoss = 0;
  let windowCorrect = 0;
  let windowCount = 0;
  let lastEval: Extract<TrainEvent, { type: 'eval' }> | null = null;

  const currentValues = (): Map<string, Float32Array> => {
    const m = new Map<string, Float32Array>();
    for (const name of values.keys()) m.set(name, feeds[name].data as Float32Array);
    return m;
  };
  const checkpoint = (iteration: number): void => {
    const state = currentValues();
    if (meanImage) state.set(MEAN_IMAGE, meanImage);
    saveCheckpoint(ckPath, cfg, { iteration, seed: o.seed, batch: o.batch, recipe }, state, dims, `trained: ${o.data.kind}, ${iteration} iterations`);
    log({ type: 'checkpoint', iteration, path: ckPath });
    o.onEvent?.({ type: 'checkpoint', iteration, path: ckPath });
  };
  const runEval = async (iteration: number): Promise<void> => {
    lastEval = await evaluate(cfg, currentValues(), o, iteration, normalisation);
    testErr.push([iteration, lastEval.top1Error]);
    log(lastEval);
    o.onEvent?.(lastEval);
  };
  const writePlot = (): void => {
    if (!o.plot) return;
    writeFileSync(
      join(o.out, 'curves.html'),
      curvesHtml(`${describe(cfg)} on ${o.data.kind}`, [{ label: 'training loss', colour: '#1f77b4', points: lossCurve }], [
        { label: 'training error (running)', colour: '#ff7f0e', points: trainErr },
        { label: 'test error', colour: '#d62728', points: testErr },
      ]),
    );
  };

  let iteration = startIteration;
  try {
    while (iteration < o.schedule.iterations) {
      const batch: Batch = await loader.next();
      if (batch.iteration !== iteration) throw new Error(`internal error: loader gave iteration ${batch.iteration}, expected ${iteration}`);
      const lr = lrAt(o.schedule, iteration);
      feeds.input = new ort.Tensor('float32', batch.input, [o.batch, channels, height, width]);
      feeds.labels = new ort.Tensor('int64', batch.labels, [o.batch]);
      feeds.lr = new ort.Tensor('float32', Float32Array.of(lr), []);
      const out = await session.run(feeds);
      for (const name of values.keys()) feeds[name] = out[`${name}${NEXT_SUFFIX}`];
      const loss = (out.loss.data as Float32Array)[0];
      if (!Number.isFinite(loss)) throw new Error(`the loss became ${loss} at iteration ${iteration + 1} (lr ${lr}); lower the learning rate or add --warmup`);
      windowLoss += loss;
      windowCorrect += (out.correct.data as Float32Array)[0];
      windowCount += 1;
      iteration += 1;

      if (iteration % o.logEvery === 0 || iteration === o.schedule.iterations) {
        const now = performance.now();
        const e: TrainEvent = {
          type: 'train',
          iteration,
          epoch: batch.epoch,
          loss: windowLoss / windowCount,
          accuracy: (100 * windowCorrect) / (windowCount * o.batch),
          lr,
          imagesPerSecond: (windowCount * o.batch) / ((now - windowStart) / 1000),
          elapsedSeconds: (now - started) / 1000,
        };
        log(e);
        o.onEvent?.(e);
        lossCurve.push([iteration, e.loss]);
        trainErr.push([iteration, 100 - e.accuracy]);
        windowStart = now;
        windowLoss = windowCorrect = windowCount = 0;
      }
      const last = iteration === o.schedule.iterations;
      if (o.checkpointEvery > 0 && iteration % o.checkpointEvery === 0 && !last) checkpoint(iteration);
      if (o.evalEvery > 0 && iteration % o.evalEvery === 0 && !last) {
        await runEval(iteration);
        writePlot();
      }
    }
  } finally {
    await loader.close();
  }
  await session.release();
  checkpoint(iteration);
  await runEval(iteration);
  writePlot();

  // The trained network as an inference model, self-describing like any export.
  const eval1 = lastEval as Extract<TrainEvent, { type: 'eval' }> | null;
  const status = `trained: ${describe(cfg)} on ${o.data.kind}, ${iteration} iterations, batch ${o.batch}${eval1 ? `, test top-1 error ${eval1.top1Error.toFixed(2)}%` : ''}`;
  const modelPath = join(o.out, 'model.onnx');
  const desc = { weights: status, folded: true, labels: loader.info.labels.length === cfg.classes ? loader.info.labels : undefined, preprocessing };
  writeOnnx(inferenceGraphWithValues(cfg, currentValues()), modelPath, { docString: docString(cfg, desc), metadata: modelMetadata(cfg, desc), producerVersion: packageVersion() });
  return { iterations: iteration, lastEval: eval1, model: modelPath, checkpoint: ckPath, seconds: (performance.now() - started) / 1000 };
}
