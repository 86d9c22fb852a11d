// The training loop: runs the training-step graph over batches from the data worker, with the paper's schedule,
// periodic evaluation through the inference graph, JSON-lines logs, curves, and atomic checkpoints to resume from.

import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import * as ort from 'onnxruntime-node';
import { writeFileAtomic } from '../export/atomic.js';
import { foldBatchNorms } from '../export/fold.js';
import { docString, modelMetadata, perPixelPreprocessing } from '../export/metadata.js';
import { encodeOnnx, writeOnnx } from '../export/onnx.js';
import { CheckpointError } from '../export/safetensors.js';
import { NEXT_SUFFIX, type SgdOptions, buildTrainingStep } from '../export/training.js';
import type { Graph } from '../graph/graph.js';
import { floatTensor } from '../graph/types.js';
import { ConfigError, type ResNetConfig, describe } from '../models/config.js';
import { datasetPreprocessing } from '../models/labels.js';
import { buildResNet } from '../models/preact.js';
import { packageVersion } from '../util/paths.js';
import { type ExecutionProvider, type Placement, createProviderSession, describePlacement } from '../util/providers.js';
import { type Augmentation, type ColourAugmentation, type Normalisation, NORMALISE_MODES, type NormaliseMode, colourOf, defaultAugmentation, perPixelNormalisation, withColour } from './augment.js';
import { type Checkpoint, type FieldDifference, MEAN_IMAGE, type RunSettings, architectureFields, describeDifferences, differences, loadCheckpoint, parseRecipe, recipeFields, saveCheckpoint } from './checkpoint.js';
import { type DatasetSource, isInMemory, openDataset, pixelMean } from './datasets.js';
import { type Batch, BatchLoader } from './loader.js';
import { type Marker, curvesHtml } from './plot.js';
import { CHECKPOINT_FILE, CURVES_FILE, LOG_FILE, type LogEntry, MODEL_FILE, checkRunFolder, clearRun, cutLog } from './run-folder.js';
import { type Schedule, lrAt, scheduleProblems } from './schedule.js';

export type { ExecutionProvider } from '../util/providers.js';

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
  /**
   * Continue from this checkpoint. `cfg`, the recipe (schedule but its length, SGD, dataset, training subset,
   * colour, normalisation), `seed` and `batch` must be the checkpoint's: each that differs is named in the error.
   * `schedule.iterations` may exceed the run's (extending it). log.jsonl of the checkpoint's folder is cut back to
   * the checkpoint's iteration and written to `out` (normally that folder; another must be new or empty).
   */
  resume?: string;
  /** Start over in an `out` that holds a run, replacing its files (nothing else there); without it such a folder is refused. */
  force?: boolean;
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
  /** Where the step runs: onnxruntime's CPU, CUDA or WebGPU provider; a GPU one that cannot start is refused. */
  ep: ExecutionProvider;
  threads?: number;
  /** GPU providers: where onnxruntime ran each node of the step, and a line saying it, once before the first step. */
  onPlacement?: (placement: Placement, line: string) => void;
  plot: boolean;
  /** Called after every logged step and evaluation (the CLI draws its progress bar from it). */
  onEvent?: (e: TrainEvent) => void;
}

/** What the loop reports (and logs, one JSON line each); numbers are rounded as logged. */
export type TrainEvent =
  | { type: 'train'; iteration: number; epoch: number; loss: number; accuracy: number; lr: number; imagesPerSecond: number; elapsedSeconds: number }
  | { type: 'eval'; iteration: number; top1Error: number; top5Error: number | null; samples: number; seconds: number }
  | { type: 'checkpoint'; iteration: number; path: string }
  /** A resumed run: `dropped` lines of log.jsonl past the checkpoint (or cut short by a kill) were removed. */
  | { type: 'resume'; iteration: number; iterations: number; checkpoint: string; dropped: number };

export interface TrainResult {
  /** The iteration the run has reached (its total). */
  iterations: number;
  /** Where this call started: 0, or the checkpoint's iteration on resume. */
  startIteration: number;
  lastEval: Extract<TrainEvent, { type: 'eval' }> | null;
  model: string;
  checkpoint: string;
  log: string;
  /** curves.html, unless `plot` is off. */
  curves?: string;
  seconds: number;
}

/** `x` to `digits` significant digits, as logged (loss 0.346512, not 0.34651193022727966). */
const sig = (x: number, digits: number): number => Number(x.toPrecision(digits));
/** `x` to `decimals` decimals, as logged (accuracy 87.5, images/s 312.4). */
const dec = (x: number, decimals: number): number => Number(x.toFixed(decimals));

function sessionOptions(threads: number | undefined): ort.InferenceSession.SessionOptions {
  return { ...(threads ? { intraOpNumThreads: threads } : {}), graphOptimizationLevel: 'all' };
}

/** A session on `o.ep`; a GPU provider that cannot start is refused (ProviderError, exit 1), never replaced by the CPU. */
async function createSession(bytes: Uint8Array, ep: ExecutionProvider, threads: number | undefined): Promise<ort.InferenceSession> {
  return (await createProviderSession(bytes, ep, sessionOptions(threads))).session;
}

/**
 * The training step's session. On a GPU provider one step is run on zeros first (its outputs are dropped, the
 * state is untouched) to learn from onnxruntime's profile where each node ran, which `onPlacement` is told.
 */
async function createStepSession(bytes: Uint8Array, o: TrainOptions, shape: readonly number[], feeds: Record<string, ort.Tensor>): Promise<ort.InferenceSession> {
  const { session, placement } = await createProviderSession(bytes, o.ep, sessionOptions(o.threads), o.ep !== 'cpu');
  if (!placement) return session;
  try {
    const [batch] = shape;
    await session.run({
      ...feeds,
      input: new ort.Tensor('float32', new Float32Array(shape.reduce((a, d) => a * d, 1)), [...shape]),
      labels: new ort.Tensor('int64', new BigInt64Array(batch), [batch]),
      lr: new ort.Tensor('float32', Float32Array.of(0), []),
    });
    const p = placement();
    o.onPlacement?.(p, describePlacement(p, o.ep));
  } catch (e) {
    await session.release();
    throw e;
  }
  return session;
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
    top1Error: dec(100 * (1 - top1 / seen), 4),
    top5Error: cfg.classes > 5 ? dec(100 * (1 - top5 / seen), 4) : null,
    samples: seen,
    seconds: dec((performance.now() - started) / 1000, 2),
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

/** Numbers no run can use (a rate <= 0 trains by gradient ascent or not at all): refused before any work. */
function optionProblems(o: TrainOptions): string[] {
  const p = scheduleProblems(o.schedule);
  const int = (name: string, v: number, min: number): void => {
    if (!Number.isSafeInteger(v) || v < min) p.push(`${name} must be an integer >= ${min}, got ${v}`);
  };
  int('--batch', o.batch, 1);
  int('--seed', o.seed, 0);
  int('--eval-every', o.evalEvery, 0);
  int('--log-every', o.logEvery, 1);
  int('--checkpoint-every', o.checkpointEvery, 0);
  if (!(o.sgd.momentum >= 0 && o.sgd.momentum < 1)) p.push(`--momentum must be a number in [0, 1), got ${o.sgd.momentum}`);
  if (!(o.sgd.weightDecay >= 0) || !Number.isFinite(o.sgd.weightDecay)) p.push(`--weight-decay must be a number >= 0, got ${o.sgd.weightDecay}`);
  if (o.sgd.nesterov && o.sgd.momentum === 0) p.push('--nesterov needs a --momentum above 0 (Nesterov momentum with none is plain SGD)');
  return p;
}

/** Each field of the run that differs from the checkpoint's, named by its flag, with both values. */
function resumeDifferences(o: TrainOptions, recipe: string, ck: Checkpoint): FieldDifference[] {
  const d = differences(architectureFields(o.cfg), architectureFields(ck.cfg));
  const given = parseRecipe(recipe);
  const stored = parseRecipe(ck.run.recipe);
  const named = given && stored ? differences(recipeFields(given, o.seed, o.batch), recipeFields(stored, ck.run.seed, ck.run.batch)) : [];
  for (const x of named) if (!d.some((y) => y.field === x.field)) d.push(x);
  if (named.length === 0) {
    // A recipe this version does not know field by field, or a difference no flag names: compared whole.
    if (recipe !== ck.run.recipe) d.push({ field: 'recipe', given: recipe, checkpoint: ck.run.recipe });
    if (o.seed !== ck.run.seed) d.push({ field: '--seed', given: String(o.seed), checkpoint: String(ck.run.seed) });
    if (o.batch !== ck.run.batch) d.push({ field: '--batch', given: String(o.batch), checkpoint: String(ck.run.batch) });
  }
  return d;
}

export async function train(o: TrainOptions): Promise<TrainResult> {
  const problems = optionProblems(o);
  if (problems.length) throw new ConfigError(problems.join('; '));
  const normalise = o.normalise ?? 'per-channel';
  if (!NORMALISE_MODES.includes(normalise)) throw new Error(`normalise must be ${NORMALISE_MODES.join(' or ')}, got '${String(normalise)}'`);
  const augmentation = withColour(defaultAugmentation(o.data.kind, 'train'), o.colour);
  const recipe = recipeOf(o, augmentation, normalise);
  let cfg = o.cfg;
  let startIteration = 0;
  let resumed: Map<string, Float32Array> | undefined;
  let meanImage: Float32Array | undefined;
  let kept: ReturnType<typeof cutLog> | undefined;
  if (o.resume) {
    if (o.force) throw new ConfigError('resume and force conflict: resuming continues the run, force starts it over');
    const ck = loadCheckpoint(o.resume);
    const diffs = resumeDifferences(o, recipe, ck);
    if (diffs.length)
      throw new CheckpointError(`cannot resume ${o.resume}, it was made with other values: ${describeDifferences(diffs)}. Leave these as the checkpoint has them, or start a new run`);
    if (o.schedule.iterations <= ck.run.iteration)
      throw new ConfigError(`${o.resume} is at iteration ${ck.run.iteration} and the run is set to ${o.schedule.iterations} iterations: nothing to train (more iterations extend it)`);
    cfg = ck.cfg;
    startIteration = ck.run.iteration;
    const from = dirname(o.resume);
    // Continuing elsewhere starts a new folder with the run's history; the checkpoint's own folder is left as it is.
    if (resolve(from) !== resolve(o.out)) checkRunFolder(o.out, false, o.out, from);
    const oldLog = join(from, LOG_FILE);
    kept = cutLog(existsSync(oldLog) ? readFileSync(oldLog, 'utf8') : '', startIteration);
    resumed = ck.tensors;
    // The stored mean image, not a recomputation: the run goes on with exactly the input it started with.
    if (normalise === 'per-pixel') {
      meanImage = ck.tensors.get(MEAN_IMAGE);
      if (!meanImage) throw new Error(`--resume ${o.resume}: the checkpoint of a per-pixel run has no '${MEAN_IMAGE}' tensor`);
    }
  } else checkRunFolder(o.out, o.force ?? false);
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
  const feeds: Record<string, ort.Tensor> = {};
  for (const [name, v] of values) feeds[name] = new ort.Tensor('float32', v, [...dims.get(name)!]);
  const session = await createStepSession(encodeOnnx(step.graph), o, [o.batch, channels, height, width], feeds);

  // Everything that can refuse has run: only now is a replaced run's folder cleared, or a resumed run's log cut.
  mkdirSync(o.out, { recursive: true });
  if (!o.resume && o.force) clearRun(o.out);
  const logPath = join(o.out, LOG_FILE);
  const ckPath = join(o.out, CHECKPOINT_FILE);
  const curvesPath = join(o.out, CURVES_FILE);
  const log = (e: object): void => appendFileSync(logPath, `${JSON.stringify({ ...e, time: new Date().toISOString() })}\n`);
  const lossCurve: [number, number][] = [];
  const trainErr: [number, number][] = [];
  const testErr: [number, number][] = [];
  const markers: Marker[] = [];
  const plotEntry = (e: LogEntry): void => {
    if (e.type === 'train' && typeof e.loss === 'number' && typeof e.accuracy === 'number') {
      lossCurve.push([e.iteration, e.loss]);
      trainErr.push([e.iteration, 100 - e.accuracy]);
    } else if (e.type === 'eval' && typeof e.top1Error === 'number') testErr.push([e.iteration, e.top1Error]);
    else if (e.type === 'resume') markers.push({ x: e.iteration, label: `resumed at ${e.iteration}` });
  };
  if (kept) {
    // The log as it stood at the checkpoint, then where this process takes over: curves cover the whole run.
    const text = kept.lines.map((l) => `${l}\n`).join('');
    writeFileAtomic(logPath, (put) => put(Buffer.from(text, 'utf8')));
    const e = { type: 'resume' as const, iteration: startIteration, iterations: o.schedule.iterations, checkpoint: o.resume!, dropped: kept.dropped };
    log(e);
    for (const k of kept.entries) plotEntry(k);
    plotEntry(e);
    o.onEvent?.(e);
  }
  const settings: RunSettings = {
    iterations: o.schedule.iterations,
    data: resolve(o.data.dir),
    evalEvery: o.evalEvery,
    logEvery: o.logEvery,
    checkpointEvery: o.checkpointEvery,
    testLimit: o.testLimit ?? null,
  };
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
  // What the weights are, for the checkpoint's and the model's `weights` metadata: with the test error measured at
  // that very iteration, when there is one (evaluations run before the checkpoint of their iteration).
  const status = (iteration: number): string => {
    const e = lastEval && lastEval.iteration === iteration ? lastEval : null;
    return `trained: ${describe(cfg)} on ${o.data.kind}, ${iteration} iterations, batch ${o.batch}${e ? `, test top-1 error ${e.top1Error.toFixed(2)}%` : ''}`;
  };
  const checkpoint = (iteration: number): void => {
    const state = currentValues();
    if (meanImage) state.set(MEAN_IMAGE, meanImage);
    saveCheckpoint(ckPath, cfg, { iteration, seed: o.seed, batch: o.batch, recipe, settings }, state, dims, status(iteration));
    log({ type: 'checkpoint', iteration, path: ckPath });
    o.onEvent?.({ type: 'checkpoint', iteration, path: ckPath });
  };
  const runEval = async (iteration: number): Promise<void> => {
    lastEval = await evaluate(cfg, currentValues(), o, iteration, normalisation);
    plotEntry(lastEval);
    log(lastEval);
    o.onEvent?.(lastEval);
  };
  const writePlot = (): void => {
    if (!o.plot) return;
    const html = curvesHtml(
      `${describe(cfg)} on ${o.data.kind}`,
      [{ label: 'training loss', colour: '#1f77b4', points: lossCurve }],
      [
        { label: 'training error (running)', colour: '#ff7f0e', points: trainErr },
        { label: 'test error', colour: '#d62728', points: testErr },
      ],
      markers,
    );
    writeFileAtomic(curvesPath, (put) => put(Buffer.from(html, 'utf8')));
  };

  let iteration = startIteration;
  // An evaluation due at the checkpoint's iteration that the dead process did not log (it died first) runs now.
  const due = (i: number): boolean => o.evalEvery > 0 && i % o.evalEvery === 0;
  try {
    if (kept && startIteration > 0 && due(startIteration) && !kept.entries.some((e) => e.type === 'eval' && e.iteration === startIteration)) {
      await runEval(startIteration);
      writePlot();
    }
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
          loss: sig(windowLoss / windowCount, 6),
          accuracy: dec((100 * windowCorrect) / (windowCount * o.batch), 4),
          lr,
          imagesPerSecond: dec((windowCount * o.batch) / ((now - windowStart) / 1000), 1),
          elapsedSeconds: dec((now - started) / 1000, 1),
        };
        log(e);
        o.onEvent?.(e);
        plotEntry(e);
        windowStart = now;
        windowLoss = windowCorrect = windowCount = 0;
      }
      const last = iteration === o.schedule.iterations;
      // Evaluation first, so that a checkpoint of the same iteration states the test error of its weights.
      if (due(iteration) && !last) {
        await runEval(iteration);
        writePlot();
      }
      if (o.checkpointEvery > 0 && iteration % o.checkpointEvery === 0 && !last) checkpoint(iteration);
    }
  } finally {
    await loader.close();
  }
  await session.release();
  await runEval(iteration);
  checkpoint(iteration);
  writePlot();

  // The trained network as an inference model, self-describing like any export.
  const modelPath = join(o.out, MODEL_FILE);
  const desc = { weights: status(iteration), folded: true, labels: loader.info.labels.length === cfg.classes ? loader.info.labels : undefined, preprocessing };
  writeOnnx(inferenceGraphWithValues(cfg, currentValues()), modelPath, { docString: docString(cfg, desc), metadata: modelMetadata(cfg, desc), producerVersion: packageVersion() });
  return {
    iterations: iteration,
    startIteration,
    lastEval: lastEval as Extract<TrainEvent, { type: 'eval' }> | null,
    model: modelPath,
    checkpoint: ckPath,
    log: logPath,
    ...(o.plot ? { curves: curvesPath } : {}),
    seconds: (performance.now() - started) / 1000,
  };
}
